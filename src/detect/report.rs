//! `nhiwatch baselines show`: what nhiwatch believes about one identity, as JSON or text. It
//! reads the engine (specifications, privilege ranks, peer groups) as well as the baselines,
//! so it lives above both, in detection.

use serde::Serialize;

use super::Engine;
use super::privileges::Rank;
use crate::baseline::{Day, Tier, hash_identity};
use crate::time::Timestamp;

/// One learned value.
#[derive(Debug, Serialize)]
pub struct Value {
    /// What kind of value.
    pub kind: String,
    /// The value.
    pub value: String,
    /// Times seen.
    pub count: u16,
    /// First day seen.
    pub first_seen: String,
    /// Last day seen.
    pub last_seen: String,
}

/// What nhiwatch believes about an identity.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The identity.
    pub identity: String,
    /// First event.
    pub first_seen: Timestamp,
    /// Latest event.
    pub last_seen: Timestamp,
    /// Mints and uses learned.
    pub events: u32,
    /// Mints learned.
    pub mints: u32,
    /// Uses learned.
    pub uses: u32,
    /// Refused operations seen.
    pub failures: u32,
    /// Detectors whose learning period it passed.
    pub armed: Vec<&'static str>,
    /// Time zone of its schedule.
    pub timezone: String,
    /// When it mints.
    pub usual_hours: String,
    /// Busiest times of week (local): `weekday 09h` with decayed counts.
    pub busiest: Vec<(String, f32)>,
    /// Stable runner attributes.
    pub runners: Vec<Value>,
    /// Networks.
    pub networks: Vec<Value>,
    /// Events that carried an address.
    pub network_observations: u32,
    /// Scopes held, with rank.
    pub scopes: Vec<Value>,
    /// Highest rank held.
    pub highest_rank: &'static str,
    /// Environments minted for.
    pub environments: Vec<Value>,
    /// Distinct (minted-for, presented-in) environment pairs its credentials crossed.
    pub environment_crossings: usize,
    /// Longest credential lifetime, seconds.
    pub longest_ttl: u32,
    /// Mints for production, and of those from unprotected refs.
    pub production_mints: (u32, u32),
    /// Credentials it minted that are still bound.
    pub live_credentials: usize,
    /// The peer group it is judged with.
    pub peer_group: String,
    /// Members of that group, itself included.
    pub peer_group_size: u32,
    /// Its candidate groups with their members, finest first (the finest with enough
    /// members is used).
    pub peer_candidates: Vec<(String, u32)>,
    /// The environments it mints for, as its peer group counts it.
    pub environment_combination: String,
    /// When it mints for production, once it mints for something else too.
    pub production_hours: Option<String>,
}

fn day_text(d: Day) -> String {
    Timestamp::from_micros((946_684_800 + i64::from(d) * 86_400) * 1_000_000).to_rfc3339()[..10]
        .to_string()
}

/// The report for an identity, or `None` when it has no baseline.
pub fn identity(engine: &Engine, identity: &str) -> Option<Report> {
    let st = &engine.state;
    if !st.identities.contains_key(identity)
        && let Ok(Some(mut b)) = st.reload(identity)
    {
        // Spilled: back in memory for the report.
        b.peers = engine.peer_rules.candidates(identity).0;
        st.identities.insert(identity.into(), b);
    }
    let b = st.identities.get(identity)?;
    Some(of(engine, identity, &b))
}

/// The reports of every identity, the ones in memory first, then the spilled ones (their
/// value texts interned again for the report), each part sorted by identity.
pub fn all(engine: &Engine) -> Vec<Report> {
    let st = &engine.state;
    let mut keys: Vec<String> = st.identities.iter().map(|e| e.key().to_string()).collect();
    keys.sort_unstable();
    let mut out: Vec<Report> = keys.iter().filter_map(|k| identity(engine, k)).collect();
    let mut spilled: Vec<(String, crate::baseline::IdentityBaseline)> = Vec::new();
    st.spill().for_each(|k, b, texts| {
        for (h, t) in texts {
            st.interner.intern(h, &t);
        }
        let mut b = b;
        b.peers = engine.peer_rules.candidates(&k).0;
        spilled.push((k, b));
    });
    spilled.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    out.extend(spilled.iter().map(|(k, b)| of(engine, k, b)));
    out
}

