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

pub mod http;
pub mod spool;
pub mod syslog;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::alert::Alert;
use crate::detect::Severity;
use crate::encode::{Encoder, Encoding, HecFields};
use crate::error::ConfigError;
use crate::telemetry::metrics;
use spool::{Record, Spool, WhenFull};

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

/// `[delivery]`: settings shared by the sinks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Directory of the network sinks' spools (one subdirectory per sink). Defaults to
    /// `<run.state_dir>/spool` for `run`; required for `replay --sinks` with a network sink.
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// Host name written into encodings (HEC `host`, syslog HOSTNAME, CEF `dvchost`, ECS
    /// `observer.hostname`); this machine's name by default.
    #[serde(default)]
    pub hostname: Option<String>,
    /// How long shutdown waits for network sinks to deliver what they hold; the rest stays
    /// spooled for the next start. Default 10s.
    #[serde(default)]
    pub drain_timeout: Option<crate::units::Duration>,
}

impl DeliveryConfig {
    /// The host name for encodings: `hostname`, else this machine's.
    pub fn hostname(&self) -> String {
        self.hostname
            .clone()
            .unwrap_or_else(crate::encode::hostname)
    }

    /// The drain timeout.
    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_timeout.map_or(10, |d| d.as_secs()))
    }
}

/// A secret from the config: deserialized as a string, never shown by `Debug`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The kind of a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// Standard output, one alert per line.
    Stdout,
    /// A file, appended, one alert per line.
    File,
    /// HTTP POST of batches (Splunk HEC, Elasticsearch `_bulk`, webhooks).
    Http,
    /// Syslog (RFC 5424).
    Syslog,
}

impl SinkKind {
    fn as_str(self) -> &'static str {
        match self {
            SinkKind::Stdout => "stdout",
            SinkKind::File => "file",
            SinkKind::Http => "http",
            SinkKind::Syslog => "syslog",
        }
    }

    fn default_encoding(self) -> Encoding {
        match self {
            SinkKind::Syslog => Encoding::Cef,
            _ => Encoding::Json,
        }
    }
}

/// How an HTTP batch body is laid out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// One record per line (Splunk HEC accepts concatenated events this way).
    #[default]
    Ndjson,
    /// A JSON array of records (webhooks).
    JsonArray,
    /// Elasticsearch `_bulk`: a `create` action (with `_id` = alert id, so a resent batch
    /// is idempotent) before each document.
    ElasticsearchBulk,
}

/// Syslog transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyslogProtocol {
    /// TCP with octet-counting framing (RFC 6587).
    #[default]
    Tcp,
    /// TLS with octet-counting framing (RFC 5425).
    Tls,
    /// UDP, one message per datagram (RFC 5426); no delivery confirmation at all.
    Udp,
}

