//! Syslog sink: RFC 5424 messages over TCP with octet-counting framing (RFC 6587), over TLS
//! (RFC 5425, same framing), or over UDP (RFC 5426, one message per datagram).
//!
//! The header is `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID -`: PRI from the facility
//! and the alert's severity (critical → crit, high → err, medium → warning, low → notice,
//! info → info), TIMESTAMP when nhiwatch raised the alert, MSGID the detector, no structured
//! data. The message is the encoded alert (CEF unless configured otherwise), which is how
//! Microsoft Sentinel's and QRadar's CEF collectors expect it.
//!
//! Syslog has no acknowledgements: a TCP write "succeeds" into the kernel's buffer even when
//! the receiver has gone. Before each batch the connection is checked for an orderly close by
//! the peer, which catches a restarted receiver; a receiver dying mid-batch can still lose
//! what the kernel had buffered (RELP would be needed to close that gap).

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use super::spool::Record;
use super::{Failure, SinkConfig, SyslogProtocol, Transport};
use crate::alert::Alert;
use crate::alert::Severity;

/// Facility names and codes (RFC 5424 table 1; `security` and `console` as rsyslog names
/// them).
const FACILITIES: [(&str, u8); 24] = [
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("ntp", 12),
    ("security", 13),
    ("console", 14),
    ("solaris-cron", 15),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// The code of a facility name.
pub fn facility_code(name: &str) -> Option<u8> {
    FACILITIES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, c)| *c)
}

/// Syslog severity of an alert severity.
pub fn severity_code(s: Severity) -> u8 {
    match s {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
        Severity::Info => 6,
    }
}

/// Keeps printable ASCII without spaces (RFC 5424 header fields), cut to `max`.
fn header_field(s: &str, max: usize) -> String {
    let v: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if v.is_empty() { "-".into() } else { v }
}

/// The RFC 5424 header written before each message.
#[derive(Clone, Debug)]
pub struct Header {
    facility: u8,
    hostname: String,
    app_name: String,
    procid: String,
}

impl Header {
    /// The header of a sink.
    pub fn new(c: &SinkConfig, hostname: &str) -> Header {
        Header {
            facility: c.facility.as_deref().and_then(facility_code).unwrap_or(20),
            hostname: header_field(hostname, 255),
            app_name: header_field(c.app_name.as_deref().unwrap_or("nhiwatch"), 48),
            procid: std::process::id().to_string(),
        }
    }

    /// Writes the header of `alert` (with the trailing space before MSG).
    pub fn write(&self, alert: &Alert, out: &mut Vec<u8>) {
        let pri = self.facility as u16 * 8 + severity_code(alert.severity) as u16;
        let now = crate::time::Timestamp::now().to_rfc3339();
        let line = format!(
            "<{pri}>1 {now} {} {} {} {} - ",
            self.hostname,
            self.app_name,
            self.procid,
            header_field(&alert.detector, 32),
        );
        out.extend_from_slice(line.as_bytes());
    }
}

enum Conn {
    Tcp(TcpStream),
    Tls(Box<native_tls::TlsStream<TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Tcp(s) => s,
            Conn::Tls(s) => s.get_ref(),
        }
    }

    /// False when the peer closed the connection (or it broke) since the last write.
    fn alive(&self) -> bool {
        let s = self.tcp();
        if s.set_nonblocking(true).is_err() {
            return false;
        }
        let mut b = [0u8; 1];
        let r = s.peek(&mut b);
        let _ = s.set_nonblocking(false);
        match r {
            Ok(0) => false,
            // A receiver does not talk back; bytes would be a TLS alert or junk. Keep going.
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        }
    }

    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.write_all(b).and_then(|()| s.flush()),
            Conn::Tls(s) => s.write_all(b).and_then(|()| s.flush()),
        }
    }
}

/// Delivers to one syslog receiver.
pub struct Syslog {
    address: String,
    protocol: SyslogProtocol,
    server_name: String,
    timeout: Duration,
    tls: Option<native_tls::TlsConnector>,
    conn: Option<Conn>,
    udp: Option<UdpSocket>,
}

