//! Removing secrets from record text before it is written anywhere (the rejects file, dead
//! letters). Rejected records are by definition records nhiwatch could not parse, so this works
//! on text, not on a parsed structure: it masks the values of keys that hold tokens or
//! credential ids, and anything shaped like a JWT, an AWS access key or a Vault token wherever
//! it appears. It is deliberately over-eager: a masked harmless value costs little, a leaked
//! token costs a breach.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::bytes::{Captures, Regex};

/// Keys whose values are secrets or credential ids (matched case-insensitively), besides any
/// key that ends in `token`, `secret`, `password`, `passwd`, `private_key` or `api_key`.
const SECRET_KEYS: &[&str] = &[
    "secretAccessKey",
    "accessKeyId",
    "client_token_accessor",
    "accessor",
    "wrapped_accessor",
    "jti",
    "secret_id",
    "authorization",
    "x-api-key",
    "apikey",
    "privatekey",
    "SAMLAssertion",
    "SAMLResponse",
    "webIdentityToken",
    "authentication.kubernetes.io/credential-id",
    "authentication.kubernetes.io/issued-credential-id",
];

/// Key suffixes whose values are secrets (`github_token`, `client_secret`, `db_password`).
const SECRET_SUFFIXES: &str =
    r"[A-Za-z0-9_.-]*(?:token|secret|password|passwd|private_key|api_key)";

fn key_alternatives() -> String {
    let keys: Vec<String> = SECRET_KEYS.iter().map(|k| regex::escape(k)).collect();
    format!("(?i:{}|{SECRET_SUFFIXES})", keys.join("|"))
}

/// A secret key's value: a string, a list of strings, or a bare number or boolean
/// (`"password": 12345`); captured as `v`.
fn keyed_pattern() -> String {
    format!(
        r#""(?:{})"\s*:\s*(?P<v>"(?:[^"\\]|\\.)*"|\[(?:\s*"(?:[^"\\]|\\.)*"\s*,?)*\s*\]|-?[0-9][0-9.eE+-]*|true|false)"#,
        key_alternatives()
    )
}

/// The same keys inside JSON that is itself a string value (`"record":"{\"token\":\"…\"}"`);
/// captured as `e`.
fn escaped_pattern() -> String {
    format!(
        r#"\\"(?:{})\\"\s*:\s*(?P<e>\\"(?:\\\\\\"|[^"\\]|\\[^"])*\\"|-?[0-9][0-9.eE+-]*|true|false)"#,
        key_alternatives()
    )
}

/// Keyed values, escaped keyed values and token shapes in one pass over the text (one scan
/// instead of three: masking runs on every record the lake keeps).
static ONE_PASS: LazyLock<Regex> = LazyLock::new(|| {
    // ASCII only (`-u`): Unicode case folding and word boundaries would slow every scan and
    // nothing masked here is non-ASCII.
    let pattern = format!(
        "(?-u){}|{}|{SHAPED}|{UNIQUE_IDS}",
        keyed_pattern(),
        escaped_pattern()
    );
    Regex::new(&pattern).unwrap_or_else(|e| unreachable!("static redaction pattern: {e}"))
});

