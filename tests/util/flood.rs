//! An identity flood in GitHub Actions OIDC claims (issue 22, item 1), for the flood test and
//! `examples/flood.rs` (`scripts/flood`): an organisation's usual traffic for 25 days, then
//! `n` never-seen identities within two hours of one night, then its usual traffic again.
//!
//! - 100 nightly workflows (`acme/nightly-<i>`) mint once a day at 09:00 + i minutes: the
//!   flood pushes them out of memory (they are the least recently active), and they come back
//!   the next morning: read back from disk, not new, no alert. `acme/nightly-0` comes back at
//!   03:00 instead, an hour it never minted at: one `off_hours_mint`, judged against the
//!   baseline that was on disk.
//! - 50 deploy workflows (`acme/svc-<i>`) mint every hour from 08:00 to 18:00.
//! - The flood: `n` workflows of 50 owners (`mallory-<k>`), one mint each, 02:00–04:00 of day
//!   25: one `identity_flood`.

use std::io::{BufWriter, Write};
use std::path::Path;

/// Monday 2026-01-05, 00:00 UTC.
const T0: i64 = 1_767_571_200;
/// The day of the flood.
pub const FLOOD_DAY: i64 = 25;
/// The nightly workflow that comes back at night.
pub const NIGHT_RETURNER: &str = "acme/nightly-0";

fn claims(w: &mut impl Write, repo: &str, workflow: &str, t: i64, n: u64) -> std::io::Result<()> {
    let owner = repo.split('/').next().unwrap_or(repo);
    writeln!(
        w,
        r#"{{"jti":"flood-{n}","sub":"repo:{repo}:ref:refs/heads/main","aud":"sts.amazonaws.com","ref":"refs/heads/main","sha":"d6a1c0e5b3f2a4e8c9b7d1f0a2e3c4b5a6d7e8f9","repository":"{repo}","repository_owner":"{owner}","run_id":"{n}","runner_environment":"github-hosted","workflow":"CI","event_name":"push","ref_protected":"true","ref_type":"branch","workflow_ref":"{repo}/.github/workflows/{workflow}@refs/heads/main","job_workflow_ref":"{repo}/.github/workflows/{workflow}@refs/heads/main","iss":"https://token.actions.githubusercontent.com","nbf":{nbf},"iat":{t},"exp":{exp}}}"#,
        nbf = t - 60,
        exp = t + 300,
    )
}

/// Writes the records of an organisation flooded with `n` identities to `path` (in time
/// order); returns how many records.
pub fn write(path: &Path, n: u64) -> std::io::Result<u64> {
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut count = 0u64;
    let usual_day = |w: &mut BufWriter<std::fs::File>, day: i64, count: &mut u64| {
        let mut day_records: Vec<(i64, String, &str)> = Vec::new();
        for i in 0..100 {
            let at = if day == FLOOD_DAY + 1 && i == 0 {
                3 * 3600
            } else {
                9 * 3600 + i * 60
            };
            day_records.push((at, format!("acme/nightly-{i}"), "nightly.yml"));
        }
        for h in 8..=18 {
            for i in 0..50 {
                day_records.push((h * 3600 + i * 30, format!("acme/svc-{i}"), "deploy.yml"));
            }
        }
        day_records.sort();
        for (at, repo, wf) in day_records {
            *count += 1;
            claims(w, &repo, wf, T0 + day * 86_400 + at, *count)?;
        }
        Ok::<(), std::io::Error>(())
    };
    for day in 0..FLOOD_DAY {
        usual_day(&mut w, day, &mut count)?;
    }
    let start = T0 + FLOOD_DAY * 86_400 + 2 * 3600;
    for k in 0..n {
        count += 1;
        let t = start + (k as i64 * 7200) / n.max(1) as i64;
        claims(
            &mut w,
            &format!("mallory-{}/r-{k}", k % 50),
            "ci.yml",
            t,
            count,
        )?;
    }
    usual_day(&mut w, FLOOD_DAY + 1, &mut count)?;
    w.flush()?;
    Ok(count)
}
