//! Snapshots of all learned state (baselines, fleet, credentials, the string table, and the
//! detection engine's own state), so `replay --state DIR` can backfill history from files and
//! a later run continues from it. Written atomically (temporary file, fsync, rename) in
//! postcard, a compact self-describing-free serde format, behind a versioned header.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::fleet::FleetEntry;
use super::{Baselines, Binding, IdentityBaseline};

// Version 2: the engine state carries its housekeeping schedule. Version 3: baselines keep
// when they last minted without an environment and a production time of week. Version 4:
// held runner changes carry what tells a replacement from an addition. Version 5: baselines
// keep the shapes of the refs they minted from and their uses of long-term keys.
const MAGIC: &[u8; 8] = b"NHIWSNP5";
/// The file name inside the state directory.
pub const FILE: &str = "baselines.snapshot";

/// A snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// File system error.
    #[error("snapshot {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a snapshot of this version.
    #[error("snapshot {path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Body<E> {
    identities: Vec<(String, IdentityBaseline)>,
    fleet: Vec<(u64, FleetEntry)>,
    credentials: Vec<(u128, Binding)>,
    next_sweep: i64,
    strings: Vec<(u64, String)>,
    peers: super::peers::Export,
    engine: E,
}

/// Encodes `baselines` and the engine state (the snapshot body, without the file header).
pub fn encode<E: Serialize>(baselines: &Baselines, engine: &E) -> Result<Vec<u8>, postcard::Error> {
    let mut identities: Vec<(String, IdentityBaseline)> = baselines
        .identities
        .iter()
        .map(|e| (e.key().to_string(), e.value().clone()))
        .collect();
    // Spilled identities are state too: a snapshot holds every identity, wherever it is.
    let mut strings = baselines.interner.export();
    let mut extra: Vec<(u64, String)> = Vec::new();
    let unreadable = baselines.spill().for_each(|k, b, texts| {
        identities.push((k, b));
        extra.extend(texts);
    });
    if unreadable > 0 {
        tracing::warn!(
            identities = unreadable,
            "spilled identities could not be read back for the snapshot; they are forgotten"
        );
    }
    if !extra.is_empty() {
        strings.extend(extra);
        strings.sort_unstable_by_key(|(h, _)| *h);
        strings.dedup_by_key(|(h, _)| *h);
    }
    identities.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let body = Body {
        identities,
        fleet: baselines.fleet.export(),
        credentials: baselines.credentials.export(),
        next_sweep: baselines.credentials.next_sweep(),
        strings,
        peers: baselines.peers.export(),
        engine,
    };
    postcard::to_stdvec(&body)
}

/// Decodes a body written by [`encode`] into `baselines` (which should be empty); returns the
/// engine state. Every identity lands in memory; the engine then spills what is past its
/// bound.
pub fn decode<E: DeserializeOwned>(
    bytes: &[u8],
    baselines: &Baselines,
) -> Result<E, postcard::Error> {
    let body: Body<E> = postcard::from_bytes(bytes)?;
    for (k, v) in body.identities {
        baselines.identities.insert(k.into_boxed_str(), v);
    }
    baselines.fleet.import(body.fleet);
    baselines.credentials.import(body.credentials);
    baselines.credentials.set_next_sweep(body.next_sweep);
    for (h, t) in body.strings {
        baselines.interner.intern(h, &t);
    }
    baselines.peers.import(body.peers);
    Ok(body.engine)
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename.
pub fn write_atomic(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut w = BufWriter::new(File::create(&tmp)?);
        for p in parts {
            w.write_all(p)?;
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Writes a snapshot of `baselines` and the engine state to `dir/baselines.snapshot`.
pub fn save<E: Serialize>(dir: &Path, baselines: &Baselines, engine: &E) -> Result<PathBuf, Error> {
    let path = dir.join(FILE);
    let bytes = encode(baselines, engine).map_err(|e| Error::Format {
        path: path.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&path, &[MAGIC, &bytes]).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Reads `dir/baselines.snapshot` into `baselines` (which should be empty); returns the engine
/// state, or `None` when there is no snapshot yet.
pub fn load<E: DeserializeOwned>(dir: &Path, baselines: &Baselines) -> Result<Option<E>, Error> {
    let path = dir.join(FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Io { path, source }),
    };
    let mut bytes = Vec::new();
    BufReader::new(file)
        .read_to_end(&mut bytes)
        .map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
    if !bytes.starts_with(MAGIC) {
        return Err(Error::Format {
            path,
            message: "not an nhiwatch snapshot (or from an incompatible version)".into(),
        });
    }
    let engine = decode(&bytes[MAGIC.len()..], baselines).map_err(|e| Error::Format {
        path: path.clone(),
        message: format!("corrupt snapshot: {e}"),
    })?;
    Ok(Some(engine))
}
