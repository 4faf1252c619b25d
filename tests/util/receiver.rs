//! Receivers for the sink tests: an HTTP server (plain or TLS) that can fail its first
//! requests or refuse bodies containing a marker, rsyslog (the Debian package) started as a
//! process with a generated config writing what it receives to a file, and a CA and server
//! certificate made with the `openssl` command.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the HTTP receiver got.
#[derive(Clone, Debug)]
pub struct Request {
    /// Path.
    pub path: String,
    /// Headers, names lowercased.
    pub headers: HashMap<String, String>,
    /// Body, gunzipped when sent with `Content-Encoding: gzip`.
    pub body: Vec<u8>,
    /// Body size on the wire.
    pub wire_bytes: usize,
    /// The status answered.
    pub status: u16,
}

/// How the receiver answers.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Answer 503 to this many requests first.
    pub fail_first: usize,
    /// Answer 400 to any request whose body contains this.
    pub refuse_containing: Option<String>,
}

/// An HTTP/1.1 receiver on loopback.
pub struct HttpReceiver {
    /// `127.0.0.1:port`.
    pub addr: String,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl HttpReceiver {
    /// Starts on `port` (0: any).
    pub fn start(port: u16, plan: Plan, tls: Option<native_tls::TlsAcceptor>) -> HttpReceiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind receiver");
        let addr = listener.local_addr().expect("addr").to_string();
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let plan = Arc::new(plan);
        let tls = tls.map(Arc::new);
        {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (requests, plan, served, tls, stop) = (
                        requests.clone(),
                        plan.clone(),
                        served.clone(),
                        tls.clone(),
                        stop.clone(),
                    );
                    std::thread::spawn(move || {
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                        match tls {
                            Some(t) => {
                                if let Ok(s) = t.accept(conn) {
                                    serve(s, &requests, &plan, &served, &stop);
                                }
                            }
                            None => serve(conn, &requests, &plan, &served, &stop),
                        }
                    });
                }
            });
        }
        HttpReceiver {
            addr,
            requests,
            stop,
        }
    }

    /// Requests so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Bodies of accepted requests, split into lines.
    pub fn accepted_lines(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| r.status == 200)
            .flat_map(|r| {
                String::from_utf8_lossy(&r.body)
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Waits until `n` lines were accepted (panics after `timeout`).
    pub fn wait_lines(&self, n: usize, timeout: Duration) -> Vec<String> {
        wait_lines("the HTTP receiver", n, timeout, || self.accepted_lines())
    }
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop.
        let _ = TcpStream::connect(&self.addr);
    }
}

fn serve<S: Read + Write>(
    s: S,
    requests: &Mutex<Vec<Request>>,
    plan: &Plan,
    served: &AtomicUsize,
    stop: &AtomicBool,
) {
    let mut r = BufReader::new(s);
    loop {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut wire = vec![0; len];
        if r.read_exact(&mut wire).is_err() {
            return;
        }
        let body = if headers.get("content-encoding").map(String::as_str) == Some("gzip") {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&wire[..])
                .read_to_end(&mut out)
                .expect("gzip body");
            out
        } else {
            wire.clone()
        };
        let n = served.fetch_add(1, Ordering::AcqRel);
        let refuse = plan
            .refuse_containing
            .as_ref()
            .is_some_and(|m| String::from_utf8_lossy(&body).contains(m.as_str()));
        let (status, text) = if n < plan.fail_first {
            (503, r#"{"text":"Server is busy","code":9}"#)
        } else if refuse {
            (400, r#"{"text":"Invalid data format","code":6}"#)
        } else {
            (200, r#"{"text":"Success","code":0}"#)
        };
        requests.lock().unwrap().push(Request {
            path,
            headers,
            wire_bytes: wire.len(),
            body,
            status,
        });
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            _ => "Service Unavailable",
        };
        let resp = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if r.get_mut().write_all(resp.as_bytes()).is_err() || r.get_mut().flush().is_err() {
            return;
        }
    }
}

/// A CA and a server certificate for `localhost` / 127.0.0.1, made with `openssl`.
pub struct Certs {
    /// The CA certificate (PEM) a client trusts.
    pub ca: PathBuf,
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// The server's key (PKCS#8 PEM).
    pub key: PathBuf,
}

impl Certs {
    /// Makes them in `dir`.
    pub fn make(dir: &Path) -> Certs {
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=nhiwatch test CA",
        ]);
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .expect("ext");
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        run(&[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            "server.key",
            "-out",
            "server.pk8",
        ]);
        Certs {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.pk8"),
        }
    }

    /// A TLS acceptor serving the server certificate.
    pub fn acceptor(&self) -> native_tls::TlsAcceptor {
        let id = native_tls::Identity::from_pkcs8(
            &std::fs::read(&self.cert).expect("cert"),
            &std::fs::read(&self.key).expect("key"),
        )
        .expect("identity");
        native_tls::TlsAcceptor::new(id).expect("acceptor")
    }
}

