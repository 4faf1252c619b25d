//! Handles for the per-record hot path, resolved once so an update is an atomic add (events by
//! source and action, input records by topic and source), the arrival clock and alert
//! latency, and the census of detection state behind the gauges.

use super::*;

/// Handles for `nhiwatch_events_total`, indexed by source and action, resolved once so the
/// per-event update is an atomic add.
pub struct EventCounters(Vec<[IntCounter; Action::ALL.len()]>);

impl EventCounters {
    /// Resolves every (source, action) handle.
    pub fn new() -> Self {
        let m = get();
        EventCounters(
            Source::ALL
                .iter()
                .map(|s| Action::ALL.map(|a| m.events.with_label_values(&[s.as_str(), a.as_str()])))
                .collect(),
        )
    }

    /// The handle of one (source, action).
    #[inline]
    pub fn of(&self, s: Source, a: Action) -> &IntCounter {
        &self.0[s as usize][a as usize]
    }
}

impl Default for EventCounters {
    fn default() -> Self {
        Self::new()
    }
}

/// Handles for `nhiwatch_input_records_total` of one topic, by source (the last is
/// `unknown`).
pub struct RecordCounters([IntCounter; Source::ALL.len() + 1], IntCounter);

impl RecordCounters {
    /// Resolves the handles of `topic`.
    pub fn new(topic: &str) -> Self {
        let m = get();
        RecordCounters(
            std::array::from_fn(|i| {
                let s = Source::ALL.get(i).map_or(UNKNOWN_SOURCE, |s| s.as_str());
                m.input_records.with_label_values(&[topic, s])
            }),
            m.input_bytes.with_label_values(&[topic]),
        )
    }

    /// Counts one record of `bytes` from `source` (`None`: not recognised).
    #[inline]
    pub fn record(&self, source: Option<Source>, bytes: usize) {
        self.0[source.map_or(Source::ALL.len(), |s| s as usize)].inc();
        self.1.inc_by(bytes as u64);
    }

    /// Counts a batch: records by source, indexed as [`Source::ALL`] then `unknown`, and
    /// their bytes.
    pub fn add(&self, records: &[u64; Source::ALL.len() + 1], bytes: u64) {
        for (counter, n) in self.0.iter().zip(records) {
            if *n > 0 {
                counter.inc_by(*n);
            }
        }
        self.1.inc_by(bytes);
    }
}

/// Microseconds since the Unix epoch, now (the arrival stamp carried with events).
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Observes an alert's latency from its record's arrival (Unix microseconds) to now.
pub fn observe_alert_latency(arrival_micros: u64) {
    if arrival_micros == 0 {
        return;
    }
    let now = now_micros();
    get()
        .alert_latency
        .observe(now.saturating_sub(arrival_micros) as f64 / 1e6);
}

/// What detection engines hold, summed over engines for the gauges (`detect::Engine::census`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Identities with a baseline.
    pub identities: u64,
    /// Identities past each detector's learning period.
    pub armed: Vec<(&'static str, u64)>,
    /// Estimated bytes of the baselines.
    pub baseline_bytes: u64,
    /// Live credential bindings.
    pub credentials: u64,
    /// Alerts held in their fleet grace period.
    pub held: u64,
    /// Identities spilled to disk.
    pub spilled: u64,
    /// The bounds: identities in memory, spilled, credentials, fleet values.
    pub max: [u64; 4],
    /// Values the fleet context counts identities for.
    pub fleet_values: u64,
}

impl Census {
    /// Adds another engine's census.
    pub fn add(&mut self, o: &Census) {
        self.identities += o.identities;
        for (name, n) in &o.armed {
            match self.armed.iter_mut().find(|(m, _)| m == name) {
                Some((_, m)) => *m += n,
                None => self.armed.push((name, *n)),
            }
        }
        self.baseline_bytes += o.baseline_bytes;
        self.credentials += o.credentials;
        self.held += o.held;
        self.spilled += o.spilled;
        self.fleet_values += o.fleet_values;
        for (m, n) in self.max.iter_mut().zip(o.max) {
            *m += n;
        }
    }
}
