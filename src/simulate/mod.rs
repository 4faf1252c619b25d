//! `nhiwatch simulate`: a synthetic organisation's credential traffic in the five real record
//! formats, with injected attacks and an answer key, to measure what the detectors catch and
//! what they cost in false alerts.
//!
//! `--profile` picks the organisation's archetype ([`Profile`]): `classic`, described below
//! and fixed for a seed, or one of seven others whose parameters are drawn from the seed
//! (see `profile.rs`): release trains that deploy to staging all week and promote to
//! production on a cadence, CI workflows that name no environment and build whenever people
//! push (weekends included), monorepos with dozens of workflows, self-hosted GitLab runner
//! fleets that grow during the run, pipelines that run tests on a nightly schedule beside
//! production deploys by day, Kubernetes accounts with projected tokens for several
//! audiences, Vault AppRoles with long-lived tokens and roles that name no environment, small
//! and large organisations, all in a time zone of their own.
//!
//! The `classic` organisation runs five kinds of service, each behaving the way its real
//! counterpart does:
//!
//! | service | identities | behaviour |
//! |---|---|---|
//! | GitHub deploy workflow | workflow (OIDC claims), repository (STS web identity), AWS role (API calls) | runs on weekday pushes in office hours (local time), on GitHub-hosted runners (a new address from a pool of cloud prefixes every job) or self-hosted ones; pulls artifacts from a shared account |
//! | GitHub nightly workflow | same three | a UTC cron with a job matrix, every night (so it moves an hour in local time at a DST change) |
//! | GitLab pipeline | pipeline (ID token), Vault JWT role (login, reads) | pushes in office hours, some with a nightly schedule; runner managers (self-hosted) or GitLab's SaaS runners |
//! | Vault AppRole | the role | logs in about hourly around the clock, reads its secrets every 30 minutes |
//! | Kubernetes workload | the service account | kubelets refresh each replica's token every 48 minutes; pods call the API every 30 minutes; pods move to new nodes (new names) daily |
//!
//! and the fleet changes the way real fleets do: the GitLab runner managers are replaced, the
//! self-hosted GitHub runners move to a new subnet, a Vault policy is added to every AppRole,
//! workloads start requesting tokens for a new audience, a daylight-saving change moves every
//! office-hours schedule against UTC, and some services are onboarded mid-run.
//!
//! Attacks of four kinds (sixteen variants in `classic`, twenty in the other profiles, see
//! [`Variant`]) are injected into services that have a history; every record an attack writes is listed in the answer key with its native
//! id (`--labels`), so `nhiwatch score` can compute recall and precision.
//!
//! Output is deterministic for a seed and sorted by time; nothing depends on the wall clock.

mod attacks;
mod emit;
mod hygiene;
mod org;
mod profile;
mod render;
mod schedule;

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};

use serde::Serialize;

use crate::decode::Format;
use crate::time::Timestamp;
use profile::Params;
pub use profile::Profile;
use render::*;

use attacks::*;
pub use attacks::{Change, KINDS, Variant};
pub use hygiene::HYGIENE_KINDS;

/// Every attack kind an answer key may hold: the four behavioural ones, then the hygiene
/// findings (`simulate --hygiene`).
pub const ALL_KINDS: [&str; 9] = [
    KINDS[0],
    KINDS[1],
    KINDS[2],
    KINDS[3],
    HYGIENE_KINDS[0],
    HYGIENE_KINDS[1],
    HYGIENE_KINDS[2],
    HYGIENE_KINDS[3],
    HYGIENE_KINDS[4],
];
use emit::*;
use org::*;
use schedule::*;

/// The default first day: Monday 2026-03-23, the week Europe changes to summer time.
pub const DEFAULT_START: &str = "2026-03-23T00:00:00Z";
/// The organisation's default time zone (office hours follow it, cron schedules follow UTC).
pub const DEFAULT_TIMEZONE: &str = "Europe/Berlin";

