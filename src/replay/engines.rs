//! The detecting side of a replay, on the calling thread: each event goes to its identity's
//! engine (all engines advanced together when they share their context), alerts are encoded
//! to the output, sinks and lake, and rejects written to the rejects file.

use super::*;

/// One line of the rejects file.
#[derive(Serialize)]
pub(super) struct RejectLine<'a> {
    pub(super) file: &'a str,
    pub(super) line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) index: Option<usize>,
    pub(super) reason: RejectReason,
    pub(super) message: &'a str,
    /// The record with secrets masked, cut at 64 KiB.
    pub(super) record: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(super) record_truncated: bool,
}

/// Rejects logged one by one before the rest are only counted.
pub(super) const LOGGED_REJECTS: u64 = 20;
/// Output is handed to the writer in blocks of this size.
pub(super) const FLUSH_AT: usize = 1 << 20;

/// Metric handles and state of a replay.
pub(super) struct Meters {
    /// Input records of files and of stdin.
    pub(super) file: metrics::RecordCounters,
    pub(super) stdin: metrics::RecordCounters,
    pub(super) events: metrics::EventCounters,
    pub(super) detected: prometheus::IntCounter,
    /// The sink alerts are handed to (`stdout` or `file`), when they are written.
    pub(super) sink: Option<&'static str>,
    pub(super) env: crate::environment::EnvResolver,
    /// Arrival stamps of alerts written to the buffer but not yet to the output.
    pub(super) unflushed: Vec<u64>,
    pub(super) last_census: Instant,
}

/// How often the detection-state gauges are recounted during a replay.
pub(super) const CENSUS_EVERY: Duration = Duration::from_secs(5);

pub(super) struct Run<'a> {
    pub(super) engines: &'a mut [Engine],
    pub(super) lake: Option<crate::lake::Background>,
    pub(super) encoder: crate::encode::Encoder,
    pub(super) sinks: Option<&'a crate::sink::Sinks>,
    pub(super) alerts: Vec<Alert>,
    pub(super) emit: Emit,
    pub(super) out: Box<dyn Write>,
    pub(super) out_buf: Vec<u8>,
    pub(super) rejects: Option<(io::BufWriter<File>, String)>,
    pub(super) summary: Summary,
    pub(super) logged_rejects: u64,
    pub(super) error: Option<Error>,
    pub(super) output_name: String,
    pub(super) meters: Meters,
    /// Scratch: the values an event may have rolled out (engines sharing their context).
    pub(super) rollout: Vec<u64>,
}

