//! Keyed fingerprints of credential ids. nhiwatch never stores or prints a credential id
//! (`jti`, Vault accessor, AWS access key id, Kubernetes credential id); it keeps
//! HMAC-SHA-256(key, kind ‖ 0 ‖ id), truncated to 128 bits, so the same credential can be
//! followed across records and systems while the id itself cannot be recovered or guessed by
//! someone without the key.
//!
//! The key comes from configuration or `NHIWATCH_FINGERPRINT_KEY`. Without one, a random key
//! is drawn per process: fingerprints are then consistent within a run but not across
//! restarts or instances, which the caller warns about.

use std::path::PathBuf;

use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::error::ConfigError;
use crate::event::{Credential, CredentialKind};

/// Environment variable that overrides `fingerprint.key`.
pub const FINGERPRINT_KEY_ENV: &str = "NHIWATCH_FINGERPRINT_KEY";

/// `[fingerprint]`: the HMAC key for credential fingerprints.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FingerprintConfig {
    /// The key itself (at least 16 bytes). Prefer `key_file` or `NHIWATCH_FINGERPRINT_KEY`
    /// so the key is not in the config file.
    #[serde(default)]
    pub key: Option<String>,
    /// A file holding the key (trailing whitespace is ignored).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl FingerprintConfig {
    /// Checks the key's settings (both sources at once, or a key too short to be safe).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            key: "fingerprint.key".into(),
            message,
        };
        if self.key.is_some() && self.key_file.is_some() {
            return Err(invalid("set either `key` or `key_file`, not both".into()));
        }
        if let Some(key) = &self.key
            && key.len() < 16
        {
            return Err(invalid(format!(
                "is {} bytes; at least 16 are required",
                key.len()
            )));
        }
        Ok(())
    }

    /// The key from the environment variable, the key file or the config, in that order;
    /// `None` when none is set.
    pub fn key(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        if let Ok(k) = std::env::var(FINGERPRINT_KEY_ENV)
            && !k.is_empty()
        {
            return Ok(Some(k.into_bytes()));
        }
        if let Some(path) = &self.key_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            return Ok(Some(text.trim_end().as_bytes().to_vec()));
        }
        Ok(self.key.as_ref().map(|k| k.as_bytes().to_vec()))
    }
}

/// Bytes of the HMAC kept in a fingerprint.
const FP_BYTES: usize = 16;

/// Computes keyed fingerprints. Cheap to clone; holds the keyed HMAC state so each fingerprint
/// costs two SHA-256 compressions.
#[derive(Clone)]
pub struct Fingerprinter {
    keyed: Hmac<Sha256>,
    ephemeral: bool,
}

impl std::fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Fingerprinter")
            .field("ephemeral", &self.ephemeral)
            .finish_non_exhaustive()
    }
}

/// The key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Keys shorter than 16 bytes are refused: they can be brute-forced offline.
    #[error("fingerprint key is {0} bytes; at least 16 are required")]
    TooShort(usize),
    /// The operating system's random source failed.
    #[error("cannot draw a random fingerprint key: {0}")]
    Random(String),
}

