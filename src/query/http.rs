//! The HTTP SQL endpoint (`sql.http_listen`): `POST /query` with the SQL as the body (or
//! `{"sql": "…"}` as JSON), or `GET /query?sql=…`. The result format is `?format=json|csv|arrow`
//! or the `Accept` header (`application/json`, `text/csv`,
//! `application/vnd.apache.arrow.stream`); JSON (an array of row objects) by default.
//! Authentication: `Authorization: Basic` with `sql.user` / `sql.password`, or `Bearer`
//! with the password. Read-only like every entry point.
//!
//! Plain `std::net` like the metrics endpoint: one request per connection on its own thread,
//! the query run on the SQL runtime.

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::prelude::SessionContext;

use super::Format;
use crate::telemetry::metrics;

/// Largest request body accepted.
const MAX_BODY: usize = 1 << 20;

/// Who may query.
#[derive(Clone)]
pub struct Auth {
    user: String,
    password: String,
}

impl Auth {
    /// The configured user and password.
    pub fn new(user: &str, password: &str) -> Self {
        Auth {
            user: user.into(),
            password: password.into(),
        }
    }

    /// True when the `Authorization` header value proves the password.
    fn check(&self, header: Option<&str>) -> bool {
        let Some(h) = header else {
            return false;
        };
        let (scheme, value) = h.trim().split_once(' ').unwrap_or((h, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return crate::httpd::same(value.trim().as_bytes(), self.password.as_bytes());
        }
        if scheme.eq_ignore_ascii_case("basic")
            && let Some(raw) = base64_decode(value.trim())
            && let Some(colon) = raw.iter().position(|&b| b == b':')
        {
            let (u, p) = (&raw[..colon], &raw[colon + 1..]);
            // Both compared, so timing does not tell which was wrong.
            return crate::httpd::same(u, self.user.as_bytes())
                & crate::httpd::same(p, self.password.as_bytes());
        }
        false
    }
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Binds `addr` and serves until the process exits.
pub fn serve(
    addr: &str,
    rt: tokio::runtime::Handle,
    ctx: Arc<SessionContext>,
    auth: Auth,
    caps: super::Caps,
    tls: Option<Arc<crate::tls::ServerConfig>>,
) -> Result<SocketAddr, super::Error> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| super::Error::Setup(format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| super::Error::Setup(e.to_string()))?;
    metrics::get().declare_query("http");
    let tls_on = tls.is_some();
    std::thread::Builder::new()
        .name("sql-http".into())
        .spawn(move || {
            let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            for mut conn in listener.incoming().flatten() {
                let Some(slot) = crate::httpd::admit(&mut conn, &active, &LIMITS) else {
                    metrics::get().query_done("http", "refused", 0.0);
                    continue;
                };
                let (rt, ctx, auth) = (rt.clone(), ctx.clone(), auth.clone());
                let tls = tls.clone();
                let _ = std::thread::Builder::new()
                    .name("sql-http-conn".into())
                    .spawn(move || {
                        match crate::httpd::Conn::new(conn, tls.as_ref()) {
                            Ok(conn) => answer(conn, &rt, &ctx, &auth, caps),
                            Err(e) => tracing::debug!(error = %e, "sql connection not set up"),
                        }
                        drop(slot);
                    });
            }
        })
        .map_err(|e| super::Error::Setup(e.to_string()))?;
    tracing::info!(addr = %local, tls = tls_on, "http sql endpoint listening");
    Ok(local)
}

struct Request {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    authorization: Option<String>,
    accept: Option<String>,
    json_body: bool,
    body: Vec<u8>,
}

/// A query request: 16 KiB of head, the whole request (body included) within 30 s, 16
/// connections at once.
const LIMITS: crate::httpd::Limits = crate::httpd::Limits {
    max_head: 16 << 10,
    deadline: Duration::from_secs(30),
    max_connections: 16,
};

fn read_request(conn: &mut crate::httpd::Conn) -> Result<Request, (u16, String)> {
    let started = std::time::Instant::now();
    // A second handle on the socket sets the deadlines while the reader holds the stream.
    let ctl = conn
        .tcp()
        .try_clone()
        .map_err(|e| (500, format!("cannot set up the connection: {e}")))?;
    let mut reader = BufReader::new(conn);
    let head = crate::httpd::read_head(&mut reader, &ctl, &LIMITS, started)?;
    let line = head.line;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let (path, qs) = target.split_once('?').unwrap_or((&target, ""));
    let query = qs
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let mut req = Request {
        method,
        path: path.to_string(),
        query,
        authorization: None,
        accept: None,
        json_body: false,
        body: Vec::new(),
    };
    let mut length: Option<usize> = None;
    for (name, value) in head.headers {
        match name.as_str() {
            "authorization" => req.authorization = Some(value),
            "accept" => req.accept = Some(value),
            "content-type" => req.json_body = value.starts_with("application/json"),
            "content-length" => {
                length = Some(
                    value
                        .parse()
                        .map_err(|_| (400, format!("bad Content-Length {value:?}")))?,
                )
            }
            "transfer-encoding" => {
                return Err((411, "send the body with a Content-Length".into()));
            }
            _ => {}
        }
    }
    if let Some(n) = length {
        if n > MAX_BODY {
            return Err((413, format!("body of {n} bytes; at most {MAX_BODY}")));
        }
        req.body.resize(n, 0);
        let left = crate::httpd::remaining(started, &LIMITS)
            .ok_or((408, "request too slow".to_string()))?;
        let _ = ctl.set_read_timeout(Some(left));
        reader
            .read_exact(&mut req.body)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    (408, "request too slow".to_string())
                }
                _ => (400, format!("body shorter than Content-Length: {e}")),
            })?;
    }
    Ok(req)
}

