//! Where alerts go besides the Kafka alerts topic: `[[sinks]]` of the config. Each sink has
//! an encoding, a route (minimum severity, detectors, environments) and a target:
//!
//! - `stdout` and `file` are written in line, one encoded alert per line;
//! - `http` (Splunk HEC, Elasticsearch bulk, any webhook) and `syslog` (RFC 5424 over TCP with
//!   octet counting, TLS, or UDP) are network sinks: every alert routed to one is appended to
//!   its disk [`spool::Spool`] first, and a delivery thread per sink sends batches from the
//!   spool's head, retrying with exponential backoff and jitter until the receiver accepts.
//!   An alert counts as handed off once spooled; [`Sinks::sync`] makes the spools durable
//!   before an input offset is committed.

mod config;
pub mod http;
pub mod spool;
pub mod syslog;
mod worker;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::alert::Alert;
use crate::alert::Severity;
use crate::encode::{Encoder, Encoding, HecFields};
use crate::error::ConfigError;
use crate::telemetry::metrics;
pub use config::{
    DeliveryConfig, Framing, Secret, SinkConfig, SinkKind, SyslogProtocol, require_spool, validate,
};
use spool::{Record, Spool, WhenFull};
use worker::*;
pub use worker::{Failure, Transport};

/// A sink failure that stops the pipeline (a receiver being down never is one).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A spool could not be opened or written.
    #[error("sink {sink}: {source}")]
    Spool {
        /// The sink.
        sink: String,
        /// Why.
        source: spool::Error,
    },
    /// A file or stdout sink could not be written.
    #[error("sink {sink}: cannot write {path}: {source}")]
    Write {
        /// The sink.
        sink: String,
        /// The file (`<stdout>`).
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A sink could not be set up (bad CA file, unresolvable address).
    #[error("sink {sink}: {message}")]
    Setup {
        /// The sink.
        sink: String,
        /// What is wrong.
        message: String,
    },
}

/// Which alerts a sink takes.
#[derive(Debug, Clone, Default)]
struct Route {
    min_severity: Option<Severity>,
    detectors: Vec<String>,
    environments: Vec<String>,
}

impl Route {
    fn matches(&self, a: &Alert) -> bool {
        self.min_severity.is_none_or(|m| a.severity >= m)
            && (self.detectors.is_empty() || self.detectors.contains(&a.detector))
            && (self.environments.is_empty()
                || self
                    .environments
                    .iter()
                    .any(|e| Some(e.as_str()) == a.environment.as_deref().or(Some("none"))))
    }
}

enum Target {
    Stream {
        out: Mutex<Box<dyn Write + Send>>,
        path: String,
    },
    Spooled {
        spool: Arc<Spool>,
        /// Wraps each encoded alert before it is spooled (the syslog header).
        meters: SpoolMeters,
        frame: Option<syslog::Header>,
        worker: Mutex<Option<JoinHandle<()>>>,
    },
}

struct Out {
    name: String,
    route: Route,
    encoder: Encoder,
    target: Target,
    meters: Meters,
}

/// A sink's metric handles, resolved once.
#[derive(Clone)]
struct Meters {
    deliveries: prometheus::IntCounter,
    failures: prometheus::IntCounter,
}

impl Meters {
    fn new(name: &str) -> Meters {
        let m = metrics::get();
        Meters {
            deliveries: m.sink_deliveries.with_label_values(&[name]),
            failures: m.sink_failures.with_label_values(&[name]),
        }
    }
}

/// The further handles of a spooled sink (shared by the sink and its delivery thread).
#[derive(Clone)]
struct SpoolMeters {
    retries: prometheus::IntCounter,
    queued: prometheus::IntGauge,
    spool_bytes: prometheus::IntGauge,
    dropped_full: prometheus::IntCounter,
    refused: prometheus::IntCounter,
    too_large: prometheus::IntCounter,
}

impl SpoolMeters {
    fn new(name: &str) -> SpoolMeters {
        let m = metrics::get();
        m.declare_spooled_sink(name);
        SpoolMeters {
            retries: m.sink_retries.with_label_values(&[name]),
            queued: m.sink_queued.with_label_values(&[name]),
            spool_bytes: m.sink_spool_bytes.with_label_values(&[name]),
            dropped_full: m.sink_dropped.with_label_values(&[name, "spool_full"]),
            refused: m.sink_dropped.with_label_values(&[name, "refused"]),
            too_large: m.sink_dropped.with_label_values(&[name, "too_large"]),
        }
    }