/// `[[sinks]]`: one destination. Fields apply to the kinds their comment names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Unique name: the `sink` label of the metrics and the spool subdirectory. Defaults to
    /// the type.
    #[serde(default)]
    pub name: Option<String>,
    /// `stdout`, `file`, `http` or `syslog`.
    #[serde(rename = "type")]
    pub kind: SinkKind,
    /// `json`, `ocsf`, `ecs`, `cef` or `hec`. Default: `cef` for syslog, else `json`.
    #[serde(default)]
    pub encoding: Option<Encoding>,
    /// Only alerts at least this severe.
    #[serde(default)]
    pub min_severity: Option<Severity>,
    /// Only alerts of these detectors (all when empty).
    #[serde(default)]
    pub detectors: Vec<String>,
    /// Only alerts in these environments (all when empty; `none` matches alerts without one).
    #[serde(default)]
    pub environments: Vec<String>,
    /// http, syslog: bound of the disk spool in bytes (default 256 MiB).
    #[serde(default)]
    pub spool_max_bytes: Option<u64>,
    /// http, syslog: `block` (default: stop consuming input until the sink catches up) or
    /// `drop_oldest`.
    #[serde(default)]
    pub when_full: Option<WhenFull>,
    /// file: the file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// http: the URL (`http://` or `https://`), e.g.
    /// `https://splunk:8088/services/collector/event`.
    #[serde(default)]
    pub url: Option<String>,
    /// http: token sent as `Authorization: <token_scheme> <token>`. Prefer `token_env`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// http: environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// http: the authorization scheme; `Splunk` for the hec encoding, else `Bearer`.
    #[serde(default)]
    pub token_scheme: Option<String>,
    /// http: extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// http: `ndjson` (default), `json_array` or `elasticsearch_bulk`.
    #[serde(default)]
    pub framing: Option<Framing>,
    /// http: gzip request bodies (`Content-Encoding: gzip`).
    #[serde(default)]
    pub gzip: bool,
    /// http, syslog over TLS: PEM file of the CA(s) that signed the receiver's certificate,
    /// instead of the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// http: most records per request (default 500).
    #[serde(default)]
    pub batch_max_records: Option<usize>,
    /// http: most bytes per request before compression (default 1 MiB).
    #[serde(default)]
    pub batch_max_bytes: Option<usize>,
    /// http, syslog: timeout of one request or connection, milliseconds (default 10000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// http, syslog: first retry delay, milliseconds (default 500); doubles up to
    /// `retry_max_ms` (default 60000), each with random jitter.
    #[serde(default)]
    pub retry_initial_ms: Option<u64>,
    /// See `retry_initial_ms`.
    #[serde(default)]
    pub retry_max_ms: Option<u64>,
    /// hec encoding: `source` (default `nhiwatch`).
    #[serde(default)]
    pub hec_source: Option<String>,
    /// hec encoding: `sourcetype` (default `nhiwatch:alert`).
    #[serde(default)]
    pub hec_sourcetype: Option<String>,
    /// hec encoding: `index` (default: the token's).
    #[serde(default)]
    pub hec_index: Option<String>,
    /// syslog: `host:port` of the receiver.
    #[serde(default)]
    pub address: Option<String>,
    /// syslog: `tcp` (default), `tls` or `udp`.
    #[serde(default)]
    pub protocol: Option<SyslogProtocol>,
    /// syslog over TLS: the name the certificate must carry (default: the address's host).
    #[serde(default)]
    pub server_name: Option<String>,
    /// syslog: facility name (`local0`…`local7`, `user`, `auth`, `security`, …; default
    /// `local4`).
    #[serde(default)]
    pub facility: Option<String>,
    /// syslog: APP-NAME (default `nhiwatch`).
    #[serde(default)]
    pub app_name: Option<String>,
}

impl SinkConfig {
    /// The sink's name.
    pub fn name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.kind.as_str().to_string())
    }

    /// The encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
            .unwrap_or_else(|| self.kind.default_encoding())
    }

    /// True for sinks delivered through a spool.
    pub fn is_network(&self) -> bool {
        matches!(self.kind, SinkKind::Http | SinkKind::Syslog)
    }

    fn spool_max_bytes(&self) -> u64 {
        self.spool_max_bytes.unwrap_or(256 << 20)
    }

    fn retry(&self) -> (Duration, Duration) {
        let initial = Duration::from_millis(self.retry_initial_ms.unwrap_or(500).max(1));
        let max = Duration::from_millis(self.retry_max_ms.unwrap_or(60_000)).max(initial);
        (initial, max)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.unwrap_or(10_000).max(1))
    }

    /// The token, from `token` or `token_env` (read now).
    fn token(&self) -> Option<String> {
        self.token.as_ref().map(|t| t.0.clone()).or_else(|| {
            self.token_env
                .as_ref()
                .and_then(|v| std::env::var(v).ok())
                .filter(|t| !t.is_empty())
        })
    }
}

/// Checks that network sinks have somewhere to spool (`spool_dir`, None: not configured).
pub fn require_spool(sinks: &[SinkConfig], spool_dir: Option<&Path>) -> Result<(), ConfigError> {
    if spool_dir.is_some() {
        return Ok(());
    }
    match sinks.iter().position(SinkConfig::is_network) {
        Some(i) => Err(ConfigError::Invalid {
            key: format!("sinks[{i}].type"),
            message: format!(
                "a {} sink spools to disk: set delivery.spool_dir (or run.state_dir)",
                sinks[i].kind.as_str()
            ),
        }),
        None => Ok(()),
    }
}