/// The report for an identity's baseline.
pub fn of(engine: &Engine, identity: &str, b: &crate::baseline::IdentityBaseline) -> Report {
    let st = &engine.state;
    let text = |h: u64| st.interner.text(h);
    let values = |set: &crate::baseline::ValueSet, kind: &dyn Fn(u8) -> String| -> Vec<Value> {
        let mut v: Vec<Value> = set
            .entries()
            .iter()
            .map(|e| Value {
                kind: kind(e.aux),
                value: text(e.hash),
                count: e.count,
                first_seen: day_text(e.first),
                last_seen: day_text(e.last),
            })
            .collect();
        v.sort_by(|a, b| {
            b.last_seen
                .cmp(&a.last_seen)
                .then(b.count.cmp(&a.count))
                .then(a.value.cmp(&b.value))
        });
        v
    };
    let class = |aux: u8| super::Class::runner_label(aux).to_string();
    let ((peer_group, peer_group_size), peer_candidates) = engine.peer_groups(b);
    let busiest = b
        .tow
        .busiest(6)
        .into_iter()
        .map(|(bin, c)| {
            let day = if bin / 24 == 0 { "weekday" } else { "weekend" };
            (format!("{day} {:02}h", bin % 24), (c * 10.0).round() / 10.0)
        })
        .collect();
    Report {
        identity: identity.to_string(),
        first_seen: Timestamp::from_micros(b.first_seen * 1_000_000),
        last_seen: Timestamp::from_micros(b.last_seen * 1_000_000),
        events: b.events,
        mints: b.mints,
        uses: b.uses,
        failures: b.failures,
        armed: engine.armed(b),
        timezone: engine.zone_of(identity).to_string(),
        usual_hours: b.tow.describe(),
        busiest,
        runners: values(&b.attrs, &class),
        networks: values(&b.nets, &|_| "network".to_string()),
        network_observations: b.net_obs,
        scopes: values(&b.scopes, &|aux| {
            format!("scope ({})", Rank::from_u8(aux).as_str())
        }),
        highest_rank: Rank::from_u8(b.max_rank(0)).as_str(),
        environments: values(&b.envs, &|aux| {
            match Tier::from_u8(aux) {
                Tier::Production => "environment (production tier)",
                Tier::Staging => "environment (staging tier)",
                Tier::Other => "environment",
            }
            .to_string()
        }),
        environment_crossings: b.env_pairs.entries().len(),
        longest_ttl: b.ttl_max,
        production_mints: (b.prod_mints, b.prod_unprotected),
        live_credentials: st.credentials.count_for(hash_identity(identity)),
        peer_group,
        peer_group_size,
        peer_candidates,
        environment_combination: crate::baseline::peers::mask::describe(b.env_mask),
        production_hours: b.prod_tow.as_ref().map(|t| t.describe()),
    }
}

/// The report as text.
pub fn render(r: &Report) -> String {
    let mut s = format!(
        "{}\n  seen {} → {} ({} events: {} mints, {} uses; {} refused)\n  armed: {}\n  mints: {} ({})\n",
        r.identity,
        r.first_seen,
        r.last_seen,
        r.events,
        r.mints,
        r.uses,
        r.failures,
        if r.armed.is_empty() {
            "no detector yet (still learning)".to_string()
        } else {
            r.armed.join(", ")
        },
        r.usual_hours,
        r.timezone,
    );
    for (title, list) in [
        ("runners", &r.runners),
        ("networks", &r.networks),
        ("scopes", &r.scopes),
        ("environments", &r.environments),
    ] {
        s.push_str(&format!("  {title}:"));
        if list.is_empty() {
            s.push_str(" none\n");
            continue;
        }
        s.push('\n');
        for v in list {
            s.push_str(&format!(
                "    {:<34} {:<28} ×{:<5} {} → {}\n",
                v.value, v.kind, v.count, v.first_seen, v.last_seen
            ));
        }
    }
    s.push_str(&format!(
        "  highest scope rank: {}; longest lifetime: {} s; production mints: {} ({} from unprotected refs); environment crossings: {}; live credentials: {}\n",
        r.highest_rank, r.longest_ttl, r.production_mints.0, r.production_mints.1, r.environment_crossings, r.live_credentials
    ));
    if let Some(h) = &r.production_hours {
        s.push_str(&format!("  production mints: {h}\n"));
    }
    s.push_str(&format!(
        "  environments: {}\n  peers: {} ({} identities, itself included)\n",
        r.environment_combination, r.peer_group, r.peer_group_size
    ));
    let others: Vec<String> = r
        .peer_candidates
        .iter()
        .filter(|(n, _)| *n != r.peer_group)
        .map(|(n, k)| format!("{n} ({k})"))
        .collect();
    if !others.is_empty() {
        s.push_str(&format!(
            "  other candidate groups: {}\n",
            others.join(", ")
        ));
    }
    s
}