    /// Sets the spool gauges from the spool.
    fn spool(&self, spool: &Spool) {
        self.queued.set(spool.len() as i64);
        self.spool_bytes.set(spool.bytes() as i64);
    }
}

/// What became of a sink by the end of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The sink.
    pub name: String,
    /// Alerts routed to it in this run.
    pub routed: u64,
    /// Alerts left in its spool (delivered at the next start).
    pub spooled: u64,
}

/// The running sinks.
pub struct Sinks {
    outs: Vec<Out>,
    routed: Vec<std::sync::atomic::AtomicU64>,
    stop: Arc<AtomicBool>,
    /// Set while shutting down: delivery threads give up retrying at this instant.
    deadline: Arc<Mutex<Option<Instant>>>,
}

/// Options of [`Sinks::build`].
pub struct BuildOptions<'a> {
    /// The spool root.
    pub spool_dir: Option<&'a Path>,
    /// Host name for encodings.
    pub hostname: String,
    /// Observe alert latency on this sink's deliveries (by name).
    pub latency_sink: Option<String>,
}

impl Sinks {
    /// Opens spools (reporting what a previous run left), opens files and starts the
    /// delivery threads. `cfgs` must have passed [`validate`].
    pub fn build(cfgs: &[SinkConfig], opts: &BuildOptions<'_>) -> Result<Sinks, Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let deadline: Arc<Mutex<Option<Instant>>> = Arc::default();
        let m = metrics::get();
        let mut outs = Vec::new();
        for c in cfgs {
            let name = c.name();
            m.declare_sink(&name);
            let meters = Meters::new(&name);
            let mut encoder = Encoder::new(c.encoding(), opts.hostname.clone());
            if c.encoding() == Encoding::Hec {
                let d = HecFields::default();
                encoder = encoder.with_hec(HecFields {
                    source: c.hec_source.clone().unwrap_or(d.source),
                    sourcetype: c.hec_sourcetype.clone().unwrap_or(d.sourcetype),
                    index: c.hec_index.clone(),
                });
            }
            let target = match c.kind {
                SinkKind::Stdout => Target::Stream {
                    out: Mutex::new(Box::new(std::io::stdout())),
                    path: "<stdout>".into(),
                },
                SinkKind::File => {
                    let path = c.path.clone().unwrap_or_default();
                    let f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .map_err(|source| Error::Write {
                            sink: name.clone(),
                            path: path.display().to_string(),
                            source,
                        })?;
                    Target::Stream {
                        out: Mutex::new(Box::new(f)),
                        path: path.display().to_string(),
                    }
                }
                SinkKind::Http | SinkKind::Syslog => {
                    let root = opts.spool_dir.ok_or_else(|| Error::Setup {
                        sink: name.clone(),
                        message: "no spool directory (delivery.spool_dir)".into(),
                    })?;
                    let dir = root.join(&name);
                    let (spool, opened) =
                        Spool::open(&dir, c.spool_max_bytes(), c.when_full.unwrap_or_default())
                            .map_err(|source| Error::Spool {
                                sink: name.clone(),
                                source,
                            })?;
                    if opened.records > 0 {
                        tracing::info!(sink = %name, records = opened.records, spool = %dir.display(), "undelivered alerts from a previous run; delivering them first");
                    }
                    let spool = Arc::new(spool);
                    let spool_meters = SpoolMeters::new(&name);
                    spool_meters.spool(&spool);
                    let transport: Box<dyn Transport> = match c.kind {
                        SinkKind::Http => {
                            Box::new(http::Http::new(c).map_err(|message| Error::Setup {
                                sink: name.clone(),
                                message,
                            })?)
                        }
                        _ => Box::new(syslog::Syslog::new(c).map_err(|message| Error::Setup {
                            sink: name.clone(),
                            message,
                        })?),
                    };
                    let frame = (c.kind == SinkKind::Syslog)
                        .then(|| syslog::Header::new(c, &opts.hostname));
                    let worker = Worker {
                        name: name.clone(),
                        spool: spool.clone(),
                        transport,
                        batch_records: c.batch_max_records.unwrap_or(500),
                        batch_bytes: c.batch_max_bytes.unwrap_or(1 << 20),
                        retry: c.retry(),
                        stop: stop.clone(),
                        deadline: deadline.clone(),
                        latency: opts.latency_sink.as_deref() == Some(name.as_str()),
                        meters: meters.clone(),
                        spool_meters: spool_meters.clone(),
                    };
                    let handle = std::thread::Builder::new()
                        .name(format!("sink-{name}"))
                        .spawn(move || worker.run())
                        .map_err(|e| Error::Setup {
                            sink: name.clone(),
                            message: format!("cannot start delivery thread: {e}"),
                        })?;
                    Target::Spooled {
                        spool,
                        meters: spool_meters,
                        frame,
                        worker: Mutex::new(Some(handle)),
                    }
                }
            };
            outs.push(Out {
                meters,
                name,
                route: Route {
                    min_severity: c.min_severity,
                    detectors: c.detectors.clone(),
                    environments: c.environments.clone(),
                },
                encoder,
                target,
            });
        }
        let routed = outs.iter().map(|_| Default::default()).collect();
        Ok(Sinks {
            outs,
            routed,
            stop,
            deadline,
        })
    }

