//! HTTP sink: POSTs batches of encoded alerts to Splunk HEC, Elasticsearch `_bulk` or any
//! webhook, optionally gzipped, over TLS with the system's roots or a configured CA.
//!
//! Responses decide what happens to a batch: 2xx delivered; 408, 429, 5xx and connection
//! errors are retried (the alerts wait in the spool); 401, 403, 404 and 407 are retried too
//! but logged as errors, because a fixed token or URL will make them succeed; any other 4xx
//! means the receiver refuses the content, so the batch is split to find the record it
//! refuses, which is set aside. Elasticsearch answers 200 with per-item errors: items
//! refused with a 4xx are set aside, 409 (the `_id` exists: an earlier attempt got through)
//! counts as delivered, and a 429 or 5xx item makes the whole batch retry (idempotent by `_id`).

use std::io::Write;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;

use super::spool::Record;
use super::{Failure, Framing, SinkConfig, Transport};
use crate::encode::Encoding;

/// Delivers to one HTTP endpoint.
pub struct Http {
    agent: ureq::Agent,
    url: String,
    authorization: Option<String>,
    headers: Vec<(String, String)>,
    framing: Framing,
    gzip: bool,
}

impl Http {
    /// A transport for an http sink.
    pub fn new(c: &SinkConfig) -> Result<Http, String> {
        let mut tls = ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::NativeTls);
        tls = match &c.ca_file {
            Some(ca) => {
                let pem = std::fs::read(ca)
                    .map_err(|e| format!("cannot read ca_file {}: {e}", ca.display()))?;
                let mut certs = Vec::new();
                for item in ureq::tls::parse_pem(&pem) {
                    if let Ok(ureq::tls::PemItem::Certificate(cert)) = item {
                        certs.push(cert);
                    }
                }
                if certs.is_empty() {
                    return Err(format!("ca_file {} holds no PEM certificate", ca.display()));
                }
                tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
            }
            None => tls.root_certs(ureq::tls::RootCerts::PlatformVerifier),
        };
        let timeout = c.timeout();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout.min(Duration::from_secs(10))))
            .tls_config(tls.build())
            .user_agent(format!("nhiwatch/{}", crate::encode::VERSION))
            .build();
        let scheme = c.token_scheme.clone().unwrap_or_else(|| {
            if c.encoding() == Encoding::Hec {
                "Splunk".into()
            } else {
                "Bearer".into()
            }
        });
        Ok(Http {
            agent: ureq::Agent::new_with_config(config),
            url: c.url.clone().unwrap_or_default(),
            authorization: c.token().map(|t| format!("{scheme} {t}")),
            headers: c
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            framing: c.framing.unwrap_or_default(),
            gzip: c.gzip,
        })
    }

    /// The request body of a batch, before compression.
    fn body(&self, batch: &[Record]) -> Vec<u8> {
        let mut b = Vec::with_capacity(batch.iter().map(|r| r.payload.len() + 64).sum());
        match self.framing {
            Framing::Ndjson => {
                for r in batch {
                    b.extend_from_slice(&r.payload);
                    b.push(b'\n');
                }
            }
            Framing::JsonArray => {
                b.push(b'[');
                for (i, r) in batch.iter().enumerate() {
                    if i > 0 {
                        b.push(b',');
                    }
                    b.extend_from_slice(&r.payload);
                }
                b.push(b']');
            }
            Framing::ElasticsearchBulk => {
                for r in batch {
                    let action = match document_id(&r.payload) {
                        Some(id) => serde_json::json!({ "create": { "_id": id } }),
                        None => serde_json::json!({ "create": {} }),
                    };
                    b.extend_from_slice(action.to_string().as_bytes());
                    b.push(b'\n');
                    b.extend_from_slice(&r.payload);
                    b.push(b'\n');
                }
            }
        }
        b
    }

    fn content_type(&self) -> &'static str {
        match self.framing {
            Framing::Ndjson | Framing::ElasticsearchBulk => "application/x-ndjson",
            Framing::JsonArray => "application/json",
        }
    }
}

/// The alert id inside an encoded alert (nhiwatch JSON `id`, OCSF `finding_info.uid`, ECS
/// `event.id`), used as the Elasticsearch `_id`.
fn document_id(payload: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    [
        v.pointer("/finding_info/uid"),
        v.pointer("/event/id"),
        v.pointer("/id"),
    ]
    .into_iter()
    .flatten()
    .find_map(|x| x.as_str().map(str::to_string))
}

/// Classifies a status that is not 2xx.
fn classify(status: u16, body: &str) -> Failure {
    let detail = format!("HTTP {status}: {}", snippet(body));
    match status {
        408 | 429 | 500..=599 => Failure::Transient(detail),
        401 | 403 | 404 | 407 => Failure::Misconfigured(detail),
        _ => Failure::Refused(detail),
    }
}

/// The start of a response body, on one line, for logs.
fn snippet(body: &str) -> String {
    let one: String = body.chars().take(300).collect();
    one.replace(['\n', '\r'], " ")
}

