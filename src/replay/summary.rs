//! What a replay reports: the counts of one run (records, events, rejects, alerts by detector
//! and severity, held and dropped alerts, throughput and memory) printed on stderr, and the
//! progress bar while it runs.

use super::*;

/// Counts of one replay.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Inputs (files, stdin) that were read.
    pub inputs_read: u64,
    /// Inputs that could not be opened or read.
    pub io_errors: u64,
    /// Bytes read (decompressed).
    pub bytes: u64,
    /// Records seen (a CloudTrail delivery file counts each of its records).
    pub records: u64,
    /// Events by source and action.
    pub events: [[u64; Action::ALL.len()]; Source::ALL.len()],
    /// Rejected records by reason.
    pub rejects: [u64; RejectReason::ALL.len()],
    /// Wall time.
    pub elapsed: Duration,
    /// Output stopped early because the reader went away (closed pipe).
    pub output_closed: bool,
    /// Detection counters, when the detectors ran.
    pub detection: Option<Stats>,
    /// Identities with a baseline at the end.
    pub identities: usize,
    /// Live credential bindings at the end.
    pub credentials: usize,
    /// Identities spilled to disk at the end, and what the spill stores did.
    pub spilled: usize,
    /// Spill counts summed over engines.
    pub spill: crate::baseline::SpillCounts,
    /// Credential bindings forgotten before expiry (past `state.max_credentials`).
    pub credentials_evicted: u64,
    /// Approximate bytes of the identity baselines at the end (keys, structs and heap).
    pub baseline_bytes: usize,
    /// Peer groups at the end, the values their members adopted, and their approximate
    /// bytes.
    pub peers: (usize, usize, usize),
    /// Peak resident memory of the process, bytes (Linux).
    pub peak_rss: Option<u64>,
    /// What was written to the lake, when one was given.
    pub lake: Option<crate::lake::Written>,
}

impl Summary {
    /// Total events.
    pub fn events_total(&self) -> u64 {
        self.events.iter().flatten().sum()
    }

    /// Total rejects.
    pub fn rejects_total(&self) -> u64 {
        self.rejects.iter().sum()
    }

    /// Records per second.
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// True when nothing could be read: no event, and at least one failure.
    pub fn nothing_read(&self) -> bool {
        self.events_total() == 0 && (self.rejects_total() > 0 || self.io_errors > 0)
    }

