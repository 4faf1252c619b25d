//! A small HTTP endpoint for `--metrics-addr` (`run` and `replay`): `/metrics` (Prometheus text
//! format, [`super::metrics`]), `/healthz` (the process serves) and `/readyz` (state restored
//! and, for `run`, partitions assigned).
//! Plain `std::net`: one request per connection, answered on its own short-lived thread, so a
//! slow scraper never stalls detection; the request head is bounded in size and time and the
//! connections in number ([`crate::httpd`]).

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

/// Binds `addr` and serves until the process exits. Fails only if the address cannot be bound.
pub fn serve(addr: &str, ready: Arc<AtomicBool>) -> std::io::Result<SocketAddr> {
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
                let _ = std::thread::Builder::new()
                    .name("metrics-conn".into())
                    .spawn(move || {
                        answer(conn, &ready);
                        drop(slot);
                    });
            }
        })?;
    tracing::info!(addr = %local, "metrics endpoint listening");
    Ok(local)
}

fn answer(mut conn: TcpStream, ready: &AtomicBool) {
    let started = Instant::now();
    let head = {
        let mut reader = BufReader::new(&conn);
        httpd::read_head(&mut reader, &conn, &LIMITS, started)
    };
    let line = match head {
        Ok(h) => h.line,
        Err((status, why)) => {
            let _ = write!(
                conn,
                "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{why}\n",
                httpd::reason(status),
                why.len() + 1
            );
            httpd::close_refused(&conn);
            return;
        }
    };
    let target = line.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or(target);
    let (status, ctype, body) = match path {
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