/// Token shapes, masked wherever they appear. The platform tokens' prefixes are distinctive
/// enough to match inside a word too (`xghp_…` is still a GitHub token glued to a letter);
/// AWS key ids and legacy Vault tokens need a word boundary.
const SHAPED: &str = concat!(
    // JWTs (header.payload[.signature]).
    r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*)?",
    // AWS access key ids.
    r"|\b(?:AKIA|ASIA)[A-Z0-9]{12,}\b",
    // Vault service, batch and recovery tokens, legacy tokens.
    r"|hv[sbr]\.[A-Za-z0-9_-]{20,}",
    r"|\b[sb]\.[A-Za-z0-9]{24}\b",
    // GitHub tokens (personal, OAuth, user-to-server, server-to-server, refresh; fine-grained).
    r"|gh[pousr]_[A-Za-z0-9]{20,}",
    r"|github_pat_[A-Za-z0-9_]{20,}",
    // GitLab tokens (personal, project/group, deploy, runner, OAuth, CI job, …) and legacy
    // runner registration tokens.
    r"|gl(?:pat|ptt|dt|rt|oas|cbt|imt|ft|soat|ffct|agent)-[A-Za-z0-9_-]{20,}",
    r"|GR1348941[A-Za-z0-9_-]{20,}",
    // Slack tokens.
    r"|xox[abposr]-[A-Za-z0-9-]{10,}",
    // Bearer credentials in a header value.
    r"|(?i:\bbearer)\s+[A-Za-z0-9._~+/=-]{8,}",
    // PEM private keys, whole or cut off (newlines raw or escaped in JSON).
    r"|-----BEGIN[A-Z ]*PRIVATE KEY-----(?s:.*?-----END[A-Z ]*PRIVATE KEY-----|[^\x22]*)",
);

/// AWS unique ids of roles and users: not credentials, but masked in record text all the same
/// (over-eager is cheap there); left in decoded values, where masking only some of them would
/// make one role's values differ from record to record.
const UNIQUE_IDS: &str = r"\b(?:AROA|AIDA)[A-Z0-9]{12,}\b";

/// [`SHAPED`] and [`UNIQUE_IDS`] (paths).
static SHAPED_ONLY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!("(?-u){SHAPED}|{UNIQUE_IDS}"))
        .unwrap_or_else(|e| unreachable!("static redaction pattern: {e}"))
});

/// [`SHAPED`] alone (decoded values).
static VALUE_SHAPES: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!("(?-u){SHAPED}"))
        .unwrap_or_else(|e| unreachable!("static redaction pattern: {e}"))
});

/// The password of credentials embedded in a URL (`https://user:password@host`).
static URL_PASSWORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?-u)(\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@"\\]*):[^@\s/"\\]+@"#)
        .unwrap_or_else(|e| unreachable!("static redaction pattern: {e}"))
});

/// Masks one match: a keyed value (keeping the key) or a token shape.
fn mask_match(c: &Captures) -> Vec<u8> {
    let (value, escaped) = match (c.name("v"), c.name("e")) {
        (Some(v), _) => (v.as_bytes(), false),
        (_, Some(e)) => (e.as_bytes(), true),
        _ => return b"[redacted]".to_vec(),
    };
    let whole = &c[0];
    let mut out = whole[..whole.len() - value.len()].to_vec();
    if value.first() == Some(&b'[') {
        out.extend_from_slice(br#"["[redacted]"]"#);
    } else if escaped {
        out.extend_from_slice(br#"\"[redacted]\""#);
    } else {
        out.extend_from_slice(br#""[redacted]""#);
    }
    out
}

/// Applies one masking pass, keeping the borrowed text when nothing matched.
fn pass<'a>(text: Cow<'a, [u8]>, f: impl FnOnce(&[u8]) -> Cow<'_, [u8]>) -> Cow<'a, [u8]> {
    let out = match f(&text) {
        Cow::Borrowed(_) => None,
        Cow::Owned(v) => Some(v),
    };
    match out {
        Some(v) => Cow::Owned(v),
        None => text,
    }
}

/// The text with secret values masked as `[redacted]`.
pub fn redact(text: &[u8]) -> Cow<'_, [u8]> {
    let t = pass(Cow::Borrowed(text), |x| ONE_PASS.replace_all(x, mask_match));
    // A URL password: the pattern has no literal to search for, so a cheap test first.
    if memchr::memmem::find(&t, b"://").is_some() && memchr::memchr(b'@', &t).is_some() {
        pass(t, |x| {
            URL_PASSWORD.replace_all(x, b"$1:[redacted]@".as_slice())
        })
    } else {
        t
    }
}

/// [`redact`] for text that is a `str` (reject messages, log fields).
pub fn redact_str(text: &str) -> Cow<'_, str> {
    match redact(text.as_bytes()) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        Cow::Owned(v) => Cow::Owned(String::from_utf8_lossy(&v).into_owned()),
    }
}

