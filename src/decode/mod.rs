//! Decoding: turning the records users' systems already write into canonical [`Event`]s.
//!
//! One module per input format. [`Decoder::decode`] takes one record as bytes (a JSON line, a
//! Kafka message, a pretty-printed document) and appends one result per contained record: a
//! JSON array or a CloudTrail delivery file (`{"Records":[...]}`) holds several records, each
//! decoded or rejected on its own, so one bad record never costs its neighbours. A record may
//! also yield two events (an STS `AssumeRole` made with a session key is a use of the caller's
//! key and a mint of a new one).
//!
//! Format detection is per record. The fast path guesses from the first key of the object
//! (or, for JWT claims whose key order varies, from a few distinctive keys) and parses once
//! with that format's typed struct. When that fails, a slow path classifies the record exactly
//! by its top-level keys, so a misleading guess costs time, never correctness, and the reject
//! names the format and the field that was wrong.

/// Concatenates string slices into a new `String` of exactly the right capacity: the
/// per-event identity and scope strings are built this way because `format!` costs several
/// times more on the hot path.
macro_rules! cat {
    ($($part:expr),+ $(,)?) => {
        // A match keeps temporaries in the parts alive while they are copied.
        match [$(::core::convert::AsRef::<str>::as_ref(&$part)),+] {
            parts => {
                let mut s = String::with_capacity(parts.iter().map(|p| p.len()).sum());
                for p in parts {
                    s.push_str(p);
                }
                s
            }
        }
    };
}

mod canonical;
mod cloudtrail;
mod config;
mod github;
mod gitlab;
mod kubernetes;
mod reject;
mod sniff;
pub(crate) mod util;
mod vault;

use std::fmt;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::environment::EnvResolver;
use crate::error::ConfigError;
use crate::event::Event;
use crate::fingerprint::Fingerprinter;
use crate::fingerprint::{FINGERPRINT_KEY_ENV, FingerprintConfig};
use crate::time::Timestamp;

pub use config::DecodeConfig;
use reject::*;
pub use reject::{Decoded, Reject, RejectReason};
pub(crate) use reject::{FormatError, sanitize_message};
use sniff::*;
use util::Str;

/// An input format, chosen per record (`auto`) or forced.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Detect the format of each record.
    #[default]
    Auto,
    /// GitHub Actions OIDC token claims (decoded JWT payload).
    Github,
    /// GitLab CI `id_token` claims (decoded JWT payload).
    Gitlab,
    /// HashiCorp Vault audit device log (JSON).
    Vault,
    /// AWS CloudTrail records or delivery files.
    Cloudtrail,
    /// Kubernetes audit events (`audit.k8s.io/v1`).
    Kubernetes,
    /// nhiwatch's canonical event JSON.
    Canonical,
}

impl Format {
    /// The source system a format's records come from; `None` when a record says (auto,
    /// canonical).
    pub const fn source(self) -> Option<crate::event::Source> {
        use crate::event::Source;
        match self {
            Format::Github => Some(Source::GithubActions),
            Format::Gitlab => Some(Source::GitlabCi),
            Format::Vault => Some(Source::Vault),
            Format::Cloudtrail => Some(Source::Cloudtrail),
            Format::Kubernetes => Some(Source::Kubernetes),
            Format::Auto | Format::Canonical => None,
        }
    }

    /// The name used on the command line and in messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Github => "github",
            Format::Gitlab => "gitlab",
            Format::Vault => "vault",
            Format::Cloudtrail => "cloudtrail",
            Format::Kubernetes => "kubernetes",
            Format::Canonical => "canonical",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a format decoder needs besides the record.
pub(crate) struct Ctx<'a> {
    pub fp: &'a Fingerprinter,
    pub env: &'a EnvResolver,
}

/// Parses a required timestamp field. The message gives the text's length, not the text: a
/// value in the wrong field could be a secret.
pub(crate) fn parse_time(field: &'static str, s: &str) -> Result<Timestamp, FormatError> {
    Timestamp::parse(s.trim_ascii()).map_err(|e| {
        FormatError::Invalid(
            field,
            format!(
                "invalid timestamp of {} chars: {}",
                s.chars().count(),
                e.why
            ),
        )
    })
}

