//! Rejects: why a record could not be decoded (stable snake_case reasons for metrics, the
//! rejects file and dead-letter headers), where it sits in the input, and messages that name
//! the field without quoting a value that could be a secret.

use super::*;

/// Why a record was rejected. The snake_case names are stable: they appear in metrics, the
/// rejects file and dead-letter headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Not valid JSON (or not valid UTF-8).
    MalformedJson,
    /// Valid JSON, but not an object or an array of objects.
    NotAnObject,
    /// An object none of the decoders recognizes.
    UnknownFormat,
    /// `--format` forced a format the record is not in.
    FormatMismatch,
    /// A field the format requires is absent.
    MissingField,
    /// A field has the wrong type or an unusable value.
    InvalidField,
    /// The event time is before `decode.min_time` or too far in the future.
    AbsurdTimestamp,
    /// The record exceeds `decode.max_record_bytes`.
    TooLarge,
}

impl RejectReason {
    /// Every variant, in a stable order.
    pub const ALL: [RejectReason; 8] = [
        RejectReason::MalformedJson,
        RejectReason::NotAnObject,
        RejectReason::UnknownFormat,
        RejectReason::FormatMismatch,
        RejectReason::MissingField,
        RejectReason::InvalidField,
        RejectReason::AbsurdTimestamp,
        RejectReason::TooLarge,
    ];

    /// The snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectReason::MalformedJson => "malformed_json",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::UnknownFormat => "unknown_format",
            RejectReason::FormatMismatch => "format_mismatch",
            RejectReason::MissingField => "missing_field",
            RejectReason::InvalidField => "invalid_field",
            RejectReason::AbsurdTimestamp => "absurd_timestamp",
            RejectReason::TooLarge => "too_large",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record that could not be decoded, with enough to find it and fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    /// The reason code.
    pub reason: RejectReason,
    /// A human message naming the format and field where known.
    pub message: String,
    /// Byte offset of the rejected record within the input given to [`Decoder::decode`].
    pub offset: usize,
    /// Length in bytes of the rejected record (0 when unknown).
    pub len: usize,
    /// Position within a batch (JSON array element or CloudTrail `Records` entry).
    pub index: Option<usize>,
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// One decoded record: an event or a reject.
pub type Decoded = Result<Event, Reject>;

/// What went wrong inside one format decoder.
#[derive(Debug)]
pub(crate) enum FormatError {
    /// serde could not map the JSON onto the format's struct.
    Json(serde_json::Error),
    /// A field the format needs is absent (after optional fallbacks).
    Missing(&'static str),
    /// A field is present but unusable.
    Invalid(&'static str, String),
}

impl From<serde_json::Error> for FormatError {
    fn from(e: serde_json::Error) -> Self {
        FormatError::Json(e)
    }
}

impl FormatError {
    pub(super) fn is_syntax(&self) -> bool {
        matches!(self, FormatError::Json(e) if e.is_syntax() || e.is_eof())
    }

    pub(super) fn into_reject(self, format: Format, at: Span) -> Reject {
        let (reason, message) = match self {
            FormatError::Json(e) if e.is_syntax() || e.is_eof() => {
                (RejectReason::MalformedJson, format!("invalid JSON: {e}"))
            }
            FormatError::Json(e) => {
                let msg = sanitize_message(&e.to_string());
                let reason = if msg.starts_with("missing field") {
                    RejectReason::MissingField
                } else {
                    RejectReason::InvalidField
                };
                (reason, format!("{format}: {msg}"))
            }
            FormatError::Missing(field) => (
                RejectReason::MissingField,
                format!("{format}: missing field `{field}`"),
            ),
            FormatError::Invalid(field, why) => (
                RejectReason::InvalidField,
                format!("{format}: invalid field `{field}`: {why}"),
            ),
        };
        reject(reason, message, at.off, at.len, at.index)
    }
}

/// Serde messages quote the unexpected value (`invalid type: string "…"`). A value in the wrong
/// place could be a secret, so quoted values are replaced by their length.
pub(crate) fn sanitize_message(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find(['"', '`']) {
        let quote = rest.as_bytes()[i] as char;
        out.push_str(&rest[..=i]);
        let after = &rest[i + 1..];
        match after.find(quote) {
            // Backticks name fields and expected variants: keep them. The variant a record
            // gave is its value: replaced like a quoted one.
            Some(j) if quote == '`' && out.ends_with("unknown variant `") => {
                out.push_str(&format!("<{} chars>`", after[..j].chars().count()));
                rest = &after[j + 1..];
            }
            // A field name comes from the record too (`unknown field`, `duplicate field`):
            // kept for the typo it usually is, unless it holds a token's start.
            Some(j) if quote == '`' => {
                let name = &after[..j];
                if crate::redact::may_hold_shapes(name) {
                    out.push_str(&format!("<{} chars>`", name.chars().count()));
                } else {
                    out.push_str(&after[..=j]);
                }
                rest = &after[j + 1..];
            }
            Some(j) => {
                out.push_str(&format!("<{} chars>\"", after[..j].chars().count()));
                rest = &after[j + 1..];
            }
            None => {
                rest = after;
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

pub(super) fn reject(
    reason: RejectReason,
    message: String,
    offset: usize,
    len: usize,
    index: Option<usize>,
) -> Reject {
    Reject {
        reason,
        message,
        offset,
        len,
        index,
    }
}

pub(super) fn json_reject(
    e: serde_json::Error,
    offset: usize,
    len: usize,
    index: Option<usize>,
) -> Reject {
    reject(
        RejectReason::MalformedJson,
        format!("invalid JSON: {e}"),
        offset,
        len,
        index,
    )
}
