//! Removing secrets from record text before it is written anywhere (the rejects file, dead
//! letters). Rejected records are by definition records nhiwatch could not parse, so this works
//! on text, not on a parsed structure: it masks the values of keys that hold tokens or
//! credential ids, and anything shaped like a JWT, an AWS access key or a Vault token wherever
//! it appears. It is deliberately over-eager: a masked harmless value costs little, a leaked
//! token costs a breach.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::bytes::{Captures, Regex};

/// Keys whose values are secrets or credential ids.
const SECRET_KEYS: &[&str] = &[
    "sessionToken",
    "secretAccessKey",
    "accessKeyId",
    "client_token",
    "client_token_accessor",
    "accessor",
    "wrapped_accessor",
    "token",
    "id_token",
    "access_token",
    "refresh_token",
    "jti",
    "password",
    "client_secret",
    "secret_id",
    "SAMLAssertion",
    "SAMLResponse",
    "webIdentityToken",
    "WebIdentityToken",
    "authentication.kubernetes.io/credential-id",
    "authentication.kubernetes.io/issued-credential-id",
];

static KEYED: LazyLock<Regex> = LazyLock::new(|| {
    let keys: Vec<String> = SECRET_KEYS.iter().map(|k| regex::escape(k)).collect();
    let pattern = format!(
        r#""(?:{})"\s*:\s*("(?:[^"\\]|\\.)*"|\[(?:\s*"(?:[^"\\]|\\.)*"\s*,?)*\s*\])"#,
        keys.join("|")
    );
    Regex::new(&pattern).unwrap_or_else(|e| unreachable!("static redaction pattern: {e}"))
});

static SHAPED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        // JWTs (header.payload[.signature]).
        r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*)?",
        // AWS access key ids.
        r"|\b(?:AKIA|ASIA|AROA|AIDA)[A-Z0-9]{12,}\b",
        // Vault service, batch and recovery tokens, legacy tokens.
        r"|\bhv[sbr]\.[A-Za-z0-9_-]{20,}",
        r"|\b[sb]\.[A-Za-z0-9]{24}\b",
    ))
    .unwrap_or_else(|e| unreachable!("static redaction pattern: {e}"))
});

/// The text with secret values masked as `[redacted]`.
pub fn redact(text: &[u8]) -> Cow<'_, [u8]> {
    let keyed = KEYED.replace_all(text, |c: &Captures| {
        let whole = &c[0];
        let value = &c[1];
        let head = &whole[..whole.len() - value.len()];
        let mut out = head.to_vec();
        if value.first() == Some(&b'[') {
            out.extend_from_slice(br#"["[redacted]"]"#);
        } else {
            out.extend_from_slice(br#""[redacted]""#);
        }
        out
    });
    match SHAPED.replace_all(&keyed, b"[redacted]".as_slice()) {
        Cow::Borrowed(_) => keyed,
        Cow::Owned(v) => Cow::Owned(v),
    }
}

/// Masks path segments shaped like tokens (Vault paths can embed them).
pub fn redact_path(path: &str) -> Cow<'_, str> {
    if SHAPED.is_match(path.as_bytes()) {
        Cow::Owned(
            String::from_utf8_lossy(&SHAPED.replace_all(path.as_bytes(), b"[redacted]".as_slice()))
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