/// Decodes records of any supported format into canonical events.
#[derive(Clone, Debug)]
pub struct Decoder {
    format: Format,
    fp: Fingerprinter,
    env: EnvResolver,
    min_time: Timestamp,
    max_future_skew_secs: i64,
    max_record_bytes: usize,
    max_field_bytes: usize,
    keep_records: bool,
}

impl Decoder {
    /// A decoder with the given limits, fingerprint key and environment mappings.
    pub fn new(cfg: &DecodeConfig, fp: Fingerprinter, env: EnvResolver, format: Format) -> Self {
        Decoder {
            format,
            fp,
            env,
            min_time: cfg.min_time,
            max_future_skew_secs: i64::try_from(cfg.max_future_skew.as_secs()).unwrap_or(i64::MAX),
            max_record_bytes: cfg.max_record_bytes,
            max_field_bytes: cfg.max_field_bytes,
            keep_records: false,
        }
    }

    /// The same decoder, keeping (or not) each event's native record text in
    /// [`Event::record`](crate::event::Event::record) for the lake.
    pub fn keep_records(mut self, keep: bool) -> Self {
        self.keep_records = keep;
        self
    }

    /// A decoder from its configuration sections (`[decode]`, `[fingerprint]`,
    /// `[environments]`). Without a fingerprint key, a random one is drawn for this process,
    /// with a warning: fingerprints then differ from run to run.
    pub fn from_sections(
        decode: &DecodeConfig,
        fingerprint: &FingerprintConfig,
        environments: &crate::environment::EnvironmentsConfig,
        format: Format,
    ) -> Result<Self, ConfigError> {
        let invalid = |e: crate::fingerprint::KeyError| ConfigError::Invalid {
            key: "fingerprint.key".into(),
            message: e.to_string(),
        };
        let fp = match fingerprint.key()? {
            Some(key) => Fingerprinter::new(&key).map_err(invalid)?,
            None => {
                // Once per process: every decoder shares the one random key.
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    tracing::warn!(
                        "no fingerprint key configured (set {FINGERPRINT_KEY_ENV} or \
                         fingerprint.key_file); using a random key for this process (shared by \
                         its decoders), so credential fingerprints will not match those of \
                         other runs, instances or restarts"
                    )
                });
                Fingerprinter::ephemeral().map_err(invalid)?
            }
        };
        Ok(Decoder::new(
            decode,
            fp,
            EnvResolver::new(environments),
            format,
        ))
    }

    /// The same decoder with another format (per-topic overrides).
    pub fn with_format(&self, format: Format) -> Self {
        Decoder {
            format,
            ..self.clone()
        }
    }

    /// The forced format, or `Auto`.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The source system of a decoded record, for the metrics: its first event's, else this
    /// decoder's fixed format's, else `None` (not recognised).
    pub fn source_of(&self, results: &[Decoded]) -> Option<crate::event::Source> {
        results
            .iter()
            .find_map(|r| r.as_ref().ok().map(|e| e.source))
            .or(self.format.source())
    }

    /// The environment resolver (also labels metrics).
    pub fn environments(&self) -> &EnvResolver {
        &self.env
    }

    /// The fingerprinter (for tests and tools that must fingerprint a known id).
    pub fn fingerprinter(&self) -> &Fingerprinter {
        &self.fp
    }

    /// The largest record accepted.
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    /// Decodes one input (a line, a message, a document), appending one result per event or
    /// rejected record. Returns the number of records the input held (a delivery file or an
    /// array holds several; blank input holds none).
    pub fn decode(&self, input: &[u8], out: &mut Vec<Decoded>) -> usize {
        self.decode_with_bound(input, self.max_event_time(), out)
    }

    /// The latest plausible event time now: the wall clock plus `decode.max_future_skew`.
    /// Wall time is only a sanity bound here, never an input to detection.
    pub fn max_event_time(&self) -> Timestamp {
        Timestamp::now().plus_seconds(self.max_future_skew_secs)
    }

    /// As [`Decoder::decode`], with an explicit upper bound for event times.
    pub fn decode_with_bound(
        &self,
        input: &[u8],
        max_time: Timestamp,
        out: &mut Vec<Decoded>,
    ) -> usize {
        let start = skip_ws(input, 0);
        if start == input.len() {
            return 0;
        }
        let mut end = input.len();
        while matches!(input[end - 1], b' ' | b'\t' | b'\r' | b'\n') {
            end -= 1;
        }
        let len = end - start;
        if len > self.max_record_bytes {
            out.push(Err(reject(
                RejectReason::TooLarge,
                format!(
                    "record is {len} bytes; decode.max_record_bytes is {}",
                    self.max_record_bytes
                ),
                start,
                len,
                None,
            )));
            return 1;
        }
        // Validated once here, so the parsers need not check every string again.
        let input = match std::str::from_utf8(input) {
            Ok(s) => s,
            Err(e) => {
                out.push(Err(reject(
                    RejectReason::MalformedJson,
                    format!(
                        "invalid UTF-8 at byte {}",
                        e.valid_up_to().saturating_sub(start)
                    ),
                    start,
                    len,
                    None,
                )));
                return 1;
            }
        };
        let body = &input[start..end];
        match body.as_bytes()[0] {
            b'{' => self.decode_object(input, start, body, None, max_time, out),
            b'[' => match serde_json::from_str::<Vec<&RawValue>>(body) {
                Ok(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let obj = item.get();
                        let off = offset_of(input, obj);
                        if obj.starts_with('{') {
                            self.decode_object(input, off, obj, Some(i), max_time, out);
                        } else {
                            out.push(Err(reject(
                                RejectReason::NotAnObject,
                                "array element is not a JSON object".into(),
                                off,
                                obj.len(),
                                Some(i),
                            )));
                        }
                    }
                    items.len()
                }
                Err(e) => {
                    out.push(Err(json_reject(e, start, len, None)));
                    1
                }
            },
            _ => {
                out.push(Err(match serde_json::from_str::<IgnoredAny>(body) {
                    Ok(_) => reject(
                        RejectReason::NotAnObject,
                        "a record must be a JSON object (or an array of objects)".into(),
                        start,
                        len,
                        None,
                    ),
                    Err(e) => json_reject(e, start, len, None),
                }));
                1
            }
        }
    }

    /// Decodes `obj`, the object at `input[off..]`; returns the number of records it held.
    fn decode_object(
        &self,
        input: &str,
        off: usize,
        obj: &str,
        index: Option<usize>,
        max_time: Timestamp,
        out: &mut Vec<Decoded>,
    ) -> usize {
        let guess = match self.format {
            Format::Auto => sniff(obj.as_bytes()),
            Format::Cloudtrail if has_top_level_records(obj) => Guess::Delivery,
            Format::Github | Format::Gitlab
                if first_key(obj.as_bytes()) == Some(b"payload".as_slice()) =>
            {
                Guess::JwtDocument
            }
            forced => Guess::Format(forced),
        };
        let at = Span {
            off,
            len: obj.len(),
            index,
        };
        let before = out.len();
        let err = match self.try_guess(guess, input, at, obj, max_time, out) {
            Ok(n) => return n,
            Err(err) => err,
        };
        out.truncate(before);
        match err {
            (_, e) if e.is_syntax() => out.push(Err(e.into_reject(Format::Auto, at))),
            (format, e) if self.format != Format::Auto => {
                let exact = classify(obj);
                let mismatch = match exact {
                    Guess::Format(f) => f != format,
                    Guess::Delivery => format != Format::Cloudtrail,
                    Guess::JwtDocument => !matches!(format, Format::Github | Format::Gitlab),
                    Guess::Unknown => false,
                };
                if mismatch {
                    out.push(Err(reject(
                        RejectReason::FormatMismatch,
                        format!(
                            "--format {format} was given, but the record looks like {}",
                            guess_name(exact)
                        ),
                        off,
                        obj.len(),
                        index,
                    )));
                } else {
                    out.push(Err(e.into_reject(format, at)));
                }
            }
            (format, e) => {
                // The guess was wrong or the record is broken: classify exactly.
                let exact = match classify_checked(obj) {
                    Ok(g) => g,
                    Err(syntax) if syntax.is_syntax() || syntax.is_eof() => {
                        out.push(Err(json_reject(syntax, off, obj.len(), index)));
                        return 1;
                    }
                    Err(data) => {
                        // A duplicate key (the probe fails on nothing else).
                        out.push(Err(reject(
                            RejectReason::InvalidField,
                            sanitize_message(&data.to_string()),
                            off,
                            obj.len(),
                            index,
                        )));
                        return 1;
                    }
                };
                if exact == Guess::Unknown {
                    out.push(Err(reject(
                        RejectReason::UnknownFormat,
                        "no decoder recognizes this record (expected GitHub or GitLab OIDC \
                         claims, a Vault audit entry, a CloudTrail record, a Kubernetes audit \
                         event or a canonical event)"
                            .into(),
                        off,
                        obj.len(),
                        index,
                    )));
                } else if exact == guess {
                    out.push(Err(e.into_reject(format, at)));
                } else {
                    match self.try_guess(exact, input, at, obj, max_time, out) {
                        Ok(n) => return n,
                        Err((format, e)) => {
                            out.truncate(before);
                            out.push(Err(e.into_reject(format, at)));
                        }
                    }
                }
            }
        }
        1
    }

    /// Decodes `obj` as the guessed format, appending its events (or per-record rejects of a
    /// delivery file) and returning the number of records. Errors concern the whole object.
    fn try_guess(
        &self,
        guess: Guess,
        input: &str,
        at: Span,
        obj: &str,
        max_time: Timestamp,
        out: &mut Vec<Decoded>,
    ) -> Result<usize, (Format, FormatError)> {
        let ctx = Ctx {
            fp: &self.fp,
            env: &self.env,
        };
        let before = out.len();
        match guess {
            Guess::Delivery => {
                #[derive(Deserialize)]
                struct Delivery<'a> {
                    #[serde(rename = "Records", borrow)]
                    records: Vec<&'a RawValue>,
                }
                let d: Delivery =
                    serde_json::from_str(obj).map_err(|e| (Format::Cloudtrail, e.into()))?;
                for (i, rec) in d.records.iter().enumerate() {
                    let text = rec.get();
                    let rat = Span {
                        off: offset_of(input, text),
                        len: text.len(),
                        index: Some(i),
                    };
                    if !text.starts_with('{') {
                        out.push(Err(reject(
                            RejectReason::NotAnObject,
                            "CloudTrail Records entry is not a JSON object".into(),
                            rat.off,
                            rat.len,
                            rat.index,
                        )));
                        continue;
                    }
                    let mark = out.len();
                    match cloudtrail::decode(text, &ctx, out) {
                        Ok(()) => self.finish(input, mark, rat, max_time, out),
                        Err(e) => {
                            out.truncate(mark);
                            out.push(Err(e.into_reject(Format::Cloudtrail, rat)));
                        }
                    }
                }
                // Per-record outcomes are final; nothing to check at the object level.
                return Ok(d.records.len());
            }
            Guess::JwtDocument => {
                #[derive(Deserialize)]
                struct JwtDocument<'a> {
                    #[serde(borrow)]
                    payload: &'a RawValue,
                }
                let doc: JwtDocument =
                    serde_json::from_str(obj).map_err(|e| (Format::Github, e.into()))?;
                let payload = doc.payload.get();
                let format = match (self.format, classify(payload)) {
                    (Format::Github | Format::Gitlab, _) => self.format,
                    (_, Guess::Format(f @ (Format::Github | Format::Gitlab))) => f,
                    _ => {
                        return Err((
                            Format::Github,
                            FormatError::Invalid(
                                "payload",
                                "not GitHub Actions or GitLab CI token claims".into(),
                            ),
                        ));
                    }
                };
                decode_format(format, payload, &ctx, out).map_err(|e| (format, e))?;
            }
            Guess::Format(format) => {
                decode_format(format, obj, &ctx, out).map_err(|e| (format, e))?;
            }
            Guess::Unknown => {
                return Err((
                    Format::Auto,
                    FormatError::Invalid("record", "unrecognized".into()),
                ));
            }
        }
        self.finish(input, before, at, max_time, out);
        Ok(1)
    }

    /// Final checks on the events of one record (since `from`): a record with an absurd time
    /// is rejected whole; scope lists are sorted and unique; a kind is never empty.
    fn finish(
        &self,
        input: &str,
        from: usize,
        at: Span,
        max_time: Timestamp,
        out: &mut Vec<Decoded>,
    ) {
        let record = if self.keep_records {
            input.get(at.off..at.off + at.len)
        } else {
            None
        };
        for e in out[from..].iter_mut().flatten() {
            e.normalize_scopes();
            if e.kind.is_empty() {
                e.kind.push_str("unknown");
            }
            if let Some(text) = record {
                e.record = Some(text.into());
            }
        }
        let bad = out[from..].iter().find_map(|r| match r {
            Ok(e) if e.time < self.min_time || e.time > max_time => Some(e.time),
            _ => None,
        });
        if let Some(t) = bad {
            out.truncate(from);
            out.push(Err(reject(
                RejectReason::AbsurdTimestamp,
                format!(
                    "event time {t} is outside [{}, now + {}s]",
                    self.min_time, self.max_future_skew_secs
                ),
                at.off,
                at.len,
                at.index,
            )));
            return;
        }
        // Masking looks at values only when the record holds a token's start somewhere.
        let shapes = crate::redact::may_hold_shapes(&input[at.off..at.off + at.len]);
        let bad = out[from..].iter_mut().find_map(|r| match r {
            Ok(e) => check_values(e, self.max_field_bytes, shapes.then_some(&self.fp)),
            _ => None,
        });
        if let Some(message) = bad {
            out.truncate(from);
            out.push(Err(reject(
                RejectReason::InvalidField,
                message,
                at.off,
                at.len,
                at.index,
            )));
        }
    }
}