impl Run<'_> {
    pub(super) fn batch(&mut self, file: &str, records: u64, items: Vec<Item>, arrival: u64) {
        self.summary.records += records;
        let mut kept: Vec<Event> = Vec::new();
        let mut events = [[0u64; Action::ALL.len()]; Source::ALL.len()];
        let mut newest = [i64::MIN; Source::ALL.len()];
        for item in items {
            match item {
                Item::Event(event) => {
                    events[event.source as usize][event.action as usize] += 1;
                    let secs = event.time.as_unix_seconds();
                    let n = &mut newest[event.source as usize];
                    *n = (*n).max(secs);
                    if self.emit == Emit::Events {
                        event.write_json(&mut self.out_buf);
                        self.out_buf.push(b'\n');
                    }
                    match self.engines.len() {
                        0 => {}
                        1 => self.engines[0].process(&event, &mut self.alerts),
                        n => {
                            let i = crate::baseline::hash_identity(&event.identity) as usize % n;
                            if self.engines[i].shares_context() {
                                self.shared_process(i, &event);
                            } else {
                                self.engines[i].process(&event, &mut self.alerts);
                            }
                        }
                    }
                    if self.lake.is_some() {
                        kept.push(event);
                    }
                }
                Item::Reject {
                    line,
                    reject,
                    text,
                    truncated,
                } => self.reject(file, line, &reject, &text, truncated),
            }
            if !self.alerts.is_empty() {
                self.write_alerts(arrival);
            }
            if self.out_buf.len() >= FLUSH_AT {
                self.flush_output(false);
            }
        }
        if let Some(lake) = &mut self.lake
            && self.error.is_none()
            && let Err(e) = lake.events(kept)
        {
            metrics::get().error(stage::LAKE, "write");
            self.error = Some(e.into());
        }
        // Metrics per batch, not per record.
        let m = metrics::get();
        let mut total = 0;
        for (si, source) in Source::ALL.iter().enumerate() {
            for (ai, action) in Action::ALL.iter().enumerate() {
                let n = events[si][ai];
                if n > 0 {
                    self.summary.events[si][ai] += n;
                    self.meters.events.of(*source, *action).inc_by(n);
                    total += n;
                }
            }
            if newest[si] != i64::MIN && !self.engines.is_empty() {
                m.saw_event_time(*source, newest[si]);
            }
        }
        if !self.engines.is_empty() {
            self.meters.detected.inc_by(total);
        }
    }

    /// One event through engines that share their cross-identity context: every engine's
    /// clock moves to it (held alerts due are released), the identity's engine judges it, and
    /// the values it may have rolled out drop the other engines' held alerts on them; so the
    /// engines decide as one engine would.
    pub(super) fn shared_process(&mut self, i: usize, event: &Event) {
        let secs = event.time.as_unix_seconds();
        // Only the engines judging with this one (one `run` instance's partitions, with
        // `--instances`) move with it.
        let (before, rest) = self.engines.split_at_mut(i);
        let (this, after) = rest.split_first_mut().expect("engine i");
        for e in before.iter_mut().chain(after.iter_mut()) {
            if e.judges_with(this) {
                e.advance(secs, &mut self.alerts);
            }
        }
        this.process(event, &mut self.alerts);
        let (day, values) = this.rollout_values();
        self.rollout.clear();
        self.rollout.extend_from_slice(values);
        for e in before.iter_mut().chain(after.iter_mut()) {
            if e.judges_with(this) {
                e.drop_rollouts(day, &self.rollout);
            }
        }
    }

    /// Recounts the detection-state gauges.
    pub(super) fn census(&mut self) {
        self.meters.last_census = Instant::now();
        if self.engines.is_empty() {
            return;
        }
        let mut c = crate::detect::Census::default();
        for e in self.engines.iter() {
            c.add(&e.census());
        }
        metrics::get().set_census(&c);
    }

    pub(super) fn reject(
        &mut self,
        file: &str,
        line: u64,
        reject: &Reject,
        text: &[u8],
        truncated: bool,
    ) {
        self.summary.rejects[reject.reason as usize] += 1;
        let message = redact_str(&reject.message);
        metrics::get()
            .rejects
            .with_label_values(&[stage::REPLAY, reject.reason.as_str()])
            .inc();
        self.logged_rejects += 1;
        if self.logged_rejects <= LOGGED_REJECTS {
            tracing::warn!(
                file,
                line,
                index = reject.index,
                reason = reject.reason.as_str(),
                "record rejected: {}",
                message
            );
            if self.logged_rejects == LOGGED_REJECTS {
                tracing::warn!(
                    "further rejects are counted in the summary but not logged one by one"
                );
            }
        } else {
            tracing::debug!(
                file,
                line,
                index = reject.index,
                reason = reject.reason.as_str(),
                "record rejected: {}",
                message
            );
        }
        let Some((w, path)) = &mut self.rejects else {
            return;
        };
        // Masked when it was cut (see `read::reject_text`).
        let record = String::from_utf8_lossy(text).into_owned();
        let line = RejectLine {
            file,
            line,
            index: reject.index,
            reason: reject.reason,
            message: &message,
            record,
            record_truncated: truncated,
        };
        let res = serde_json::to_writer(&mut *w, &line)
            .map_err(io::Error::other)
            .and_then(|()| w.write_all(b"\n"));
        if let Err(source) = res {
            self.error = Some(Error::Output {
                what: "rejects",
                path: path.clone(),
                source,
            });
        }
    }

    /// Writes the pending alerts to the output buffer; `arrival` is their records' arrival
    /// (0: unknown, as for alerts released at the end of the input).
    pub(super) fn write_alerts(&mut self, arrival: u64) {
        let m = metrics::get();
        if let Some(lake) = &mut self.lake
            && self.error.is_none()
            && let Err(e) = lake.alerts(self.alerts.clone())
        {
            m.error(stage::LAKE, "write");
            self.error = Some(e.into());
        }
        for alert in self.alerts.drain(..) {
            m.alerts
                .with_label_values(&[
                    alert.detector.as_str(),
                    alert.severity.as_str(),
                    self.meters.env.metric_label(alert.environment.as_deref()),
                ])
                .inc();
            if self.emit == Emit::Alerts {
                self.encoder.encode(&alert, &mut self.out_buf);
                self.out_buf.push(b'\n');
                self.meters.unflushed.push(arrival);
            }
            if let Some(sinks) = self.sinks
                && self.error.is_none()
                && let Err(e) = sinks.send(&alert, arrival)
            {
                self.error = Some(e.into());
            }
        }
    }

    pub(super) fn flush_output(&mut self, last: bool) {
        if self.summary.output_closed || self.error.is_some() {
            self.out_buf.clear();
            return;
        }
        let mut res = self.out.write_all(&self.out_buf);
        if res.is_ok() && (last || !self.meters.unflushed.is_empty()) {
            res = self.out.flush();
        }
        self.out_buf.clear();
        let m = metrics::get();
        let handed = std::mem::take(&mut self.meters.unflushed);
        if let Some(sink) = self.meters.sink {
            let counter = if res.is_ok() {
                &m.sink_deliveries
            } else {
                &m.sink_failures
            };
            counter
                .with_label_values(&[sink])
                .inc_by(handed.len() as u64);
        }
        if res.is_ok() {
            for arrival in handed {
                metrics::observe_alert_latency(arrival);
            }
        }
        match res {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => self.summary.output_closed = true,
            Err(source) => {
                m.error(stage::SINK, "write");
                self.error = Some(Error::Output {
                    what: "output",
                    path: self.output_name.clone(),
                    source,
                })
            }
        }
    }
}