/// Checks the `[[sinks]]` entries: names unique, each kind's required fields present and no
/// field of another kind set.
pub fn validate(sinks: &[SinkConfig]) -> Result<(), ConfigError> {
    let mut names = std::collections::HashSet::new();
    for (i, s) in sinks.iter().enumerate() {
        let key = |f: &str| format!("sinks[{i}].{f}");
        let invalid = |f: &str, message: String| ConfigError::Invalid {
            key: key(f),
            message,
        };
        let name = s.name();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                "name",
                format!("{name:?}: use letters, digits, `-` and `_`"),
            ));
        }
        if matches!(name.as_str(), "kafka") {
            return Err(invalid(
                "name",
                "`kafka` is the alerts topic's sink; choose another name".into(),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(invalid(
                "name",
                format!("{name:?} is used by two sinks; give each a `name`"),
            ));
        }
        let kind = s.kind.as_str();
        // Each kind-specific field, whether it is set, and the kinds it applies to.
        const HTTP: &[SinkKind] = &[SinkKind::Http];
        const SYSLOG: &[SinkKind] = &[SinkKind::Syslog];
        const NETWORK: &[SinkKind] = &[SinkKind::Http, SinkKind::Syslog];
        let fields: [(&str, bool, &[SinkKind]); 21] = [
            ("path", s.path.is_some(), &[SinkKind::File]),
            ("url", s.url.is_some(), HTTP),
            ("token", s.token.is_some(), HTTP),
            ("token_env", s.token_env.is_some(), HTTP),
            ("token_scheme", s.token_scheme.is_some(), HTTP),
            ("headers", !s.headers.is_empty(), HTTP),
            ("framing", s.framing.is_some(), HTTP),
            ("gzip", s.gzip, HTTP),
            ("batch_max_records", s.batch_max_records.is_some(), HTTP),
            ("batch_max_bytes", s.batch_max_bytes.is_some(), HTTP),
            ("address", s.address.is_some(), SYSLOG),
            ("protocol", s.protocol.is_some(), SYSLOG),
            ("server_name", s.server_name.is_some(), SYSLOG),
            ("facility", s.facility.is_some(), SYSLOG),
            ("app_name", s.app_name.is_some(), SYSLOG),
            ("ca_file", s.ca_file.is_some(), NETWORK),
            ("spool_max_bytes", s.spool_max_bytes.is_some(), NETWORK),
            ("when_full", s.when_full.is_some(), NETWORK),
            ("timeout_ms", s.timeout_ms.is_some(), NETWORK),
            ("retry_initial_ms", s.retry_initial_ms.is_some(), NETWORK),
            ("retry_max_ms", s.retry_max_ms.is_some(), NETWORK),
        ];
        if let Some((f, _, _)) = fields
            .iter()
            .find(|(_, set, kinds)| *set && !kinds.contains(&s.kind))
        {
            return Err(invalid(f, format!("does not apply to a {kind} sink")));
        }
        let hec_set = s.hec_source.is_some() || s.hec_sourcetype.is_some() || s.hec_index.is_some();
        if hec_set && s.encoding() != Encoding::Hec {
            return Err(invalid(
                "hec_source",
                "hec_* fields apply to the hec encoding only".into(),
            ));
        }
        match s.kind {
            SinkKind::Stdout => {}
            SinkKind::File => {
                if s.path.is_none() {
                    return Err(invalid("path", "is required for a file sink".into()));
                }
            }
            SinkKind::Http => {
                let url = s
                    .url
                    .as_deref()
                    .ok_or_else(|| invalid("url", "is required for an http sink".into()))?;
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(invalid(
                        "url",
                        format!("{url:?} must start with http:// or https://"),
                    ));
                }
                if s.token.is_some() && s.token_env.is_some() {
                    return Err(invalid(
                        "token",
                        "set `token` or `token_env`, not both".into(),
                    ));
                }
                if let Some(v) = &s.token_env
                    && std::env::var(v).map_or(true, |t| t.is_empty())
                {
                    return Err(invalid(
                        "token_env",
                        format!("environment variable {v} is not set"),
                    ));
                }
                if s.framing == Some(Framing::ElasticsearchBulk) && !s.encoding().is_json() {
                    return Err(invalid(
                        "framing",
                        "elasticsearch_bulk needs a JSON encoding (json, ocsf, ecs)".into(),
                    ));
                }
                if s.framing == Some(Framing::JsonArray) && !s.encoding().is_json() {
                    return Err(invalid(
                        "framing",
                        "json_array needs a JSON encoding".into(),
                    ));
                }
                if s.batch_max_records == Some(0) || s.batch_max_bytes == Some(0) {
                    return Err(invalid("batch_max_records", "must be at least 1".into()));
                }
            }
            SinkKind::Syslog => {
                let addr = s.address.as_deref().ok_or_else(|| {
                    invalid(
                        "address",
                        "is required for a syslog sink (`host:port`)".into(),
                    )
                })?;
                if addr
                    .rsplit_once(':')
                    .is_none_or(|(_, p)| p.parse::<u16>().is_err())
                {
                    return Err(invalid("address", format!("{addr:?} is not `host:port`")));
                }
                if let Some(f) = &s.facility
                    && syslog::facility_code(f).is_none()
                {
                    return Err(invalid(
                        "facility",
                        format!("unknown facility {f:?} (kern, user, …, local0 … local7)"),
                    ));
                }
                if s.ca_file.is_some() && s.protocol != Some(SyslogProtocol::Tls) {
                    return Err(invalid(
                        "ca_file",
                        "applies to protocol = \"tls\" only".into(),
                    ));
                }
                if let Some(a) = &s.app_name
                    && (a.is_empty() || a.len() > 48 || !a.bytes().all(|b| (33..=126).contains(&b)))
                {
                    return Err(invalid(
                        "app_name",
                        "1 to 48 printable ASCII characters, no spaces (RFC 5424)".into(),
                    ));
                }
            }
        }
        if let Some(ca) = &s.ca_file
            && !ca.is_file()
        {
            return Err(invalid(
                "ca_file",
                format!("{} is not a file", ca.display()),
            ));
        }
        if s.is_network() && s.spool_max_bytes() < 64 << 10 {
            return Err(invalid("spool_max_bytes", "must be at least 65536".into()));
        }
    }
    Ok(())
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
                    let dropped = spool.append(arrival, &buf).map_err(|source| Error::Spool {
                        sink: out.name.clone(),
                        source,
                    })?;
                    if dropped > 0 {
                        meters.dropped_full.inc_by(dropped);
                        tracing::error!(sink = %out.name, dropped, total_dropped = spool.dropped(), spool = %spool.dir().display(), "spool full: oldest undelivered alerts dropped (when_full = drop_oldest)");
                    }
                    meters.spool(spool);
                }
            }
        }
        Ok(())
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

