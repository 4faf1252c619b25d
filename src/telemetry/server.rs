//! A small HTTP endpoint for `--metrics-addr` (`run` and `replay`): `/metrics` (Prometheus text
//! format, [`super::metrics`]), `/healthz` (the process serves) and `/readyz` (state restored
//! and, for `run`, partitions assigned).
//! Plain `std::net`: one request per connection, answered on its own short-lived thread, so a
//! slow scraper never stalls detection; the request head is bounded in size and time and the
//! connections in number ([`crate::httpd`]). With a token ([`metrics_token`]), `/metrics`
//! answers only requests that carry it (`Authorization: Bearer …`); the health probes stay
//! open (a kubelet's probe carries no credentials, and they tell nothing).

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::httpd::{self, Limits};

/// A scrape is a short GET: 8 KiB of head within 5 s, 32 at once.
const LIMITS: Limits = Limits {
    max_head: 8 << 10,
    deadline: Duration::from_secs(5),
    max_connections: 32,
};

/// The variable holding the bearer token `/metrics` asks for (`run.metrics_token_file` wins).
pub const METRICS_TOKEN_ENV: &str = "NHIWATCH_METRICS_TOKEN";

/// The token scrapes must present: the first line of `file` (config `run.metrics_token_file`)
/// or the value of `NHIWATCH_METRICS_TOKEN`; `None` (open) when neither is set. At least 16
/// characters; errors name the key, never the value.
pub fn metrics_token(
    file: Option<&std::path::Path>,
) -> Result<Option<String>, crate::error::ConfigError> {
    let (key, token) = match file {
        Some(f) => {
            let text =
                std::fs::read_to_string(f).map_err(|e| crate::error::ConfigError::Invalid {
                    key: "run.metrics_token_file".into(),
                    message: format!("cannot read {}: {e}", f.display()),
                })?;
            (
                "run.metrics_token_file",
                text.lines().next().unwrap_or("").trim().to_string(),
            )
        }
        None => match std::env::var(METRICS_TOKEN_ENV) {
            Ok(v) => (METRICS_TOKEN_ENV, v.trim().to_string()),
            Err(_) => return Ok(None),
        },
    };
    if token.chars().count() < 16 {
        return Err(crate::error::ConfigError::Invalid {
            key: key.into(),
            message: "the metrics token must be at least 16 characters".into(),
        });
    }
    Ok(Some(token))
}

/// Binds `addr` and serves until the process exits; with a `token`, `/metrics` asks for it.
/// Fails only if the address cannot be bound.
pub fn serve(
    addr: &str,
    ready: Arc<AtomicBool>,
    token: Option<String>,
) -> std::io::Result<SocketAddr> {
    let token: Option<Arc<str>> = token.map(Into::into);
    let token_state = if token.is_some() { "required" } else { "none" };
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let active = Arc::new(AtomicUsize::new(0));
            for mut conn in listener.incoming().flatten() {
                let Some(slot) = httpd::admit(&mut conn, &active, &LIMITS) else {
                    continue;
                };
                let ready = ready.clone();
                let token = token.clone();
                let _ = std::thread::Builder::new()
                    .name("metrics-conn".into())
                    .spawn(move || {
                        answer(conn, &ready, token.as_deref());
                        drop(slot);
                    });
            }
        })?;
    tracing::info!(addr = %local, token = token_state, "metrics endpoint listening");
    Ok(local)
}

/// True when a request may read `/metrics`: no token is configured, or it presents it.
fn authorized(token: Option<&str>, header: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let Some((scheme, value)) = header.map(str::trim).and_then(|h| h.split_once(' ')) else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && httpd::same(value.trim().as_bytes(), token.as_bytes())
}

fn answer(conn: TcpStream, ready: &AtomicBool, token: Option<&str>) {
    let started = Instant::now();
    let head = {
        let mut reader = BufReader::new(&conn);
        httpd::read_head(&mut reader, &conn, &LIMITS, started)
    };
    let mut conn = httpd::Conn::Plain(conn);
    let head = match head {
        Ok(h) => h,
        Err((status, why)) => {
            let _ = write!(
                conn,
                "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{why}\n",
                httpd::reason(status),
                why.len() + 1
            );
            httpd::close_refused(&mut conn);
            return;
        }
    };
    let target = head.line.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or(target);
    let (status, ctype, body) = match path {
        "/metrics" if !authorized(token, head.header("authorization")) => {
            let body = "a bearer token is required (run.metrics_token_file)\n";
            let _ = write!(
                conn,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"nhiwatch metrics\"\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            return;
        }
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            super::metrics::get().encode(),
        ),
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
        "/readyz" if ready.load(Ordering::Acquire) => ("200 OK", "text/plain", "ready\n".into()),
        "/readyz" => (
            "503 Service Unavailable",
            "text/plain",
            "not ready: waiting for partitions and state\n".into(),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".into()),
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}
