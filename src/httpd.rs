//! Bounds for the two small HTTP/1.1 endpoints (`--metrics-addr`, `sql.http_listen`): each
//! answers one request per connection on a thread of its own, so without bounds a client
//! could make it hold any amount of memory (a request line without an end) or any number of
//! threads (connections that never finish their request). A request head must arrive whole
//! within a deadline and a size, and connections beyond a limit are answered 503 at once.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_rustls::rustls;

/// The bounds of one endpoint.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The request line and the headers together, bytes.
    pub max_head: usize,
    /// The whole request (head and body) must arrive within this.
    pub deadline: Duration,
    /// Connections answered at once; more are refused with 503.
    pub max_connections: usize,
}

/// A connection admitted under [`Limits::max_connections`]; frees its place when dropped.
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Admits a connection, or answers it 503 and closes it (without a thread of its own).
pub fn admit(conn: &mut TcpStream, active: &Arc<AtomicUsize>, limits: &Limits) -> Option<Slot> {
    if active.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
        active.fetch_sub(1, Ordering::AcqRel);
        let _ = conn.set_write_timeout(Some(Duration::from_millis(200)));
        let _ = conn.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 18\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many requests\n",
        );
        return None;
    }
    Some(Slot(active.clone()))
}

/// An accepted connection, in the clear or under TLS (when the endpoint has a certificate).
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP; the handshake runs on the first read, within the request deadline.
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Conn {
    /// Wraps an accepted socket, under TLS when `tls` is set.
    pub fn new(tcp: TcpStream, tls: Option<&Arc<rustls::ServerConfig>>) -> std::io::Result<Conn> {
        // A client that stops reading must not hold the thread for ever.
        tcp.set_write_timeout(Some(Duration::from_secs(60)))?;
        Ok(match tls {
            None => Conn::Plain(tcp),
            Some(config) => {
                let session =
                    rustls::ServerConnection::new(config.clone()).map_err(std::io::Error::other)?;
                Conn::Tls(Box::new(rustls::StreamOwned::new(session, tcp)))
            }
        })
    }

    /// The socket under it (timeouts, shutdown, the peer's address).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

impl Drop for Conn {
    /// A TLS connection ends with a close_notify, so the client knows the response is whole.
    fn drop(&mut self) {
        if let Conn::Tls(s) = self
            && !s.conn.is_handshaking()
        {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    }
}

/// A request line and its headers (names lower-cased).
#[derive(Debug)]
pub struct Head {
    /// `GET /metrics HTTP/1.1`.
    pub line: String,
    /// Header names (lower case) and values (trimmed).
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a request head within `limits`: the status to answer and why when it does not fit
/// (431 too large, 408 too slow, 400 unreadable). `started` is when the connection was
/// accepted; the body, if any, is read by the caller within the rest of the deadline (see
/// [`remaining`]).
pub fn read_head(
    reader: &mut impl BufRead,
    conn: &TcpStream,
    limits: &Limits,
    started: Instant,
) -> Result<Head, (u16, String)> {
    let mut used = 0usize;
    let mut next_line = |reader: &mut dyn BufRead| -> Result<String, (u16, String)> {
        let left = remaining(started, limits).ok_or((408, "request too slow".to_string()))?;
        let _ = conn.set_read_timeout(Some(left));
        let room = limits.max_head.saturating_sub(used);
        let mut buf = Vec::new();
        let n = reader
            .take(room as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    (408, "request too slow".to_string())
                }
                _ => (400, format!("cannot read the request: {e}")),
            })?;
        used += n;
        if used > limits.max_head {
            return Err((
                431,
                format!("request head larger than {} bytes", limits.max_head),
            ));
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    let line = next_line(reader)?;
    let mut headers = Vec::new();
    loop {
        let h = next_line(reader)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    Ok(Head { line, headers })
}

/// Closes a connection whose request was refused before it was read whole: the response is
/// sent, then up to 1 MiB or 500 ms of what the client still sends is read and dropped, so
/// the close does not reset the connection before the client has read the response.
pub fn close_refused(conn: &mut Conn) {
    if let Conn::Tls(s) = conn
        && !s.conn.is_handshaking()
    {
        s.conn.send_close_notify();
        let _ = s.flush();
    }
    let conn = conn.tcp();
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
    let until = Instant::now() + Duration::from_millis(500);
    let mut sink = [0u8; 16 << 10];
    let mut left = 1usize << 20;
    let mut r = conn;
    while left > 0 && Instant::now() < until {
        match r.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// The reason phrase of a status the endpoints answer with.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Internal Server Error",
    }
}

/// What is left of a request's deadline, if anything.
pub fn remaining(started: Instant, limits: &Limits) -> Option<Duration> {
    limits
        .deadline
        .checked_sub(started.elapsed())
        .filter(|d| !d.is_zero())
}

/// Compares two secrets without an early exit on the first differing byte, so the time taken
/// does not tell how much of a guess was right.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;
    use std::net::TcpListener;

    const LIMITS: Limits = Limits {
        max_head: 1024,
        deadline: Duration::from_millis(600),
        max_connections: 2,
    };

    /// A connected pair: (client, server side).
    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (s, _) = l.accept().expect("accept");
        (c, s)
    }

    fn head_of(client_sends: &[u8], close: bool) -> Result<Head, (u16, String)> {
        let (mut c, s) = pair();
        c.write_all(client_sends).expect("send");
        if close {
            c.shutdown(std::net::Shutdown::Write).expect("shutdown");
        }
        let mut r = BufReader::new(&s);
        read_head(&mut r, &s, &LIMITS, Instant::now())
    }

    #[test]
    fn a_head_within_bounds_is_read_with_lower_case_names() {
        let h = head_of(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n",
            false,
        )
        .expect("head");
        assert!(h.line.starts_with("GET /metrics"));
        assert_eq!(h.header("accept"), Some("text/plain"));
    }

    #[test]
    fn an_endless_request_line_or_too_many_headers_is_431() {
        let long = vec![b'a'; 10_000];
        let e = head_of(&long, false).expect_err("too long");
        assert_eq!(e.0, 431, "{e:?}");
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..100 {
            many.extend_from_slice(format!("X-{i}: {}\r\n", "v".repeat(20)).as_bytes());
        }
        assert_eq!(head_of(&many, false).expect_err("too big").0, 431);
    }

    #[test]
    fn a_request_that_trickles_past_the_deadline_is_408() {
        let (mut c, s) = pair();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let writer = std::thread::spawn(move || {
            // One byte every 100 ms: each read succeeds, the whole never comes in time.
            for b in b"GET /metrics HTTP/1.1\r\nX: yyyyyyyyyy\r\n" {
                if stopped.load(Ordering::Relaxed) || c.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let mut r = BufReader::new(&s);
        let e = read_head(&mut r, &s, &LIMITS, Instant::now()).expect_err("too slow");
        assert_eq!(e.0, 408, "{e:?}");
        stop.store(true, Ordering::Relaxed);
        let _ = writer.join();
    }

    #[test]
    fn connections_beyond_the_limit_are_refused_with_503() {
        let active = Arc::new(AtomicUsize::new(0));
        let (_c1, mut s1) = pair();
        let (_c2, mut s2) = pair();
        let (mut c3, mut s3) = pair();
        let a = admit(&mut s1, &active, &LIMITS).expect("first");
        let _b = admit(&mut s2, &active, &LIMITS).expect("second");
        assert!(admit(&mut s3, &active, &LIMITS).is_none());
        drop(s3);
        let mut got = String::new();
        c3.read_to_string(&mut got).expect("read");
        assert!(got.starts_with("HTTP/1.1 503"), "{got}");
        drop(a);
        let (_c4, mut s4) = pair();
        assert!(
            admit(&mut s4, &active, &LIMITS).is_some(),
            "a freed place is reused"
        );
    }
}