impl Fingerprinter {
    /// A fingerprinter with a fixed key (at least 16 bytes).
    pub fn new(key: &[u8]) -> Result<Self, KeyError> {
        if key.len() < 16 {
            return Err(KeyError::TooShort(key.len()));
        }
        let keyed =
            Hmac::<Sha256>::new_from_slice(key).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Fingerprinter {
            keyed,
            ephemeral: false,
        })
    }

    /// A fingerprinter with a random key for this process only: drawn once, so every
    /// decoder of the process (one per input topic) fingerprints a credential alike and a
    /// credential minted in one topic's records still matches its use in another's.
    pub fn ephemeral() -> Result<Self, KeyError> {
        static KEY: std::sync::OnceLock<Result<[u8; 32], String>> = std::sync::OnceLock::new();
        let key = KEY
            .get_or_init(|| {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key)
                    .map(|()| key)
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| KeyError::Random(e.clone()))?;
        let mut fp = Fingerprinter::new(key)?;
        fp.ephemeral = true;
        Ok(fp)
    }

    /// True when the key was drawn at random for this process.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// The fingerprint of a credential id of the given kind, as 32 lowercase hex digits.
    pub fn fingerprint(&self, kind: CredentialKind, id: &str) -> String {
        self.fingerprint_text(kind.as_str(), id)
    }

    /// The keyed fingerprint of any text within a domain (a credential kind, or `masked` for
    /// token-shaped text masked in decoded values), as 32 lowercase hex digits.
    pub fn fingerprint_text(&self, domain: &str, text: &str) -> String {
        let mut mac = self.keyed.clone();
        mac.update(domain.as_bytes());
        mac.update(&[0]);
        mac.update(text.as_bytes());
        let bytes = mac.finalize().into_bytes();
        let mut out = String::with_capacity(FP_BYTES * 2);
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for b in &bytes[..FP_BYTES] {
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
        out
    }

    /// A [`Credential`] for a raw id, or `None` when the id is empty.
    pub fn credential(
        &self,
        kind: CredentialKind,
        id: &str,
        single_use: bool,
    ) -> Option<Credential> {
        let id = id.trim_ascii();
        if id.is_empty() {
            return None;
        }
        Some(Credential {
            kind,
            fp: self.fingerprint(kind, id),
            single_use,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_keys_are_one_per_process_so_decoders_agree() {
        // Two decoders without a configured key (two input topics) must fingerprint the same
        // credential alike, or a mint in one topic never matches its use in the other.
        let (a, b) = (
            Fingerprinter::ephemeral().expect("random"),
            Fingerprinter::ephemeral().expect("random"),
        );
        assert!(a.is_ephemeral() && b.is_ephemeral());
        let id = "ASIAQNZGKIQY7EXAMPLE";
        assert_eq!(
            a.fingerprint(CredentialKind::AwsAccessKey, id),
            b.fingerprint(CredentialKind::AwsAccessKey, id)
        );
        // And it is a key of this process, not a fixed one.
        let fixed = Fingerprinter::new(&[7u8; 32]).expect("key");
        assert_ne!(
            a.fingerprint(CredentialKind::AwsAccessKey, id),
            fixed.fingerprint(CredentialKind::AwsAccessKey, id)
        );
    }

    #[test]
    fn same_key_same_fingerprint_and_kind_separates() {
        let a = Fingerprinter::new(b"0123456789abcdef-key").unwrap();
        let b = Fingerprinter::new(b"0123456789abcdef-key").unwrap();
        let fa = a.fingerprint(CredentialKind::AwsAccessKey, "ASIAEXAMPLE");
        assert_eq!(
            fa,
            b.fingerprint(CredentialKind::AwsAccessKey, "ASIAEXAMPLE")
        );
        assert_eq!(fa.len(), 32);
        assert!(fa.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(fa, a.fingerprint(CredentialKind::OidcJti, "ASIAEXAMPLE"));
        assert_ne!(
            fa,
            a.fingerprint(CredentialKind::AwsAccessKey, "ASIAEXAMPLF")
        );
    }

    #[test]
    fn different_keys_differ_and_short_keys_are_refused() {
        let a = Fingerprinter::new(b"0123456789abcdef-one").unwrap();
        let b = Fingerprinter::new(b"0123456789abcdef-two").unwrap();
        assert_ne!(
            a.fingerprint(CredentialKind::OidcJti, "x"),
            b.fingerprint(CredentialKind::OidcJti, "x")
        );
        assert!(matches!(
            Fingerprinter::new(b"short"),
            Err(KeyError::TooShort(5))
        ));
    }

    #[test]
    fn matches_an_independent_hmac_computation() {
        // HMAC-SHA-256 with key "0123456789abcdef" over "oidc_jti\0abc", computed with
        // Python's hmac module.
        let f = Fingerprinter::new(b"0123456789abcdef").unwrap();
        assert_eq!(
            f.fingerprint(CredentialKind::OidcJti, "abc"),
            "8dae7a437cec3812a38c3c5f2ea3b238"
        );
    }

    #[test]
    fn debug_does_not_print_key_material() {
        let f = Fingerprinter::new(b"super-secret-key-material").unwrap();
        let s = format!("{f:?}");
        assert!(!s.contains("secret"), "{s}");
    }
}