/// Items of an Elasticsearch bulk response that failed: `Ok(refused)` or `Err` when one must
/// be retried.
fn bulk_items(body: &str) -> Result<Vec<(usize, String)>, Failure> {
    let v: serde_json::Value = match serde_json::from_str(body) {
        Ok(v) => v,
        // Not a bulk response (a proxy's page): the status already said 2xx.
        Err(_) => return Ok(Vec::new()),
    };
    if v.get("errors").and_then(|e| e.as_bool()) != Some(true) {
        return Ok(Vec::new());
    }
    let mut refused = Vec::new();
    let items = v
        .get("items")
        .and_then(|i| i.as_array())
        .cloned()
        .unwrap_or_default();
    for (i, item) in items.iter().enumerate() {
        let Some(op) = item.as_object().and_then(|o| o.values().next()) else {
            continue;
        };
        let status = op.get("status").and_then(|s| s.as_u64()).unwrap_or(200) as u16;
        let why = op.get("error").map(|e| e.to_string()).unwrap_or_default();
        match status {
            200..=299 | 409 => {}
            408 | 429 | 500..=599 => {
                return Err(Failure::Transient(format!(
                    "bulk item {i}: HTTP {status}: {}",
                    snippet(&why)
                )));
            }
            _ => refused.push((i, format!("bulk item HTTP {status}: {}", snippet(&why)))),
        }
    }
    Ok(refused)
}

impl Transport for Http {
    fn send(&mut self, batch: &[Record]) -> Result<Vec<(usize, String)>, Failure> {
        let body = self.body(batch);
        let body = if self.gzip {
            let mut gz = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
            gz.write_all(&body)
                .and_then(|()| gz.finish())
                .map_err(|e| Failure::Transient(format!("gzip: {e}")))?
        } else {
            body
        };
        let mut req = self
            .agent
            .post(&self.url)
            .header("Content-Type", self.content_type());
        if self.gzip {
            req = req.header("Content-Encoding", "gzip");
        }
        if let Some(a) = &self.authorization {
            req = req.header("Authorization", a);
        }
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let mut resp = req
            .send(&body[..])
            .map_err(|e| Failure::Transient(format!("POST {}: {e}", self.url)))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(classify(status, &text));
        }
        if self.framing == Framing::ElasticsearchBulk {
            return bulk_items(&text);
        }
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(p: &str) -> Record {
        Record {
            seq: 0,
            arrival: 0,
            payload: p.as_bytes().to_vec(),
        }
    }

    fn sink(extra: &str) -> Http {
        let c: SinkConfig = toml::from_str(&format!(
            "type = \"http\"\nurl = \"http://127.0.0.1:1/x\"\n{extra}"
        ))
        .unwrap();
        Http::new(&c).unwrap()
    }

    #[test]
    fn status_classes() {
        assert!(matches!(classify(503, ""), Failure::Transient(_)));
        assert!(matches!(classify(429, ""), Failure::Transient(_)));
        assert!(
            matches!(classify(403, "{\"text\":\"Invalid token\",\"code\":4}"), Failure::Misconfigured(m) if m.contains("Invalid token"))
        );
        assert!(matches!(
            classify(400, "{\"text\":\"Invalid data format\",\"code\":6}"),
            Failure::Refused(_)
        ));
        assert!(matches!(classify(413, ""), Failure::Refused(_)));
    }

    #[test]
    fn framings() {
        let b = [rec(r#"{"id":"a-1"}"#), rec(r#"{"id":"a-2"}"#)];
        assert_eq!(sink("").body(&b), b"{\"id\":\"a-1\"}\n{\"id\":\"a-2\"}\n");
        assert_eq!(
            sink("framing = \"json_array\"").body(&b),
            br#"[{"id":"a-1"},{"id":"a-2"}]"#
        );
        let bulk = String::from_utf8(sink("framing = \"elasticsearch_bulk\"").body(&b)).unwrap();
        assert_eq!(
            bulk,
            "{\"create\":{\"_id\":\"a-1\"}}\n{\"id\":\"a-1\"}\n{\"create\":{\"_id\":\"a-2\"}}\n{\"id\":\"a-2\"}\n"
        );
        assert_eq!(
            document_id(br#"{"finding_info":{"uid":"a-9"},"metadata":{"uid":"a-9"}}"#).as_deref(),
            Some("a-9")
        );
        assert_eq!(
            document_id(br#"{"event":{"id":"a-8"}}"#).as_deref(),
            Some("a-8")
        );
    }

    #[test]
    fn bulk_responses() {
        assert!(
            bulk_items(r#"{"errors":false,"items":[]}"#)
                .unwrap()
                .is_empty()
        );
        let r = bulk_items(r#"{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":409}},{"create":{"status":400,"error":{"type":"mapper_parsing_exception"}}}]}"#).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, 2);
        assert!(r[0].1.contains("mapper_parsing_exception"));
        assert!(bulk_items(r#"{"errors":true,"items":[{"create":{"status":429}}]}"#).is_err());
    }

    #[test]
    fn authorization_scheme_follows_the_encoding() {
        assert_eq!(
            sink("encoding = \"hec\"\ntoken = \"t0k\"")
                .authorization
                .as_deref(),
            Some("Splunk t0k")
        );
        assert_eq!(
            sink("token = \"t0k\"").authorization.as_deref(),
            Some("Bearer t0k")
        );
        assert_eq!(sink("").authorization, None);
    }
}