impl Syslog {
    /// A transport for a syslog sink (connects at the first batch).
    pub fn new(c: &SinkConfig) -> Result<Syslog, String> {
        let address = c.address.clone().unwrap_or_default();
        let protocol = c.protocol.unwrap_or_default();
        let host = address
            .rsplit_once(':')
            .map_or(address.as_str(), |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tls = if protocol == SyslogProtocol::Tls {
            let mut b = native_tls::TlsConnector::builder();
            if let Some(ca) = &c.ca_file {
                let pem = std::fs::read(ca)
                    .map_err(|e| format!("cannot read ca_file {}: {e}", ca.display()))?;
                let cert = native_tls::Certificate::from_pem(&pem)
                    .map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
                b.add_root_certificate(cert);
            }
            Some(b.build().map_err(|e| format!("TLS setup: {e}"))?)
        } else {
            None
        };
        Ok(Syslog {
            server_name: c.server_name.clone().unwrap_or(host),
            address,
            protocol,
            timeout: c.timeout(),
            tls,
            conn: None,
            udp: None,
        })
    }

    fn connect(&self) -> Result<Conn, Failure> {
        let addrs: Vec<_> = self
            .address
            .to_socket_addrs()
            .map_err(|e| Failure::Transient(format!("cannot resolve {}: {e}", self.address)))?
            .collect();
        let mut last = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.timeout) {
                Ok(s) => {
                    let _ = s.set_write_timeout(Some(self.timeout));
                    let _ = s.set_read_timeout(Some(self.timeout));
                    let _ = s.set_nodelay(true);
                    return match &self.tls {
                        None => Ok(Conn::Tcp(s)),
                        Some(t) => t
                            .connect(&self.server_name, s)
                            .map(|s| Conn::Tls(Box::new(s)))
                            .map_err(|e| {
                                Failure::Transient(format!(
                                    "TLS handshake with {}: {e}",
                                    self.address
                                ))
                            }),
                    };
                }
                Err(e) => last = Some(e),
            }
        }
        Err(Failure::Transient(format!(
            "cannot connect to {}: {}",
            self.address,
            last.map_or("no address".into(), |e| e.to_string())
        )))
    }
}

impl Transport for Syslog {
    fn send(&mut self, batch: &[Record]) -> Result<Vec<(usize, String)>, Failure> {
        if self.protocol == SyslogProtocol::Udp {
            if self.udp.is_none() {
                let s = UdpSocket::bind(if self.address.starts_with('[') {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                })
                .and_then(|s| s.connect(&self.address).map(|()| s))
                .map_err(|e| Failure::Transient(format!("udp {}: {e}", self.address)))?;
                self.udp = Some(s);
            }
            let mut refused = Vec::new();
            for (i, r) in batch.iter().enumerate() {
                if r.payload.len() > 65_000 {
                    refused.push((
                        i,
                        format!("{} bytes do not fit a UDP datagram", r.payload.len()),
                    ));
                    continue;
                }
                if let Some(s) = &self.udp
                    && let Err(e) = s.send(&r.payload)
                {
                    self.udp = None;
                    return Err(Failure::Transient(format!("udp {}: {e}", self.address)));
                }
            }
            return Ok(refused);
        }
        if self.conn.as_ref().is_some_and(|c| !c.alive()) {
            tracing::info!(address = %self.address, "syslog receiver closed the connection; reconnecting");
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        let mut buf = Vec::with_capacity(batch.iter().map(|r| r.payload.len() + 8).sum());
        for r in batch {
            buf.extend_from_slice(r.payload.len().to_string().as_bytes());
            buf.push(b' ');
            buf.extend_from_slice(&r.payload);
        }
        let res = match self.conn.as_mut() {
            Some(c) => c.write_all(&buf),
            None => Ok(()),
        };
        if let Err(e) = res {
            self.conn = None;
            return Err(Failure::Transient(format!(
                "write to {}: {e}",
                self.address
            )));
        }
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facilities_and_severities() {
        assert_eq!(facility_code("local4"), Some(20));
        assert_eq!(facility_code("AUTH"), Some(4));
        assert_eq!(facility_code("local8"), None);
        assert_eq!(severity_code(Severity::Critical), 2);
        assert_eq!(severity_code(Severity::Info), 6);
    }

    #[test]
    fn header_is_rfc5424() {
        let mut a = crate::encode::tests::sample();
        a.detector = "cross env reuse with a very long name over 32 chars".into();
        let cfg: SinkConfig = toml::from_str(
            "type = \"syslog\"\naddress = \"127.0.0.1:514\"\nfacility = \"local0\"\n",
        )
        .unwrap();
        let h = Header::new(&cfg, "det 1");
        let mut out = Vec::new();
        h.write(&a, &mut out);
        let s = String::from_utf8(out).unwrap();
        // local0 (16) * 8 + crit (2) = 130.
        assert!(s.starts_with("<130>1 "), "{s}");
        let parts: Vec<&str> = s.split(' ').collect();
        assert_eq!(parts[2], "det1", "spaces are not allowed in HOSTNAME");
        assert_eq!(parts[3], "nhiwatch");
        assert_eq!(parts[4], std::process::id().to_string());
        assert_eq!(parts[5].len(), 32, "MSGID is at most 32 characters");
        assert_eq!(parts[6], "-");
        assert!(s.ends_with(" - "));
        crate::time::Timestamp::parse(parts[1]).unwrap();
    }
}