/// The AWS accounts of the simulated organisation and the environments they hold.
pub const AWS_ACCOUNTS: [(&str, &str); 4] = [
    ("111111111111", "production"),
    ("222222222222", "staging"),
    ("333333333333", "development"),
    ("444444444444", "shared-services"),
];

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Random seed: the same settings give byte-identical output.
    pub seed: u64,
    /// Approximate number of identities (services are added until it is reached).
    pub identities: u32,
    /// Number of days.
    pub days: u32,
    /// The first day (its UTC date is the organisation's first local date).
    pub start: Timestamp,
    /// The organisation's time zone (IANA name); `None` for the profile's own (drawn from
    /// the seed, `Europe/Berlin` for `classic`).
    pub timezone: Option<String>,
    /// The organisation's archetype.
    pub profile: Profile,
    /// Attacks to inject; `None` for one per 100 identity-days (at least 5).
    pub attacks: Option<u32>,
    /// Write only the records of this format (the organisation is the same).
    pub only: Option<Format>,
    /// Add the hygiene scenarios (see `hygiene.rs`): positives and hard negatives of the
    /// five hygiene findings, beside the organisation.
    pub hygiene: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            seed: 1,
            identities: 200,
            days: 14,
            start: Timestamp::parse(DEFAULT_START).unwrap_or(Timestamp::from_micros(0)),
            timezone: None,
            profile: Profile::Classic,
            attacks: None,
            only: None,
            hygiene: false,
        }
    }
}

/// The settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// Unknown time zone.
    #[error("unknown time zone {0:?}")]
    Zone(String),
    /// Out of range.
    #[error("{0}")]
    Range(&'static str),
}

/// What a simulation wrote.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// The organisation's archetype.
    pub profile: &'static str,
    /// Seed.
    pub seed: u64,
    /// First instant.
    pub start: String,
    /// Days simulated.
    pub days: u32,
    /// Time zone of office hours.
    pub timezone: String,
    /// Services.
    pub services: u32,
    /// Identities (distinct: services of one repository share its identity).
    pub identities: u32,
    /// Sum over identities of the days each existed.
    pub identity_days: u64,
    /// Records written.
    pub records: u64,
    /// Attacks injected.
    pub attacks: u32,
    /// Attacks that found no suitable service and were left out.
    pub attacks_skipped: u32,
    /// Attacks per kind, in [`ALL_KINDS`] order.
    pub attacks_by_kind: [u32; 9],
    /// Benign changes to single services (see [`Change`]).
    pub benign_changes: u32,
}

/// The hygiene records still to write, merged into the organisation's by time.
struct Extra {
    recs: Vec<hygiene::HRec>,
    next: usize,
    /// Attack numbers of the hygiene positives follow the organisation's.
    base: u16,
}

/// The answer-key line for one record an attack wrote.
#[derive(Clone, Debug, Serialize)]
struct LabelLine<'a> {
    r#type: &'static str,
    attack: u16,
    kind: &'static str,
    variant: &'static str,
    event_id: &'a str,
    identity: &'a str,
    time: String,
    source: &'static str,
    /// The variant's own detector is expected to alert on this record.
    expected: bool,
}

/// A simulated organisation.
#[derive(Debug)]
pub struct Simulation {
    settings: Settings,
    params: Params,
    tz: jiff::tz::TimeZone,
    /// UTC midnight of the first day.
    t0: i64,
    services: Vec<Service>,
    rollouts: Rollouts,
    /// GitLab runner managers registered during the run: (when, runner id).
    registrations: Vec<(i64, u32)>,
}

