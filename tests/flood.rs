//! Bounded state under an identity flood (issue 22, item 1): 300,000 never-seen identities in
//! two hours of a 27-day organisation, replayed with 20,000 identities and credentials in
//! memory. Memory stays under a bound the same replay without `[state]` bounds exceeds, the
//! flood alerts once, the identities pushed out of memory come back from disk and are judged
//! against their own baselines, and the alerts are the same as without the bound.
//! `scripts/flood` runs the 3,000,000-identity version on a release build.

use std::collections::BTreeSet;

use crate::util::{self, flood};

fn replay(
    config: &str,
    input: &std::path::Path,
    dir: &std::path::Path,
) -> (Vec<serde_json::Value>, String) {
    let cfg = dir.join("nhiwatch.toml");
    std::fs::write(&cfg, config).expect("config");
    let out = util::bin()
        .args([
            "--config",
            cfg.to_str().expect("utf-8"),
            "replay",
            "--progress",
            "never",
        ])
        .arg(input)
        .output()
        .expect("replay");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let alerts = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("alert"))
        .collect();
    (alerts, stderr)
}

fn peak_mib(stderr: &str) -> f64 {
    let peak = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("peak memory: "))
        .expect("peak memory in the summary");
    peak.strip_suffix(" MiB")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("peak memory {peak:?} is not in MiB"))
}

fn ids(alerts: &[serde_json::Value]) -> BTreeSet<String> {
    alerts
        .iter()
        .map(|a| a["id"].as_str().expect("id").to_string())
        .collect()
}

#[test]
fn a_flood_of_300k_identities_stays_within_the_bound_alerts_once_and_changes_no_other_alert() {
    let dir = tempfile::tempdir().expect("dir");
    let input = dir.path().join("flood.jsonl");
    let records = flood::write(&input, 300_000).expect("flood");
    let spill = dir.path().join("spill");
    std::fs::create_dir(&spill).expect("spill dir");
    let bounded = format!(
        "[state]\nmax_identities = 20000\nmax_credentials = 20000\nspill_dir = {:?}\n",
        spill.to_str().expect("utf-8")
    );
    let (alerts, stderr) = replay(&bounded, &input, dir.path());
    let mib = peak_mib(&stderr);
    let (free, free_stderr) = replay("", &input, dir.path());
    let free_mib = peak_mib(&free_stderr);
    eprintln!("{records} records: peak {mib} MiB bounded, {free_mib} MiB without bounds");

    // Memory: well under what the same records take without the bound.
    assert!(mib < 200.0, "peak memory {mib} MiB\n{stderr}");
    assert!(
        free_mib > 300.0,
        "without bounds {free_mib} MiB: the test no longer floods"
    );
    let state = stderr
        .lines()
        .find(|l| l.trim().starts_with("state: "))
        .unwrap_or_else(|| panic!("no state line\n{stderr}"));
    assert!(
        state.contains("300,150 new identities")
            && state.contains("150 read back")
            && state.contains(" 0 forgotten"),
        "{state}"
    );

    // One flood alert, naming the owners; the nightly workflow back at night is judged
    // against the baseline it had before it was pushed out.
    let by = |d: &str| {
        alerts
            .iter()
            .filter(|a| a["detector"] == d)
            .collect::<Vec<_>>()
    };
    let floods = by("identity_flood");
    assert_eq!(floods.len(), 1, "{alerts:?}");
    assert!(
        floods[0]["identity"]
            .as_str()
            .is_some_and(|i| i.contains("mallory-"))
    );
    assert!(
        floods[0]["evidence"]["top_owners"][0]["name"]
            .as_str()
            .is_some_and(|o| o.starts_with("mallory-"))
    );
    let night = by("off_hours_mint");
    assert_eq!(night.len(), 1, "{alerts:?}");
    assert!(
        night[0]["identity"]
            .as_str()
            .is_some_and(|i| i.contains(flood::NIGHT_RETURNER))
    );
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    // The bound changes which identities are in memory, never what is alerted.
    assert_eq!(ids(&alerts), ids(&free));
    // The spill file is unnamed: nothing is left behind.
    assert_eq!(std::fs::read_dir(&spill).expect("spill dir").count(), 0);
}
