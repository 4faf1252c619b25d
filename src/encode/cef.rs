//! ArcSight Common Event Format, version 0:
//! `CEF:0|Vendor|Product|Version|Signature ID|Name|Severity|Extension`.
//!
//! Escaping follows the CEF specification: in header fields a backslash and a pipe are
//! escaped (`\\`, `\|`); in extension values a backslash and an equals sign are (`\\`, `\=`),
//! and line breaks become the two-character sequences `\n` and `\r`. Header fields cannot
//! hold a line break at all, so one becomes a space there. Pipes are literal in extensions.

use std::fmt::Write as _;

use super::{VERSION, runner_host, runner_ip, runner_label};
use crate::alert::Alert;
use crate::alert::Severity;

/// Longest value of a `csN` custom string (the CEF dictionary's limit).
const CS_MAX: usize = 4000;

/// CEF severity, 0–10.
fn severity(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Low => 3,
        Severity::Medium => 5,
        Severity::High => 8,
        Severity::Critical => 10,
    }
}

/// A header field, escaped.
pub fn escape_header(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// An extension value, escaped.
pub fn escape_extension(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Writes the CEF line of an alert.
pub(super) fn write(a: &Alert, host: &str, out: &mut Vec<u8>) {
    let mut s = String::with_capacity(1024);
    let _ = write!(
        s,
        "CEF:0|nhiwatch|nhiwatch|{}|{}|{}|{}|",
        escape_header(VERSION),
        escape_header(&a.detector),
        escape_header(&a.reason),
        severity(a.severity),
    );
    let mut ext: Vec<(&str, String)> = vec![
        ("rt", (a.event_time.as_micros() / 1000).to_string()),
        ("externalId", a.id.clone()),
        ("msg", a.summary.clone()),
        ("suser", a.identity.clone()),
        ("cat", a.source.as_str().to_string()),
        ("act", a.action.as_str().to_string()),
        ("dvchost", host.to_string()),
        ("cs2Label", "eventId".into()),
        ("cs2", a.event_id.clone()),
    ];
    if let Some(env) = &a.environment {
        ext.push(("cs1Label", "environment".into()));
        ext.push(("cs1", env.clone()));
    }
    if let Some(c) = &a.credential {
        ext.push(("cs3Label", "credentialFingerprint".into()));
        ext.push(("cs3", c.clone()));
    }
    if let Some(r) = runner_label(a) {
        ext.push(("cs4Label", "runner".into()));
        ext.push(("cs4", r));
    }
    if let Some(ip) = runner_ip(a) {
        ext.push(("src", ip.to_string()));
    }
    if let Some(h) = runner_host(a) {
        ext.push(("shost", h.to_string()));
    }
    if let Some(agent) = &a.runner.agent {
        ext.push(("requestClientApplication", agent.clone()));
    }
    let evidence = serde_json::to_string(&a.evidence).unwrap_or_default();
    ext.push(("cs6Label", "evidence".into()));
    ext.push(("cs6", cut(&evidence, CS_MAX).to_string()));
    for (i, (k, v)) in ext.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(k);
        s.push('=');
        s.push_str(&escape_extension(v));
    }
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_escaping() {
        assert_eq!(escape_header(r"a|b\c"), r"a\|b\\c");
        assert_eq!(
            escape_header("x=y"),
            "x=y",
            "equals is literal in the header"
        );
        assert_eq!(escape_header("two\nlines\r\n"), "two lines  ");
        assert_eq!(escape_header(""), "");
    }

    #[test]
    fn extension_escaping() {
        assert_eq!(escape_extension("a=b"), r"a\=b");
        assert_eq!(escape_extension(r"c:\path"), r"c:\\path");
        assert_eq!(
            escape_extension("a|b"),
            "a|b",
            "pipes are literal in extensions"
        );
        assert_eq!(escape_extension("one\ntwo"), r"one\ntwo");
        assert_eq!(escape_extension("one\r\ntwo"), r"one\r\ntwo");
        assert_eq!(escape_extension("one\rtwo"), r"one\rtwo");
        assert_eq!(escape_extension(r"\="), r"\\\=");
        assert_eq!(escape_extension("ünïcode ok"), "ünïcode ok");
    }

    #[test]
    fn long_evidence_is_cut_on_a_character_boundary() {
        let s = "é".repeat(3000);
        let c = cut(&s, CS_MAX);
        assert!(c.len() <= CS_MAX && c.len() >= CS_MAX - 1);
        assert_eq!(cut("short", CS_MAX), "short");
    }

    #[test]
    fn whole_line() {
        let a = crate::encode::tests::sample();
        let mut out = Vec::new();
        write(&a, "det-1", &mut out);
        let line = String::from_utf8(out).unwrap();
        assert!(
            line.starts_with(&format!(
                "CEF:0|nhiwatch|nhiwatch|{VERSION}|cross_env_reuse|first production mint \\| new|10|rt=1774869964250 "
            )),
            "{line}"
        );
        assert!(
            line.contains(r"suser=gitlab:acme|platform/search\=ci\\x "),
            "{line}"
        );
        assert!(
            line.contains(
                r"msg=minted a production credential \= first time;\nonly staging before "
            ),
            "{line}"
        );
        assert!(line.contains("src=10.0.2.124 "), "{line}");
        assert!(
            line.contains(r#"cs6={"known_environments":["staging"],"mints":18}"#),
            "{line}"
        );
    }
}