/// Literal starts of the token shapes worth looking for in short decoded values: a cheap test
/// before the regex, which runs only when one is present.
static SHAPE_STARTS: LazyLock<aho_corasick::AhoCorasick> = LazyLock::new(|| {
    let mut starts = vec![
        "eyJ",
        "AKIA",
        "ASIA",
        "hvs.",
        "hvb.",
        "hvr.",
        "github_pat_",
        "GR1348941",
        "xox",
        "-----BEGIN",
    ];
    starts.extend(["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]);
    starts.extend([
        "glpat-", "glptt-", "gldt-", "glrt-", "gloas-", "glcbt-", "glimt-", "glft-", "glsoat-",
        "glffct-", "glagent-",
    ]);
    // Leftmost-first: the only match kind that lets the searcher use its vectorised
    // prefilter (Teddy) for this many patterns; the standard kind steps the automaton through
    // every byte.
    aho_corasick::AhoCorasick::builder()
        .match_kind(aho_corasick::MatchKind::LeftmostFirst)
        .build(starts)
        .unwrap_or_else(|e| unreachable!("static redaction literals: {e}"))
});

/// True when `text` holds the start of a token shape (one fast scan): records without one need
/// no [`mask_shapes`] of their values.
pub fn may_hold_shapes(text: &str) -> bool {
    SHAPE_STARTS.is_match(text)
}

/// Replaces each token-shaped part of a short value (JWTs, AWS access key ids, Vault, GitHub,
/// GitLab and Slack tokens, PEM keys) by what `replace` makes of it; the value itself when none is
/// there. Legacy Vault tokens (`s.…`) and Bearer values are left to [`redact`]: their
/// starts are too common in names to test cheaply.
pub fn mask_shapes(text: &str, mut replace: impl FnMut(&str) -> String) -> Cow<'_, str> {
    if !SHAPE_STARTS.is_match(text) {
        return Cow::Borrowed(text);
    }
    match VALUE_SHAPES.replace_all(text.as_bytes(), |c: &Captures| {
        replace(&String::from_utf8_lossy(&c[0])).into_bytes()
    }) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        Cow::Owned(v) => Cow::Owned(String::from_utf8_lossy(&v).into_owned()),
    }
}