/// Checks an event's values: `Some` says why it cannot be kept (a value longer than `max`
/// bytes, or a control character in a value that names something: an identity, environment,
/// scope or runner), naming the field and the length, never the value. With a fingerprinter,
/// token-shaped text in the values (a JWT sent as an audience, a GitHub token in a branch
/// name) is replaced by `[secret:<keyed fingerprint>]`: never stored or alerted on raw, and
/// still distinct, so the event is judged as before (rejecting it would let an attacker hide
/// a mint behind a planted token).
fn check_values(e: &mut Event, max: usize, mask: Option<&Fingerprinter>) -> Option<String> {
    let mut problem = None;
    e.visit_values_mut(|field, name, v| {
        if problem.is_some() {
            return;
        }
        if v.len() > max {
            problem = Some(format!(
                "{field} is {} bytes; decode.max_field_bytes is {max}",
                v.len()
            ));
            return;
        }
        // C0 controls and DEL by byte; C1 controls (U+0080..U+009F) start with 0xC2.
        if name
            && v.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2)
            && v.chars().any(char::is_control)
        {
            problem = Some(format!("{field} holds a control character"));
            return;
        }
        if let Some(fp) = mask
            && let std::borrow::Cow::Owned(masked) = crate::redact::mask_shapes(v, |secret| {
                format!("[secret:{}]", &fp.fingerprint_text("masked", secret)[..12])
            })
        {
            *v = masked;
        }
    });
    problem
}