    /// True when no sink is configured.
    pub fn is_empty(&self) -> bool {
        self.outs.is_empty()
    }

    /// Hands an alert to every sink whose route takes it: written (stdout, file) or
    /// spooled (network sinks). `arrival` is its input record's arrival (Unix µs, 0 unknown).
    /// Blocks while a `block` spool is full.
    pub fn send(&self, alert: &Alert, arrival: u64) -> Result<(), Error> {
        let mut buf = Vec::with_capacity(2048);
        // A spool on a full disk keeps the alert in memory: the other sinks still get it,
        // and the caller hears of it after.
        let mut deferred = None;
        for (i, out) in self.outs.iter().enumerate() {
            if !out.route.matches(alert) {
                continue;
            }
            self.routed[i].fetch_add(1, Ordering::Relaxed);
            buf.clear();
            match &out.target {
                Target::Stream { out: w, path } => {
                    out.encoder.encode(alert, &mut buf);
                    buf.push(b'\n');
                    let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
                    match w.write_all(&buf).and_then(|()| w.flush()) {
                        Ok(()) => out.meters.deliveries.inc(),
                        Err(source) => {
                            out.meters.failures.inc();
                            return Err(Error::Write {
                                sink: out.name.clone(),
                                path: path.clone(),
                                source,
                            });
                        }
                    }
                }
                Target::Spooled {
                    spool,
                    meters,
                    frame,
                    ..
                } => {
                    if let Some(h) = frame {
                        h.write(alert, &mut buf);
                    }
                    out.encoder.encode(alert, &mut buf);
                    // An alert the spool cannot hold (a huge identity or evidence) is set
                    // aside, never a reason to stop.
                    if buf.len() > spool.record_limit() {
                        meters.too_large.inc();
                        set_aside(
                            spool.dir(),
                            &out.name,
                            "alert too large for the spool",
                            &format!(
                                "alert of {} bytes is larger than the spool's record limit of {} bytes",
                                buf.len(),
                                spool.record_limit()
                            ),
                            &buf,
                        );
                        continue;
                    }
                    let dropped = match spool.append(arrival, &buf) {
                        Ok(n) => n,
                        Err(source @ spool::Error::Deferred { .. }) => {
                            meters.spool(spool);
                            deferred.get_or_insert(Error::Spool {
                                sink: out.name.clone(),
                                source,
                            });
                            continue;
                        }
                        Err(source) => {
                            return Err(Error::Spool {
                                sink: out.name.clone(),
                                source,
                            });
                        }
                    };
                    if dropped > 0 {
                        meters.dropped_full.inc_by(dropped);
                        tracing::error!(sink = %out.name, dropped, total_dropped = spool.dropped(), spool = %spool.dir().display(), "spool full: oldest undelivered alerts dropped (when_full = drop_oldest)");
                    }
                    meters.spool(spool);
                }
            }
        }
        deferred.map_or(Ok(()), Err)
    }