impl Simulation {
    /// Builds the organisation.
    pub fn new(mut settings: Settings) -> Result<Self, SettingsError> {
        if settings.days == 0 || settings.days > 3660 {
            return Err(SettingsError::Range("--days must be between 1 and 3660"));
        }
        if settings.hygiene && settings.days < 14 {
            return Err(SettingsError::Range(
                "--hygiene needs at least 14 days (42 for the dormant scenarios)",
            ));
        }
        if settings.identities == 0 || settings.identities > 10_000_000 {
            return Err(SettingsError::Range(
                "--identities must be between 1 and 10,000,000",
            ));
        }
        let params = Params::draw(settings.profile, settings.seed);
        let zone = settings
            .timezone
            .clone()
            .unwrap_or_else(|| params.timezone.to_string());
        let tz = jiff::tz::TimeZone::get(&zone).map_err(|_| SettingsError::Zone(zone.clone()))?;
        settings.timezone = Some(zone);
        let t0 = settings.start.as_unix_seconds().div_euclid(86_400) * 86_400;
        let days = settings.days;
        let services = if settings.profile == Profile::Classic {
            classic_services(&settings)
        } else {
            profile::services(&params, &settings, &tz, t0)
        };
        let mut sim = Simulation {
            tz,
            t0,
            services,
            rollouts: Rollouts {
                policy: i64::MAX,
                gitlab_runners: i64::MAX,
                subnet: i64::MAX,
                audience: i64::MAX,
            },
            registrations: Vec::new(),
            params,
            settings,
        };
        // Fleet changes happen after every service has a baseline.
        let at = |sim: &Simulation, frac: f64, secs: u32, weekday_only: bool| -> i64 {
            let mut d = ((f64::from(days) * frac) as u32).max(4);
            while weekday_only && weekday(sim.t0 + i64::from(d) * 86_400) >= 5 {
                d += 1;
            }
            if d >= days {
                i64::MAX
            } else {
                sim.local(d, secs)
            }
        };
        let [p, g, s, a] = sim.params.rollouts;
        let when = sim.params.rollout_at;
        let office = sim.params.office_start.saturating_sub(8) * 3600;
        let off = |on: bool, t: i64| if on { t } else { i64::MAX };
        sim.rollouts = Rollouts {
            policy: off(p, at(&sim, when[0], 10 * 3600 + office, false)),
            gitlab_runners: off(g, at(&sim, when[1], 9 * 3600 + office, true)),
            subnet: off(s, at(&sim, when[2], 9 * 3600 + office, true)),
            audience: off(a, at(&sim, when[3], 11 * 3600 + office, false)),
        };
        // Runner managers registered during the run, on weekday mornings.
        let mut rng = Rng::from(&[sim.settings.seed, 42]);
        for k in 0..sim.params.registrations {
            let frac = 0.3 + 0.5 * rng.unit();
            let secs = (9 + rng.below(6) as u32) * 3600 + office;
            let t = at(&sim, frac, secs, true);
            if t != i64::MAX {
                sim.registrations
                    .push((t, 100 + sim.params.runner_managers + k));
            }
        }
        // Benign changes: a night hotfix for one deploy workflow in twenty, a lasting change
        // for one service in thirty-three, per four weeks.
        let mut rng = Rng::from(&[sim.settings.seed, 12]);
        let scale = f64::from(days) / 28.0 * sim.params.changes;
        if days >= 7 {
            for i in 0..sim.services.len() {
                let s = &sim.services[i];
                let change = match s.kind {
                    Kind::Deploy if rng.chance(0.05 * scale) => Change::NightHotfix,
                    Kind::Deploy if s.hosted && rng.chance(0.03 * scale) => {
                        Change::MovedToSelfHosted
                    }
                    Kind::Gitlab if rng.chance(0.03 * scale) => Change::PolicyAdded,
                    Kind::AppRole if rng.chance(0.03 * scale) => Change::NewSubnet,
                    _ => continue,
                };
                let mut d = rng.range(u64::from(s.start_day + 5), u64::from(days - 1)) as u32;
                if d + 1 >= days {
                    continue;
                }
                while change != Change::NewSubnet
                    && weekday(sim.t0 + i64::from(d) * 86_400) >= 5
                    && d + 2 < days
                {
                    d += 1;
                }
                let secs = if change == Change::NightHotfix {
                    (rng.range(21 * 3600 + 1800, 25 * 3600 + 1800) % 86_400) as u32
                } else {
                    sim.office(&mut rng)
                };
                // After midnight belongs to the next day.
                let d = if change == Change::NightHotfix && secs < 12 * 3600 {
                    d + 1
                } else {
                    d
                };
                let t = sim.local(d, secs);
                sim.services[i].change = Some((change, t));
            }
        }
        Ok(sim)
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The organisation's time zone (given, or the profile's).
    pub fn timezone(&self) -> &str {
        self.settings
            .timezone
            .as_deref()
            .unwrap_or(DEFAULT_TIMEZONE)
    }

