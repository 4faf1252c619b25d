//! `[delivery]` and `[[sinks]]`: what each sink is (kind, encoding, route, target, retry and
//! spool limits), and the validation that names the offending key.

use super::*;

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
    pub(super) fn as_str(self) -> &'static str {
        match self {
            SinkKind::Stdout => "stdout",
            SinkKind::File => "file",
            SinkKind::Http => "http",
            SinkKind::Syslog => "syslog",
        }
    }

    pub(super) fn default_encoding(self) -> Encoding {
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

    pub(super) fn spool_max_bytes(&self) -> u64 {
        self.spool_max_bytes.unwrap_or(256 << 20)
    }

    pub(super) fn retry(&self) -> (Duration, Duration) {
        let initial = Duration::from_millis(self.retry_initial_ms.unwrap_or(500).max(1));
        let max = Duration::from_millis(self.retry_max_ms.unwrap_or(60_000)).max(initial);
        (initial, max)
    }

    pub(super) fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.unwrap_or(10_000).max(1))
    }

    /// The token, from `token` or `token_env` (read now).
    pub(super) fn token(&self) -> Option<String> {
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
