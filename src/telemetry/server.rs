//! A small HTTP endpoint for `--metrics-addr` (`run` and `replay`): `/metrics` (Prometheus text
//! format, [`super::metrics`]), `/healthz` (the process serves) and `/readyz` (state restored
//! and, for `run`, partitions assigned).
//! Plain `std::net`: one request per connection, answered on its own short-lived thread, so a
//! slow scraper never stalls detection.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Binds `addr` and serves until the process exits. Fails only if the address cannot be bound.
pub fn serve(addr: &str, ready: Arc<AtomicBool>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let ready = ready.clone();
                let _ = std::thread::Builder::new()
                    .name("metrics-conn".into())
                    .spawn(move || answer(conn, &ready));
            }
        })?;
    tracing::info!(addr = %local, "metrics endpoint listening");
    Ok(local)
}

fn answer(mut conn: TcpStream, ready: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // Drain the headers so the client sees a clean close.
    let mut h = String::new();
    while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
        h.clear();
    }
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
