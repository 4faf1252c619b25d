//! TLS for the listeners that serve data (`sql.pg_listen`, `sql.http_listen`): a server
//! certificate chain and its private key, read from PEM files the operator names, with
//! rustls (the ring provider, which the PostgreSQL wire library already uses).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

pub use tokio_rustls::rustls::ServerConfig;

/// Why a certificate or key could not be used; the message names the configuration key and
/// the file.
#[derive(Debug, thiserror::Error)]
#[error("{key} = {path:?}: {message}")]
pub struct TlsError {
    /// The configuration key that named the file.
    pub key: String,
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

/// Reads `cert` (a PEM chain, the server's certificate first) and `key` (a PEM private key:
/// PKCS#8, PKCS#1 or SEC1) into a server configuration offering `alpn` (empty: none).
/// `section` prefixes the key names in errors (`sql` gives `sql.tls_cert`).
pub fn server_config(
    section: &str,
    cert: &Path,
    key: &Path,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let fail = |name: &str, path: &Path, message: String| TlsError {
        key: format!("{section}.{name}"),
        path: path.display().to_string(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| fail("tls_cert", cert, pem_error(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail("tls_cert", cert, pem_error(e)))?;
    if chain.is_empty() {
        return Err(fail("tls_cert", cert, "holds no CERTIFICATE block".into()));
    }
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| fail("tls_key", key, pem_error(e)))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail("tls_cert", cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        // A key that does not match the certificate, or of a kind rustls cannot sign with.
        .map_err(|e| fail("tls_key", key, e.to_string()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn pem_error(e: rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => format!("cannot read: {io}"),
        rustls_pki_types::pem::Error::NoItemsFound => "holds no PEM private key".into(),
        other => format!("not PEM: {other:?}"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A self-signed certificate for `localhost` and its key, made with the `openssl` tool.
    pub(crate) fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (cert, key)
    }

    #[test]
    fn a_certificate_and_its_key_make_a_server_config() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = self_signed(dir.path());
        let c = server_config("sql", &cert, &key, &[b"postgresql"]).expect("config");
        assert_eq!(c.alpn_protocols, vec![b"postgresql".to_vec()]);
    }

    #[test]
    fn a_missing_file_a_swapped_pair_or_a_foreign_key_is_refused_naming_the_key() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = self_signed(dir.path());
        let other = dir.path().join("other");
        std::fs::create_dir(&other).expect("dir");
        let (_, foreign) = self_signed(&other);
        let e = server_config("sql", &dir.path().join("none.pem"), &key, &[]).unwrap_err();
        assert!(e.to_string().starts_with("sql.tls_cert = "), "{e}");
        assert!(e.to_string().contains("cannot read"), "{e}");
        let e = server_config("sql", &key, &cert, &[]).unwrap_err();
        assert!(e.to_string().contains("sql.tls_cert"), "{e}");
        assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
        let e = server_config("sql", &cert, &foreign, &[]).unwrap_err();
        assert!(e.to_string().starts_with("sql.tls_key = "), "{e}");
    }
}