struct Worker {
    name: String,
    spool: Arc<Spool>,
    transport: Box<dyn Transport>,
    batch_records: usize,
    batch_bytes: usize,
    retry: (Duration, Duration),
    stop: Arc<AtomicBool>,
    deadline: Arc<Mutex<Option<Instant>>>,
    latency: bool,
    meters: Meters,
    spool_meters: SpoolMeters,
}

impl Worker {
    /// True once shutdown's drain time is over.
    fn expired(&self) -> bool {
        self.stop.load(Ordering::Acquire)
            && self
                .deadline
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none_or(|d| Instant::now() >= d)
    }

    /// Sleeps up to `d`, waking early when the drain time is over. False when it is.
    fn pause(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.expired() {
                return false;
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
        }
        !self.expired()
    }

    fn run(mut self) {
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
    fn deliver(&mut self, batch: &[Record]) -> bool {
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
    fn attempt(&mut self, batch: &[Record]) -> Option<Result<Vec<(usize, String)>, String>> {
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
    fn refuse(&self, r: &Record, why: &str) {
        self.spool_meters.refused.inc();
        let path = self.spool.dir().join("rejected.jsonl");
        let line = serde_json::json!({
            "time": crate::time::Timestamp::now().to_rfc3339(),
            "sink": self.name,
            "reason": why,
            "record": String::from_utf8_lossy(&r.payload),
        });
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| {
                let mut s = line.to_string();
                s.push('\n');
                f.write_all(s.as_bytes())
            });
        tracing::error!(sink = %self.name, reason = %why, kept_in = %path.display(), "receiver refused an alert; set aside");
        if let Err(e) = written {
            metrics::get().error(metrics::stage::SINK, "spool");
            tracing::error!(sink = %self.name, error = %e, "cannot write the rejected file");
        }
    }
}

/// A delay between `d/2` and `d` ("equal jitter"), so many instances retrying after the same
/// outage do not hit the receiver in step.
fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let half = d / 2;
    half + Duration::from_nanos(r % (half.as_nanos() as u64).max(1))
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