/// rsyslogd listening on a loopback TCP port, writing each message's fields to a file.
pub struct Rsyslog {
    child: Child,
    /// `127.0.0.1:port`.
    pub addr: String,
    /// Where it writes: one line per message,
    /// `PRI|VERSION|TIMESTAMP|HOSTNAME|APP-NAME|PROCID|MSGID|STRUCTURED-DATA|MSG`.
    pub out: PathBuf,
    log: PathBuf,
}

impl Rsyslog {
    /// Starts rsyslogd with a generated config in `dir`, or None when it is not installed.
    pub fn start(dir: &Path) -> Option<Rsyslog> {
        let bin = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
            .into_iter()
            .find(|p| Path::new(p).is_file())?;
        let port = super::kafka::free_port();
        let out = dir.join("received.log");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{dir}" maxMessageSize="64k")
module(load="imtcp")
template(name="fields" type="string"
  string="%PRI%|%PROTOCOL-VERSION%|%TIMESTAMP:::date-rfc3339%|%HOSTNAME%|%APP-NAME%|%PROCID%|%MSGID%|%STRUCTURED-DATA%|%msg%\n")
ruleset(name="received") {{
  action(type="omfile" file="{out}" template="fields")
}}
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="received")
"#,
                dir = dir.display(),
                out = out.display(),
            ),
        )
        .expect("rsyslog config");
        let log = dir.join("rsyslogd.log");
        let child = Command::new(bin)
            .args(["-n", "-f"])
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(std::fs::File::create(dir.join("rsyslogd.err")).expect("log"))
            .spawn()
            .expect("spawn rsyslogd");
        let addr = format!("127.0.0.1:{port}");
        let mut r = Rsyslog {
            child,
            addr,
            out,
            log,
        };
        let start = Instant::now();
        while TcpStream::connect(&r.addr).is_err() {
            if let Ok(Some(st)) = r.child.try_wait() {
                panic!(
                    "rsyslogd exited ({st}): {}{}",
                    std::fs::read_to_string(&r.log).unwrap_or_default(),
                    std::fs::read_to_string(dir.join("rsyslogd.err")).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "rsyslogd did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(r)
    }

    /// The lines written so far.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits until `n` lines were written.
    pub fn wait_lines(&self, n: usize, timeout: Duration) -> Vec<String> {
        wait_lines("rsyslog", n, timeout, || self.lines())
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `lines` until it holds `n` lines; panics naming `who` after `timeout`.
fn wait_lines(
    who: &str,
    n: usize,
    timeout: Duration,
    lines: impl Fn() -> Vec<String>,
) -> Vec<String> {
    let start = Instant::now();
    loop {
        let l = lines();
        if l.len() >= n {
            return l;
        }
        assert!(
            start.elapsed() < timeout,
            "{who} got {} of {n} lines within {timeout:?}",
            l.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