/// Masks path segments shaped like tokens (Vault paths can embed them).
pub fn redact_path(path: &str) -> Cow<'_, str> {
    if SHAPED_ONLY.is_match(path.as_bytes()) {
        Cow::Owned(
            String::from_utf8_lossy(
                &SHAPED_ONLY.replace_all(path.as_bytes(), b"[redacted]".as_slice()),
            )
            .into_owned(),
        )
    } else {
        Cow::Borrowed(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        String::from_utf8(redact(s.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn token_shapes_in_values_are_replaced_and_plain_names_kept() {
        let masked = mask_shapes(
            "aud:eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln and ghp_1234567890abcdefghijklmnop",
            |s| format!("<{}>", s.len()),
        );
        assert_eq!(masked, "aud:<41> and <30>");
        for plain in [
            "github:octo-org/octo-repo/.github/workflows/deploy.yml",
            "glob",
            "",
        ] {
            assert!(matches!(
                mask_shapes(plain, |_| unreachable!()),
                Cow::Borrowed(_)
            ));
        }
    }

    #[test]
    fn masks_secret_keys_including_lists() {
        let s = r#"{"credentials":{"accessKeyId":"X1","sessionToken":"abc\"def","expiration":"soon"},"user":{"extra":{"authentication.kubernetes.io/credential-id":["JTI=1","JTI=2"]}},"jti" : "j-1"}"#;
        let out = r(s);
        for secret in ["X1", "abc", "def", "JTI=1", "JTI=2", "j-1"] {
            assert!(!out.contains(secret), "{secret} leaked: {out}");
        }
        assert!(out.contains(r#""expiration":"soon""#), "{out}");
        assert!(out.contains(r#""accessKeyId":"[redacted]""#), "{out}");
    }

    #[test]
    fn masks_token_shapes_anywhere() {
        let out = r(
            r#"broken {"note":"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln and ASIAABCDEFGHIJKLMNOP and hvs.CAESIJT2KM9n2KJqg_E267EHJSY0c4NWtTRnBs"#,
        );
        assert!(!out.contains("eyJ"), "{out}");
        assert!(!out.contains("ASIA"), "{out}");
        assert!(!out.contains("hvs."), "{out}");
        assert!(out.starts_with("broken {\"note\":\"[redacted]"), "{out}");
    }

    #[test]
    fn masks_the_shapes_of_other_platforms_tokens() {
        let secrets = [
            "ghp_1234567890abcdefghijklmnopqrstuvwxyzAB",
            "ghs_abcdefghijklmnopqrstuvwxyz0123456789",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
            "glpat-Abcdefghij1234567890",
            "glrt-abcdefghijklmnopqrstuv",
            "GR1348941abcdefghijklmnopqrst",
            "xoxb-1234567890-abcdefghijkl",
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
            "hunter2hunter2",
            "eyJhbGciOiJSUzI1NiJ9xyz",
        ];
        let text = format!(
            concat!(
                r#"{{"a":"{}","b":"token {} here","c":"{}","d":"{}","e":"{}","f":"{}","#,
                r#""g":"{}","h":"Authorization: Bearer {}","k":"-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----","#,
                r#""u":"https://deploy:{}@git.example.com/x.git"}}"#
            ),
            secrets[0],
            secrets[1],
            secrets[2],
            secrets[3],
            secrets[4],
            secrets[5],
            secrets[6],
            secrets[9],
            secrets[7],
            secrets[8],
        );
        let out = r(&text);
        for secret in secrets {
            assert!(!out.contains(secret), "{secret} leaked: {out}");
        }
        assert!(
            out.contains("https://deploy:[redacted]@git.example.com"),
            "{out}"
        );
        // A key cut off before its END line is still masked to the end of the string.
        let out =
            r(r#"{"k":"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC","n":1}"#);
        assert!(!out.contains("MIIEvQ"), "{out}");
        assert!(out.contains(r#""n":1"#), "{out}");
    }

    #[test]
    fn masks_keys_in_any_case_with_any_value_and_inside_escaped_json() {
        let out = r(
            r#"{"Password":12345,"DB_PASSWORD":"pw-1","GITHUB_TOKEN":"t-2","Client_Secret":"s-3","api_key":true,"token_type":"service","token_ttl":3600}"#,
        );
        for secret in ["12345", "pw-1", "t-2", "s-3", "true"] {
            assert!(!out.contains(secret), "{secret} leaked: {out}");
        }
        // Not secrets: a token's type and lifetime stay readable.
        assert!(out.contains(r#""token_type":"service""#), "{out}");
        assert!(out.contains(r#""token_ttl":3600"#), "{out}");
        let out = r(r#"{"record":"{\"client_token\":\"abc\\\"def\",\"jti\":\"j-9\",\"n\":1}"}"#);
        for secret in ["abc", "def", "j-9"] {
            assert!(!out.contains(secret), "{secret} leaked: {out}");
        }
        assert!(out.contains(r#"\"n\":1"#), "{out}");
    }

    #[test]
    fn leaves_ordinary_text_alone() {
        let s = r#"{"eventName":"AssumeRole","tokenPolicies":["default"]}"#;
        assert!(matches!(redact(s.as_bytes()), Cow::Borrowed(_)));
        assert_eq!(redact_path("secret/data/prod/db"), "secret/data/prod/db");
        assert_eq!(
            redact_path("auth/token/lookup/hvs.CAESIJT2KM9n2KJqg_E267EHJSY0c4NWtTRnBs"),
            "auth/token/lookup/[redacted]"
        );
    }
}