/// Where a record sits in the input.
#[derive(Clone, Copy, Debug)]
struct Span {
    off: usize,
    len: usize,
    index: Option<usize>,
}

fn decode_format(
    format: Format,
    obj: &str,
    ctx: &Ctx<'_>,
    out: &mut Vec<Decoded>,
) -> Result<(), FormatError> {
    match format {
        Format::Github => github::decode(obj, ctx, out),
        Format::Gitlab => gitlab::decode(obj, ctx, out),
        Format::Vault => vault::decode(obj, ctx, out),
        Format::Cloudtrail => cloudtrail::decode(obj, ctx, out),
        Format::Kubernetes => kubernetes::decode(obj, ctx, out),
        Format::Canonical => canonical::decode(obj, ctx, out),
        Format::Auto => Err(FormatError::Invalid("record", "no format".into())),
    }
}

fn offset_of(input: &str, inner: &str) -> usize {
    (inner.as_ptr() as usize).saturating_sub(input.as_ptr() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_first_keys() {
        assert_eq!(
            first_key(br#"{ "eventVersion":"1.08"}"#),
            Some(b"eventVersion".as_slice())
        );
        assert_eq!(first_key(br#"{"a\"b":1}"#), None);
        assert_eq!(first_key(b"{}"), None);
    }

    #[test]
    fn classification_uses_top_level_keys_only() {
        // A Vault entry whose request data has a key named like a Kubernetes field.
        let v = r#"{"time":"2024-01-01T00:00:00Z","type":"request","request":{"id":"x","data":{"auditID":"hmac"}}}"#;
        assert_eq!(classify(v), Guess::Format(Format::Vault));
        assert_eq!(classify(r#"{"Records":[]}"#), Guess::Delivery);
        assert_eq!(
            classify(r#"{"project_path":"a/b","iss":"https://gitlab.com"}"#),
            Guess::Format(Format::Gitlab)
        );
        assert_eq!(classify(r#"{"hello":"world"}"#), Guess::Unknown);
    }
}
