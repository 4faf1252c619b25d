//! The delivery loop of a network sink: one thread per sink takes batches from the head of
//! its spool, hands them to the sink's [`Transport`] (HTTP or syslog), and retries with
//! exponential backoff and jitter until the receiver accepts; nothing is acknowledged in the
//! spool before it is delivered.

use super::*;

/// Why a delivery attempt failed.
#[derive(Debug)]
pub enum Failure {
    /// Worth retrying as is: connection refused or reset, timeout, 5xx, 429, 408.
    Transient(String),
    /// Retried, but logged as an error: the receiver rejects the sender (401, 403, 404),
    /// which a configuration change fixes; the alerts wait in the spool meanwhile.
    Misconfigured(String),
    /// The receiver refused the content (other 4xx): retrying the same bytes cannot help.
    Refused(String),
}

/// Sends batches to one receiver.
pub trait Transport: Send {
    /// Sends `batch` in order. `Ok` holds the records the receiver refused one by one
    /// (index, why) while accepting the rest (Elasticsearch bulk item errors).
    fn send(&mut self, batch: &[Record]) -> Result<Vec<(usize, String)>, Failure>;
}

pub(super) struct Worker {
    pub(super) name: String,
    pub(super) spool: Arc<Spool>,
    pub(super) transport: Box<dyn Transport>,
    pub(super) batch_records: usize,
    pub(super) batch_bytes: usize,
    pub(super) retry: (Duration, Duration),
    pub(super) stop: Arc<AtomicBool>,
    pub(super) deadline: Arc<Mutex<Option<Instant>>>,
    pub(super) latency: bool,
    pub(super) meters: Meters,
    pub(super) spool_meters: SpoolMeters,
}

impl Worker {
    /// True once shutdown's drain time is over.
    pub(super) fn expired(&self) -> bool {
        self.stop.load(Ordering::Acquire)
            && self
                .deadline
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none_or(|d| Instant::now() >= d)
    }

    /// Sleeps up to `d`, waking early when the drain time is over. False when it is.
    pub(super) fn pause(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.expired() {
                return false;
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
        }
        !self.expired()
    }

    pub(super) fn run(mut self) {
        let m = metrics::get();
        loop {
            if self.stop.load(Ordering::Acquire) && (self.spool.is_empty() || self.expired()) {
                return;
            }
            let batch = match self.spool.peek(
                self.batch_records,
                self.batch_bytes,
                Duration::from_millis(200),
            ) {
                Ok(b) => b,
                Err(e) => {
                    m.error(metrics::stage::SINK, "spool");
                    tracing::error!(sink = %self.name, error = %e, "cannot read spool; retrying");
                    if !self.pause(Duration::from_secs(1)) {
                        return;
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                continue;
            }
            if !self.deliver(&batch) {
                return;
            }
            self.spool_meters.spool(&self.spool);
        }
    }

    /// Delivers a batch (retrying until accepted or refused) and acknowledges it. False when
    /// shutdown interrupted the retries.
    pub(super) fn deliver(&mut self, batch: &[Record]) -> bool {
        let set_aside = match self.attempt(batch) {
            Some(Ok(refused)) => {
                for (i, why) in &refused {
                    self.refuse(&batch[*i], why);
                }
                refused.len()
            }
            Some(Err(why)) if batch.len() > 1 => {
                // One record spoils the batch: send them one by one to find it, in order.
                tracing::warn!(sink = %self.name, records = batch.len(), reason = %why, "batch refused; resending its records one by one");
                for r in batch {
                    if !self.deliver(std::slice::from_ref(r)) {
                        return false;
                    }
                }
                return true;
            }
            Some(Err(why)) => {
                self.refuse(&batch[0], &why);
                1
            }
            None => return false,
        };
        let m = metrics::get();
        let Some(last) = batch.last() else {
            return true;
        };
        if let Err(e) = self.spool.ack(last.seq) {
            m.error(metrics::stage::SINK, "spool");
            tracing::error!(sink = %self.name, error = %e, "cannot record delivery in the spool; records may be sent again after a restart");
        }
        self.meters
            .deliveries
            .inc_by((batch.len() - set_aside) as u64);
        if self.latency {
            for r in batch {
                metrics::observe_alert_latency(r.arrival);
            }
        }
        true
    }

    /// Sends until the receiver answers: `Ok(refused items)`, `Err(why)` when it refused the
    /// whole batch, `None` when shutdown ended the retries.
    pub(super) fn attempt(
        &mut self,
        batch: &[Record],
    ) -> Option<Result<Vec<(usize, String)>, String>> {
        let (initial, max) = self.retry;
        let mut delay = initial;
        let mut attempts: u64 = 0;
        loop {
            let result = self.transport.send(batch);
            attempts += 1;
            let (why, level_error) = match result {
                Ok(refused) => {
                    if attempts > 1 {
                        tracing::info!(sink = %self.name, attempts, records = batch.len(), "delivered after retries");
                    }
                    return Some(Ok(refused));
                }
                Err(Failure::Refused(why)) => return Some(Err(why)),
                Err(Failure::Transient(why)) => (why, false),
                Err(Failure::Misconfigured(why)) => (why, true),
            };
            self.meters.failures.inc();
            let wait = jitter(delay);
            if level_error {
                tracing::error!(sink = %self.name, attempt = attempts, records = batch.len(), retry_in_ms = wait.as_millis() as u64, error = %why, "receiver rejects nhiwatch (check the sink's url and token); alerts wait in the spool");
            } else {
                tracing::warn!(sink = %self.name, attempt = attempts, records = batch.len(), retry_in_ms = wait.as_millis() as u64, error = %why, "delivery failed; retrying");
            }
            if !self.pause(wait) {
                return None;
            }
            self.spool_meters.retries.inc();
            delay = (delay * 2).min(max);
        }
    }

    /// Sets a refused record aside in `<spool>/rejected.jsonl`, counted and logged: the
    /// receiver will never take it, and it must not block the alerts behind it.
    pub(super) fn refuse(&self, r: &Record, why: &str) {
        self.spool_meters.refused.inc();
        super::set_aside(
            self.spool.dir(),
            &self.name,
            "receiver refused an alert",
            why,
            &r.payload,
        );
    }
}

/// A delay between `d/2` and `d` ("equal jitter"), so many instances retrying after the same
/// outage do not hit the receiver in step.
pub(super) fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let half = d / 2;
    half + Duration::from_nanos(r % (half.as_nanos() as u64).max(1))
}