fn respond(conn: &mut impl Write, status: u16, ctype: &str, extra: &str, body: &[u8]) {
    let reason = crate::httpd::reason(status);
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
}

fn error(conn: &mut impl Write, status: u16, message: &str) {
    let body = serde_json::json!({ "error": message }).to_string();
    let extra = if status == 401 {
        "WWW-Authenticate: Basic realm=\"nhiwatch\"\r\n"
    } else {
        ""
    };
    respond(conn, status, "application/json", extra, body.as_bytes());
}

fn format_of(req: &Request) -> Result<Format, String> {
    if let Some((_, f)) = req.query.iter().find(|(k, _)| k == "format") {
        return match f.as_str() {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            "arrow" => Ok(Format::Arrow),
            other => Err(format!("unknown format {other:?} (json, csv, arrow)")),
        };
    }
    let accept = req.accept.as_deref().unwrap_or("");
    Ok(if accept.contains("text/csv") {
        Format::Csv
    } else if accept.contains("application/vnd.apache.arrow.stream") {
        Format::Arrow
    } else {
        Format::Json
    })
}

fn answer(
    mut conn: crate::httpd::Conn,
    rt: &tokio::runtime::Handle,
    ctx: &SessionContext,
    auth: &Auth,
    caps: super::Caps,
) {
    let req = match read_request(&mut conn) {
        Ok(r) => r,
        Err((status, msg)) => {
            error(&mut conn, status, &msg);
            crate::httpd::close_refused(&mut conn);
            return;
        }
    };
    if req.path != "/query" {
        return error(&mut conn, 404, "not found; the endpoint is /query");
    }
    if req.method != "GET" && req.method != "POST" {
        return error(&mut conn, 405, "use GET or POST");
    }
    if !auth.check(req.authorization.as_deref()) {
        metrics::get().query_done("http", "refused", 0.0);
        tracing::warn!(peer = ?conn.tcp().peer_addr().ok(), "sql request refused: bad or missing credentials");
        return error(&mut conn, 401, "authentication required");
    }
    let format = match format_of(&req) {
        Ok(f) => f,
        Err(msg) => return error(&mut conn, 400, &msg),
    };
    let sql = if let Some((_, q)) = req.query.iter().find(|(k, _)| k == "sql") {
        q.clone()
    } else if req.json_body {
        #[derive(serde::Deserialize)]
        struct Body {
            sql: String,
        }
        match serde_json::from_slice::<Body>(&req.body) {
            Ok(b) => b.sql,
            Err(e) => return error(&mut conn, 400, &format!("body: {e}")),
        }
    } else {
        String::from_utf8_lossy(&req.body).into_owned()
    };
    if sql.trim().is_empty() {
        return error(&mut conn, 400, "no SQL: send it as the body or ?sql=");
    }
    let started = Instant::now();
    let result = rt.block_on(super::execute_capped(
        ctx,
        &sql,
        caps.max_rows,
        caps.max_bytes,
        caps.timeout,
    ));
    let secs = started.elapsed().as_secs_f64();
    let (schema, batches, cut) = match result {
        Ok(r) => r,
        Err(e) => {
            metrics::get().query_done("http", e.outcome(), secs);
            let status = match e {
                super::Error::ReadOnly(_) => 403,
                super::Error::Timeout(_) => 504,
                _ => 400,
            };
            return error(&mut conn, status, &e.to_string());
        }
    };
    metrics::get().query_done("http", "ok", secs);
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let truncated = cut != super::Cut::No;
    let mut body = Vec::new();
    let written = match format {
        Format::Json => {
            let mut w = datafusion::arrow::json::ArrayWriter::new(&mut body);
            let r = batches.iter().try_for_each(|b| w.write(b));
            r.and_then(|()| w.finish())
                .map_err(|e| super::Error::Output(e.to_string()))
        }
        f => super::write(f, &schema, &batches, &mut body),
    };
    if let Err(e) = written {
        return error(&mut conn, 500, &e.to_string());
    }
    if format == Format::Json && body.is_empty() {
        body.extend_from_slice(b"[]");
    }
    let ctype = match format {
        Format::Csv => "text/csv; charset=utf-8",
        Format::Arrow => "application/vnd.apache.arrow.stream",
        _ => "application/json",
    };
    let by = match cut {
        super::Cut::Rows => "X-Nhiwatch-Truncated-By: max_rows\r\n",
        super::Cut::Bytes => "X-Nhiwatch-Truncated-By: max_result_bytes\r\n",
        super::Cut::No => "",
    };
    let extra = format!("X-Nhiwatch-Rows: {rows}\r\nX-Nhiwatch-Truncated: {truncated}\r\n{by}");
    respond(&mut conn, 200, ctype, &extra, &body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_and_bearer() {
        let a = Auth::new("nhiwatch", "s3cret");
        // base64("nhiwatch:s3cret")
        assert!(a.check(Some("Basic bmhpd2F0Y2g6czNjcmV0")));
        assert!(a.check(Some("Bearer s3cret")));
        assert!(!a.check(Some("Bearer s3cre")));
        assert!(!a.check(Some("Bearer s3crets")));
        // base64("nhiwatch:wrong")
        assert!(!a.check(Some("Basic bmhpd2F0Y2g6d3Jvbmc=")));
        assert!(!a.check(None));
        assert!(!a.check(Some("Digest x")));
    }

    #[test]
    fn decodes_query_strings() {
        assert_eq!(percent_decode("a+b%3D1%25"), "a b=1%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