    /// The configuration a deployment in this organisation would have: its time zone and
    /// its AWS accounts by environment (`simulate --config-out`).
    pub fn config_toml(&self) -> String {
        let mut s = format!(
            "# The configuration of the organisation `nhiwatch simulate --profile {} --seed {}` writes:\n# its time zone (office hours follow it; schedules run in UTC) and its AWS accounts.\n\n[time]\ntimezone = \"{}\"\n\n[environments.aws_accounts]\n",
            self.settings.profile.name(),
            self.settings.seed,
            self.timezone()
        );
        for (account, env) in AWS_ACCOUNTS {
            s.push_str(&format!("\"{account}\" = \"{env}\"\n"));
        }
        s
    }

    fn identity_count(&self) -> (u32, u64) {
        let days = self.settings.days;
        let mut first: HashMap<String, u32> = HashMap::new();
        for s in &self.services {
            for name in s.identities() {
                let e = first.entry(name).or_insert(s.start_day);
                *e = (*e).min(s.start_day);
            }
        }
        let identity_days = first
            .values()
            .map(|d| u64::from(days - (*d).min(days)))
            .sum();
        (first.len() as u32, identity_days)
    }

    /// Writes the records (JSON lines, sorted by time) and, when asked, the answer key;
    /// stops after `limit` records when given.
    pub fn run(
        &self,
        out: &mut dyn Write,
        mut labels: Option<&mut dyn Write>,
        limit: Option<u64>,
    ) -> io::Result<Summary> {
        let limit = limit.unwrap_or(u64::MAX);
        let mut written = 0u64;
        let mut sink = |rec: &Rendered<'_>| -> io::Result<bool> {
            out.write_all(rec.line.as_bytes())?;
            out.write_all(b"\n")?;
            if let (Some(l), Some(label)) = (labels.as_deref_mut(), &rec.label) {
                serde_json::to_writer(&mut *l, label)?;
                l.write_all(b"\n")?;
            }
            written += 1;
            Ok(written < limit)
        };
        let summary = self.generate(&mut sink)?;
        {
            if let Some(l) = labels {
                #[derive(Serialize)]
                struct Line<'a> {
                    r#type: &'static str,
                    #[serde(flatten)]
                    summary: &'a Summary,
                }
                serde_json::to_writer(
                    &mut *l,
                    &Line {
                        r#type: "summary",
                        summary: &summary,
                    },
                )?;
                l.write_all(b"\n")?;
                l.flush()?;
            }
            out.flush()?;
            Ok(summary)
        }
    }

    /// The first `n` records (for benchmarks and tests).
    pub fn records(&self, n: usize) -> Vec<String> {
        let mut v = Vec::with_capacity(n.min(1 << 16));
        let _ = self.generate(&mut |rec: &Rendered<'_>| {
            v.push(rec.line.to_string());
            Ok(v.len() < n)
        });
        v
    }

    /// Plans day by day and hands each rendered record to `sink` in time order; `sink`
    /// returns false to stop.
    fn generate(
        &self,
        sink: &mut dyn FnMut(&Rendered<'_>) -> io::Result<bool>,
    ) -> io::Result<Summary> {
        let days = self.settings.days;
        let (attacks, skipped) = self.plan_attacks();
        let (identities, identity_days) = self.identity_count();
        let mut summary = Summary {
            seed: self.settings.seed,
            start: Timestamp::from_micros(self.t0 * 1_000_000).to_rfc3339(),
            days,
            timezone: self.timezone().to_string(),
            profile: self.settings.profile.name(),
            services: self.services.len() as u32,
            identities,
            identity_days,
            attacks: attacks.len() as u32,
            attacks_skipped: skipped,
            benign_changes: self
                .services
                .iter()
                .filter(|s| {
                    s.change
                        .is_some_and(|(_, t)| t < self.t0 + i64::from(days) * 86_400)
                })
                .count() as u32,
            ..Summary::default()
        };
        for a in &attacks {
            let k = KINDS
                .iter()
                .position(|k| *k == a.variant.kind())
                .unwrap_or(0);
            summary.attacks_by_kind[k] += 1;
        }
        let hygiene = self.settings.hygiene.then(|| self.plan_hygiene());
        if let Some(h) = &hygiene {
            summary.identities += h.identities;
            summary.identity_days += h.identity_days;
            summary.attacks += h.by_kind.iter().sum::<u32>();
            summary.attacks_skipped += h.skipped;
            for (i, n) in h.by_kind.iter().enumerate() {
                summary.attacks_by_kind[KINDS.len() + i] += n;
            }
        }
        let mut extra = Extra {
            recs: hygiene.map(|h| h.recs).unwrap_or_default(),
            next: 0,
            base: attacks.len() as u16,
        };
        let end = self.t0 + i64::from(days) * 86_400;
        let mut state: Vec<SvcState> = self.services.iter().map(|_| SvcState::default()).collect();
        let mut buf: Vec<Op> = Vec::new();
        let mut r = Renderer::new(self, &attacks);
        let mut next_attack = 0;
        for d in 0..days {
            for (i, s) in self.services.iter().enumerate() {
                if d >= s.start_day {
                    self.plan_day(i as u32, s, d, &mut state[i], &mut buf);
                }
            }
            let day_end = self.t0 + i64::from(d + 1) * 86_400;
            while next_attack < attacks.len() && attacks[next_attack].t < day_end {
                self.plan_attack(next_attack, &attacks[next_attack], &mut buf);
                next_attack += 1;
            }
            for (i, s) in self.services.iter().enumerate() {
                if let Some((_, t)) = s.change
                    && (day_end - 86_400..day_end).contains(&t)
                {
                    self.plan_change(i as u32, s, t, &mut buf);
                }
            }
            // Plans for later local dates never reach more than 14 hours back.
            let bound = if d + 1 == days {
                end
            } else {
                day_end - 14 * 3600
            };
            if !self.flush(&mut buf, bound, end, &mut r, &mut extra, sink, &mut summary)? {
                return Ok(summary);
            }
        }
        self.flush_extra(&mut extra, i64::MAX, sink, &mut summary)?;
        Ok(summary)
    }

    /// Writes the hygiene records before `bound`; false when the sink stops.
    fn flush_extra(
        &self,
        extra: &mut Extra,
        bound: i64,
        sink: &mut dyn FnMut(&Rendered<'_>) -> io::Result<bool>,
        summary: &mut Summary,
    ) -> io::Result<bool> {
        while let Some(h) = extra.recs.get(extra.next)
            && h.t <= bound
        {
            extra.next += 1;
            if let Some(f) = self.settings.only
                && f != Format::Auto
                && f != h.format
            {
                continue;
            }
            let time = Timestamp::from_micros(h.t * 1_000_000).to_rfc3339();
            let label = h.label.as_ref().map(|l| LabelLine {
                r#type: "attack_record",
                attack: extra.base + l.attack,
                kind: l.kind,
                variant: l.variant,
                event_id: &l.event_id,
                identity: &l.identity,
                time: time.clone(),
                source: l.source,
                expected: true,
            });
            summary.records += 1;
            if !sink(&Rendered {
                line: &h.line,
                label,
            })? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    #[allow(clippy::too_many_arguments)]
    fn flush(
        &self,
        buf: &mut Vec<Op>,
        bound: i64,
        end: i64,
        r: &mut Renderer<'_>,
        extra: &mut Extra,
        sink: &mut dyn FnMut(&Rendered<'_>) -> io::Result<bool>,
        summary: &mut Summary,
    ) -> io::Result<bool> {
        buf.sort_unstable_by_key(Op::key);
        let cut = buf.partition_point(|op| op.t < bound);
        for op in buf.drain(..cut) {
            if op.t < self.t0 || op.t >= end {
                continue;
            }
            if !self.flush_extra(extra, op.t, sink, summary)? {
                return Ok(false);
            }
            if let Some(f) = self.settings.only
                && f != Format::Auto
                && f != op.what.format()
            {
                continue;
            }
            let rec = r.render(&op);
            summary.records += 1;
            if !sink(&rec)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Settings {
        Settings {
            seed: 3,
            identities: 40,
            days: 10,
            ..Settings::default()
        }
    }

    #[test]
    fn output_is_deterministic_and_time_ordered() {
        let sim = Simulation::new(small()).expect("sim");
        let mut a = Vec::new();
        let mut la = Vec::new();
        let summary = sim.run(&mut a, Some(&mut la), None).expect("run");
        let mut b = Vec::new();
        let mut lb = Vec::new();
        Simulation::new(small())
            .expect("sim")
            .run(&mut b, Some(&mut lb), None)
            .expect("run");
        assert_eq!(a, b);
        assert_eq!(la, lb);
        assert!(summary.records > 10_000, "{summary:?}");
        assert!(summary.attacks >= 5, "{summary:?}");
        assert_eq!(summary.attacks_skipped, 0, "{summary:?}");
        let mut last = String::new();
        let mut ordered = 0;
        for line in String::from_utf8(a).expect("utf8").lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            let t = ["time", "eventTime", "requestReceivedTimestamp"]
                .iter()
                .find_map(|k| v[*k].as_str().map(str::to_string))
                .or_else(|| {
                    v["iat"]
                        .as_i64()
                        .map(|s| Timestamp::from_micros(s * 1_000_000).to_rfc3339())
                })
                .expect("time");
            if t >= last {
                ordered += 1;
            }
            last = t;
        }
        // Only replayed tokens carry their original (earlier) time.
        assert!(ordered as u64 + u64::from(summary.attacks) >= summary.records);
    }

    #[test]
    fn every_variant_fits_some_service_and_labels_list_attack_records() {
        let sim = Simulation::new(Settings {
            seed: 11,
            identities: 400,
            days: 21,
            attacks: Some(48),
            ..Settings::default()
        })
        .expect("sim");
        let (attacks, skipped) = sim.plan_attacks();
        assert_eq!(skipped, 0);
        let variants: HashSet<Variant> = attacks.iter().map(|a| a.variant).collect();
        assert_eq!(variants.len(), Variant::CLASSIC.len(), "{variants:?}");
        let services: HashSet<u32> = attacks.iter().map(|a| a.svc).collect();
        assert_eq!(services.len(), attacks.len(), "one attack per service");
    }

    #[test]
    fn native_record_ids_are_unique() {
        let sim = Simulation::new(Settings {
            seed: 11,
            identities: 200,
            days: 14,
            attacks: Some(32),
            ..Settings::default()
        })
        .expect("sim");
        let (attacks, _) = sim.plan_attacks();
        assert!(
            attacks
                .iter()
                .any(|a| a.variant == Variant::AwsKeyExfiltrated)
        );
        let mut out = Vec::new();
        sim.run(&mut out, None, None).expect("run");
        let text = String::from_utf8(out).expect("utf8");
        let value = |line: &str, key: &str| {
            line.split_once(key)
                .and_then(|(_, rest)| rest.split('"').next())
                .map(str::to_string)
        };
        // CloudTrail eventID, Kubernetes auditID per stage, Vault request.id per entry type.
        let mut seen = HashSet::new();
        let mut checked = 0;
        for line in text.lines() {
            let key = if let Some(id) = value(line, "\"eventID\":\"") {
                id
            } else if let Some(id) = value(line, "\"auditID\":\"") {
                format!("{id}/{}", value(line, "\"stage\":\"").unwrap_or_default())
            } else if line.contains("\"type\":\"re") {
                let kind = value(line, "\"type\":\"").unwrap_or_default();
                let id = value(line, "\"id\":\"").expect("vault request id");
                format!("{id}/{kind}")
            } else {
                continue;
            };
            checked += 1;
            assert!(seen.insert(key.clone()), "{key} appears twice");
        }
        assert!(checked > 100_000, "{checked}");
    }

    #[test]
    fn office_hours_are_office_hours() {
        let mut rng = Rng(5);
        for _ in 0..10_000 {
            let s = office_secs(&mut rng);
            assert!((8 * 3600..20 * 3600).contains(&s));
        }
    }

    #[test]
    fn local_time_follows_the_zone() {
        let sim = Simulation::new(small()).expect("sim");
        // 2026-03-23 09:00 in Berlin is 08:00 UTC; a week later (summer time) 07:00 UTC.
        assert_eq!(sim.local(0, 9 * 3600) % 86_400, 8 * 3600);
        assert_eq!(sim.local(7, 9 * 3600) % 86_400, 7 * 3600);
    }
}