    /// The human summary printed on stderr.
    pub fn render(&self) -> String {
        let mut s = format!(
            "nhiwatch replay: {} records from {} input{} ({}) in {:.2} s: {}/s\n",
            thousands(self.records),
            self.inputs_read,
            if self.inputs_read == 1 { "" } else { "s" },
            human_bytes(self.bytes),
            self.elapsed.as_secs_f64(),
            thousands(self.records_per_sec() as u64),
        );
        s.push_str(&format!("  events: {}\n", thousands(self.events_total())));
        for (si, source) in Source::ALL.iter().enumerate() {
            let row = &self.events[si];
            if row.iter().sum::<u64>() == 0 {
                continue;
            }
            let parts: Vec<String> = Action::ALL
                .iter()
                .enumerate()
                .filter(|(ai, _)| row[*ai] > 0)
                .map(|(ai, a)| format!("{} {}", a.as_str(), thousands(row[ai])))
                .collect();
            s.push_str(&format!(
                "    {:<15}{}\n",
                source.as_str(),
                parts.join("  ")
            ));
        }
        s.push_str(&format!("  rejects: {}\n", thousands(self.rejects_total())));
        for (ri, reason) in RejectReason::ALL.iter().enumerate() {
            if self.rejects[ri] > 0 {
                s.push_str(&format!(
                    "    {:<17}{}\n",
                    reason.as_str(),
                    thousands(self.rejects[ri])
                ));
            }
        }
        if self.io_errors > 0 {
            s.push_str(&format!("  unreadable inputs: {}\n", self.io_errors));
        }
        if self.output_closed {
            s.push_str("  output closed early; the rest of the input was not processed\n");
        }
        if let Some(d) = &self.detection {
            s.push_str(&format!(
                "  detection: {} mints and uses inspected, {} identities ({} B of baseline each), {} live credentials\n",
                thousands(d.inspected),
                thousands(self.identities as u64),
                thousands((self.baseline_bytes / self.identities.max(1)) as u64),
                thousands(self.credentials as u64)
            ));
            let sp = &self.spill;
            if sp.spilled + sp.dropped + self.credentials_evicted > 0 {
                s.push_str(&format!(
                    "  state: {} new identities; {} in memory, {} spilled to disk ({} moved out, {} read back, {} forgotten); {} credential bindings forgotten before expiry\n",
                    thousands(d.new_identities),
                    thousands(self.identities as u64),
                    thousands(self.spilled as u64),
                    thousands(sp.spilled),
                    thousands(sp.reloaded),
                    thousands(sp.dropped),
                    thousands(self.credentials_evicted)
                ));
            }
            s.push_str(&format!(
                "  peer groups: {} ({} adopted values, {} B per identity)\n",
                thousands(self.peers.0 as u64),
                thousands(self.peers.1 as u64),
                thousands((self.peers.2 / self.identities.max(1)) as u64)
            ));
            s.push_str(&format!("  alerts: {}\n", thousands(d.alerts_total())));
            let mut names: Vec<&str> = d.alerts.keys().map(|(n, _)| n.as_str()).collect();
            names.extend(d.suppressed.keys().map(String::as_str));
            names.extend(d.rollouts.keys().map(String::as_str));
            names.extend(d.peer_routine.keys().map(String::as_str));
            names.sort_unstable();
            names.dedup();
            for name in names {
                let by_sev: Vec<String> = Severity::ALL
                    .iter()
                    .rev()
                    .filter_map(|sev| {
                        d.alerts
                            .get(&(name.to_string(), *sev))
                            .map(|n| format!("{} {}", sev.as_str(), thousands(*n)))
                    })
                    .collect();
                let mut line = format!("    {name:<17}{:>7}", thousands(d.alerts_of(name)));
                if !by_sev.is_empty() {
                    line.push_str(&format!("  ({})", by_sev.join(", ")));
                }
                if let Some(n) = d.suppressed.get(name) {
                    line.push_str(&format!("  suppressed repeats {}", thousands(*n)));
                }
                if let Some(n) = d.rollouts.get(name) {
                    line.push_str(&format!("  dropped as fleet rollouts {}", thousands(*n)));
                }
                if let Some(n) = d.replacements.get(name) {
                    line.push_str(&format!("  moved for good {}", thousands(*n)));
                }
                if let Some(n) = d.peer_routine.get(name) {
                    line.push_str(&format!("  routine among peers {}", thousands(*n)));
                }
                s.push_str(&line);
                s.push('\n');
            }
            if d.allowlisted > 0 {
                s.push_str(&format!(
                    "    allowlisted findings {}\n",
                    thousands(d.allowlisted)
                ));
            }
        }
        if let Some(w) = &self.lake {
            s.push_str(&format!(
                "  lake: {} events and {} alerts in {} Parquet files ({})\n",
                thousands(w.events),
                thousands(w.alerts),
                thousands(w.files),
                human_bytes(w.bytes)
            ));
        }
        if let Some(rss) = self.peak_rss {
            s.push_str(&format!("  peak memory: {}\n", human_bytes(rss)));
        }
        s
    }
}

/// Peak resident set size of this process (`VmHWM`), on Linux.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub(super) fn progress_bar(mode: Progress, total: u64) -> Option<ProgressBar> {
    let show = match mode {
        Progress::Never => false,
        Progress::Always => true,
        Progress::Auto => total >= 16 << 20,
    };
    if !show || !io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(super) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