    /// Makes everything handed off durable: files flushed to disk, spools synced. Called
    /// before input offsets are committed.
    pub fn sync(&self) -> Result<(), Error> {
        for out in &self.outs {
            match &out.target {
                Target::Stream { out: w, path } => {
                    let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
                    w.flush().map_err(|source| Error::Write {
                        sink: out.name.clone(),
                        path: path.clone(),
                        source,
                    })?;
                }
                Target::Spooled { spool, .. } => {
                    spool.sync().map_err(|source| Error::Spool {
                        sink: out.name.clone(),
                        source,
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Stops the delivery threads after giving them up to `drain` to deliver what they
    /// hold; what is left stays spooled (and is logged).
    pub fn shutdown(&self, drain: Duration) -> Result<Vec<Report>, Error> {
        let synced = self.sync();
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + drain);
        self.stop.store(true, Ordering::Release);
        let mut reports = Vec::new();
        for (i, out) in self.outs.iter().enumerate() {
            let mut spooled = 0;
            if let Target::Spooled { spool, worker, .. } = &out.target {
                let w = worker.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(w) = w {
                    let _ = w.join();
                }
                spooled = spool.len() as u64;
                if spooled > 0 {
                    tracing::warn!(sink = %out.name, records = spooled, spool = %spool.dir().display(), "alerts not delivered before shutdown stay spooled; they are delivered at the next start");
                }
            }
            reports.push(Report {
                name: out.name.clone(),
                routed: self.routed[i].load(Ordering::Relaxed),
                spooled,
            });
        }
        synced.map(|()| reports)
    }
}

impl Drop for Sinks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let mut d = self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        if d.is_none() {
            *d = Some(Instant::now());
        }
    }
}

/// Sets a record a sink will never deliver aside in `<spool>/rejected.jsonl`, logged as
/// `what` (the caller counts it by reason): it must not block the alerts behind it, nor be
/// lost.
pub(super) fn set_aside(dir: &std::path::Path, sink: &str, what: &str, why: &str, payload: &[u8]) {
    let path = dir.join("rejected.jsonl");
    let line = serde_json::json!({
        "time": crate::time::Timestamp::now().to_rfc3339(),
        "sink": sink,
        "reason": why,
        "record": String::from_utf8_lossy(payload),
    });
    let written = crate::files::append(&path).and_then(|mut f| {
        let mut s = line.to_string();
        s.push('\n');
        f.write_all(s.as_bytes())
    });
    tracing::error!(sink = %sink, reason = %why, kept_in = %path.display(), "{what}; set aside");
    if let Err(e) = written {
        metrics::get().error(metrics::stage::SINK, "spool");
        tracing::error!(sink = %sink, error = %e, "cannot write the rejected file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<SinkConfig> {
        #[derive(Deserialize)]
        struct T {
            sinks: Vec<SinkConfig>,
        }
        toml::from_str::<T>(text).unwrap().sinks
    }

    #[test]
    fn routes_by_severity_detector_and_environment() {
        let mut a = crate::encode::tests::sample();
        let r = Route {
            min_severity: Some(Severity::High),
            detectors: vec!["cross_env_reuse".into()],
            environments: vec!["production".into(), "none".into()],
        };
        assert!(r.matches(&a));
        a.severity = Severity::Medium;
        assert!(!r.matches(&a));
        a.severity = Severity::Critical;
        a.detector = "new_runner".into();
        assert!(!r.matches(&a));
        a.detector = "cross_env_reuse".into();
        a.environment = Some("staging".into());
        assert!(!r.matches(&a));
        a.environment = None;
        assert!(
            r.matches(&a),
            "`none` matches alerts without an environment"
        );
        assert!(Route::default().matches(&a));
    }

    #[test]
    fn validation_names_the_sink_and_field() {
        let dir = Some(Path::new("/tmp"));
        let err = |t: &str, dir: Option<&Path>| {
            validate(&parse(t))
                .and_then(|()| require_spool(&parse(t), dir))
                .unwrap_err()
                .to_string()
        };
        assert!(err("[[sinks]]\ntype = \"http\"\n", dir).contains("sinks[0].url"));
        let e = err(
            "[[sinks]]\ntype = \"file\"\npath = \"x\"\nurl = \"http://x\"\n",
            dir,
        );
        assert!(
            e.contains("sinks[0].url") && e.contains("does not apply to a file sink"),
            "{e}"
        );
        let e = err(
            "[[sinks]]\ntype = \"stdout\"\n[[sinks]]\ntype = \"stdout\"\n",
            dir,
        );
        assert!(
            e.contains("sinks[1].name") && e.contains("two sinks"),
            "{e}"
        );
        let e = err("[[sinks]]\ntype = \"syslog\"\naddress = \"h:1\"\n", None);
        assert!(e.contains("delivery.spool_dir"), "{e}");
        let e = err("[[sinks]]\ntype = \"syslog\"\naddress = \"nohost\"\n", dir);
        assert!(e.contains("sinks[0].address"), "{e}");
        let e = err(
            "[[sinks]]\ntype = \"syslog\"\naddress = \"h:514\"\nfacility = \"local9\"\n",
            dir,
        );
        assert!(e.contains("sinks[0].facility"), "{e}");
        let e = err(
            "[[sinks]]\ntype = \"http\"\nurl = \"http://x\"\nencoding = \"cef\"\nframing = \"elasticsearch_bulk\"\n",
            dir,
        );
        assert!(e.contains("sinks[0].framing"), "{e}");
        let e = err("[[sinks]]\ntype = \"http\"\nurl = \"ftp://x\"\n", dir);
        assert!(e.contains("http:// or https://"), "{e}");
        let e = err(
            "[[sinks]]\ntype = \"http\"\nurl = \"http://x\"\ntoken_env = \"NHIWATCH_SURELY_UNSET_TOKEN\"\n",
            dir,
        );
        assert!(e.contains("NHIWATCH_SURELY_UNSET_TOKEN is not set"), "{e}");
        validate(
            &parse(
                "[[sinks]]\nname = \"siem\"\ntype = \"syslog\"\naddress = \"127.0.0.1:514\"\nmin_severity = \"high\"\n[[sinks]]\ntype = \"http\"\nurl = \"https://h/services/collector/event\"\nencoding = \"hec\"\nhec_index = \"sec\"\ngzip = true\n",
            ),
        )
        .unwrap();
    }

    #[test]
    fn a_token_in_the_config_is_not_shown_by_debug() {
        let s = parse("[[sinks]]\ntype = \"http\"\nurl = \"http://x\"\ntoken = \"t0p-s3cret\"\n");
        let shown = format!("{s:?}");
        assert!(!shown.contains("t0p-s3cret"), "{shown}");
        assert_eq!(s[0].token().as_deref(), Some("t0p-s3cret"));
    }

    #[test]
    fn an_alert_larger_than_the_spool_takes_is_set_aside_not_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A receiver nobody listens on: everything stays spooled.
        let cfgs = parse(
            "[[sinks]]\nname = \"siem\"\ntype = \"http\"\nurl = \"http://127.0.0.1:9/x\"\nspool_max_bytes = 65536\n",
        );
        validate(&cfgs).expect("valid");
        let sinks = Sinks::build(
            &cfgs,
            &BuildOptions {
                spool_dir: Some(dir.path()),
                hostname: "h".into(),
                latency_sink: None,
            },
        )
        .expect("sinks");
        let mut huge = crate::encode::tests::sample();
        huge.summary = "x".repeat(100 << 10);
        let too_large = metrics::get()
            .sink_dropped
            .with_label_values(&["siem", "too_large"]);
        let before = too_large.get();
        sinks.send(&huge, 0).expect("a huge alert is no error");
        sinks
            .send(&crate::encode::tests::sample(), 0)
            .expect("the next alert is spooled");
        assert_eq!(too_large.get(), before + 1);
        let rejected = std::fs::read_to_string(dir.path().join("siem").join("rejected.jsonl"))
            .expect("rejected file");
        assert!(
            rejected.contains("larger than the spool's record limit"),
            "{rejected}"
        );
        assert!(rejected.contains(&"x".repeat(1000)), "the alert is kept");
        sinks.shutdown(Duration::from_millis(10)).expect("shutdown");
    }

    #[test]
    fn jitter_stays_between_half_and_whole() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(1000));
            assert!(
                j >= Duration::from_millis(500) && j <= Duration::from_millis(1000),
                "{j:?}"
            );
        }
        let spread: std::collections::HashSet<_> =
            (0..20).map(|_| jitter(Duration::from_secs(1))).collect();
        assert!(spread.len() > 10, "jitter must vary");
    }
}
