//! Bounded identity state: the `[state]` section and the spill store.
//!
//! An attacker who controls a pipeline controls the identities its records name, so the number
//! of identities is the input's to choose. Past `state.max_identities` the least recently
//! active identities leave memory: each one's baseline (with the texts of its values) is
//! appended to an unnamed temporary file, and only a 64-bit key and the record's place in the
//! file stay in memory (about 30 bytes instead of 1–3 KiB). An identity that comes back is read
//! back and judged against its own baseline, as if it had never left. The file is a cache, not
//! state: snapshots and checkpoints hold every identity (in memory or spilled), and a restore
//! spills again what does not fit. Past `state.max_spilled_identities` the longest-spilled are
//! dropped, counted; a spill that cannot be written (disk full) drops the identity, counted
//! and logged, and never stops the process.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{IdentityBaseline, MapHasher};
use crate::error::ConfigError;

/// `[state]`: how much detection state a process keeps in memory.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Identities kept in memory (per detection engine); beyond, the least recently active
    /// are spilled to disk.
    pub max_identities: usize,
    /// Identities kept spilled; beyond, the longest-spilled are forgotten (0: never spill,
    /// forget at once).
    pub max_spilled_identities: usize,
    /// Live credential bindings kept; beyond, the ones expiring soonest are forgotten.
    pub max_credentials: usize,
    /// Values (runner ids, networks, scopes) the fleet context counts identities for;
    /// beyond, the ones seen longest ago are forgotten.
    pub max_fleet_values: usize,
    /// Where the spill file is made (unnamed, removed when the process ends); default: the
    /// system's temporary directory.
    pub spill_dir: Option<PathBuf>,
}

impl Default for StateConfig {
    /// Sized for a 2 GiB container: 400,000 identities in memory at about 2.5 KiB each, a
    /// million credentials at about 200 bytes, 4 million spilled at about 35 bytes each,
    /// half a million fleet values at about 150 bytes.
    fn default() -> Self {
        StateConfig {
            max_identities: 400_000,
            max_spilled_identities: 4_000_000,
            max_credentials: 1_000_000,
            max_fleet_values: 500_000,
            spill_dir: None,
        }
    }
}

impl StateConfig {
    /// Checks the bounds; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: format!("state.{key}"),
            message,
        };
        if self.max_identities < 100 {
            return Err(invalid(
                "max_identities",
                format!("{} is too small (at least 100)", self.max_identities),
            ));
        }
        if self.max_credentials < 1_000 {
            return Err(invalid(
                "max_credentials",
                format!("{} is too small (at least 1000)", self.max_credentials),
            ));
        }
        if self.max_fleet_values < 1_000 {
            return Err(invalid(
                "max_fleet_values",
                format!("{} is too small (at least 1000)", self.max_fleet_values),
            ));
        }
        if let Some(d) = &self.spill_dir
            && !d.is_dir()
        {
            return Err(invalid(
                "spill_dir",
                format!("{} is not a directory", d.display()),
            ));
        }
        Ok(())
    }
}

/// One spilled identity, as written to the file.
#[derive(Serialize, Deserialize)]
struct Record {
    key: String,
    baseline: IdentityBaseline,
    /// The texts of the hashed values it refers to (the interner may forget them meanwhile).
    texts: Vec<(u64, String)>,
}

/// What happened to a spilled identity's bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpillCounts {
    /// Identities written to the file.
    pub spilled: u64,
    /// Identities read back.
    pub reloaded: u64,
    /// Identities forgotten (past `max_spilled_identities`, or the file could not be written).
    pub dropped: u64,
}

/// The spill store: an append-only file and an index from identity key to record.
pub struct Spill {
    dir: PathBuf,
    max: usize,
    file: Option<BufWriter<File>>,
    /// Bytes appended (the next record's offset).
    end: u64,
    /// Bytes of records no longer indexed (read back or forgotten).
    garbage: u64,
    /// Key hash → the record's place (see [`place`]).
    index: HashMap<u64, u64, MapHasher>,
    /// Counts since start.
    pub counts: SpillCounts,
    /// The file is compacted once it is this large and mostly garbage.
    compact_min: u64,
}

impl std::fmt::Debug for Spill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spill")
            .field("len", &self.index.len())
            .field("end", &self.end)
            .field("garbage", &self.garbage)
            .finish()
    }
}

impl Default for Spill {
    fn default() -> Self {
        Spill::new(&StateConfig::default())
    }
}

/// A record's offset (40 bits: 1 TiB) and length (24 bits: 16 MiB; a baseline is a few KiB
/// at most) in one word, so an index entry takes 16 bytes.
fn place(offset: u64, len: u32) -> u64 {
    (offset << 24) | u64::from(len & 0xff_ffff)
}

fn unplace(p: u64) -> (u64, u32) {
    (p >> 24, (p & 0xff_ffff) as u32)
}

/// The index key of an identity.
fn key_hash(key: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key.as_bytes(), 0x5b11)
}

impl Spill {
    /// A store for `cfg`; the file is made at the first spill.
    pub fn new(cfg: &StateConfig) -> Spill {
        Spill {
            dir: cfg.spill_dir.clone().unwrap_or_else(std::env::temp_dir),
            max: cfg.max_spilled_identities,
            file: None,
            end: 0,
            garbage: 0,
            index: HashMap::default(),
            counts: SpillCounts::default(),
            compact_min: 64 << 20,
        }
    }

    /// Identities spilled now.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when none is spilled.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The most identities kept spilled.
    pub fn capacity(&self) -> usize {
        self.max
    }

    /// Bytes the file holds (live records and garbage).
    pub fn file_bytes(&self) -> u64 {
        self.end
    }

    /// Bytes of memory the index takes (about).
    pub fn heap_bytes(&self) -> usize {
        self.index.capacity() * (std::mem::size_of::<(u64, u64)>() + 1)
    }

    /// Whether `key` is spilled.
    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(&key_hash(key))
    }

    /// Writes an identity's baseline out. On failure (or with no room) the identity is
    /// forgotten, counted, and the error returned for the caller to log.
    pub fn put(
        &mut self,
        key: &str,
        baseline: &IdentityBaseline,
        texts: Vec<(u64, String)>,
    ) -> std::io::Result<()> {
        if self.max == 0 {
            self.counts.dropped += 1;
            return Ok(());
        }
        if self.index.len() >= self.max {
            self.drop_oldest();
        }
        let rec = Record {
            key: key.to_string(),
            baseline: baseline.clone(),
            texts,
        };
        let result = self.append(&rec);
        match result {
            Ok((offset, len)) => {
                if let Some(old) = self.index.insert(key_hash(key), place(offset, len)) {
                    self.garbage += u64::from(unplace(old).1);
                }
                self.counts.spilled += 1;
                Ok(())
            }
            Err(e) => {
                self.counts.dropped += 1;
                Err(e)
            }
        }
    }

    fn append(&mut self, rec: &Record) -> std::io::Result<(u64, u32)> {
        let bytes = postcard::to_stdvec(rec).map_err(std::io::Error::other)?;
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|l| *l < 1 << 24 && self.end < 1 << 40)
            .ok_or_else(|| std::io::Error::other("spill record or file too large"))?;
        if self.file.is_none() {
            let f = tempfile::tempfile_in(&self.dir)?;
            self.file = Some(BufWriter::with_capacity(1 << 16, f));
        }
        let Some(w) = self.file.as_mut() else {
            return Err(std::io::Error::other("no spill file"));
        };
        if let Err(e) = w.write_all(&bytes) {
            // Whatever part of the record reached the file is never read; start afresh
            // after it (a short write leaves the end unknown, so flush to learn it).
            let _ = w.flush();
            self.end = w.get_ref().metadata().map_or(self.end, |m| m.len());
            return Err(e);
        }
        let offset = self.end;
        self.end += u64::from(len);
        Ok((offset, len))
    }

    /// Reads an identity back and removes it from the store; `None` when it is not spilled.
    /// A record that cannot be read is forgotten (counted) and the error returned.
    #[allow(clippy::type_complexity)]
    pub fn take(
        &mut self,
        key: &str,
    ) -> std::io::Result<Option<(IdentityBaseline, Vec<(u64, String)>)>> {
        let h = key_hash(key);
        let Some((offset, len)) = self.index.get(&h).copied().map(unplace) else {
            return Ok(None);
        };
        let rec = self.read(offset, len);
        match rec {
            Ok(r) if r.key == key => {
                self.index.remove(&h);
                self.garbage += u64::from(len);
                self.counts.reloaded += 1;
                self.compact_if_worth_it();
                Ok(Some((r.baseline, r.texts)))
            }
            // Another identity with the same 64-bit key: this one is new.
            Ok(_) => Ok(None),
            Err(e) => {
                self.index.remove(&h);
                self.garbage += u64::from(len);
                self.counts.dropped += 1;
                Err(e)
            }
        }
    }

    fn read(&mut self, offset: u64, len: u32) -> std::io::Result<Record> {
        let Some(w) = self.file.as_mut() else {
            return Err(std::io::Error::other("no spill file"));
        };
        w.flush()?;
        let mut buf = vec![0u8; len as usize];
        w.get_ref().read_exact_at(&mut buf, offset)?;
        postcard::from_bytes(&buf).map_err(std::io::Error::other)
    }

    /// Forgets the longest-spilled tenth of the store (the records first written).
    fn drop_oldest(&mut self) {
        let n = (self.max / 10).max(1).min(self.index.len());
        let mut offsets: Vec<u64> = self.index.values().map(|p| unplace(*p).0).collect();
        if n == 0 || offsets.is_empty() {
            return;
        }
        let (_, cut, _) = offsets.select_nth_unstable(n - 1);
        let cut = *cut;
        let before = self.index.len();
        let mut freed = 0u64;
        self.index.retain(|_, p| {
            let (o, l) = unplace(*p);
            let keep = o > cut;
            if !keep {
                freed += u64::from(l);
            }
            keep
        });
        self.garbage += freed;
        self.counts.dropped += (before - self.index.len()) as u64;
        self.compact_if_worth_it();
    }

    /// Rewrites the file without its garbage once garbage is most of a file of 64 MiB or
    /// more, keeping the records' order (oldest first).
    fn compact_if_worth_it(&mut self) {
        if self.end < self.compact_min || self.garbage * 2 < self.end {
            return;
        }
        if let Err(e) = self.compact() {
            tracing::warn!(error = %e, "spill file not compacted; it keeps its garbage");
        }
    }

    fn compact(&mut self) -> std::io::Result<()> {
        let Some(old) = self.file.as_mut() else {
            return Ok(());
        };
        old.flush()?;
        let mut live: Vec<(u64, u64, u32)> = self
            .index
            .iter()
            .map(|(h, p)| {
                let (o, l) = unplace(*p);
                (o, *h, l)
            })
            .collect();
        live.sort_unstable();
        let new = tempfile::tempfile_in(&self.dir)?;
        let mut w = BufWriter::with_capacity(1 << 16, new);
        let mut end = 0u64;
        let mut buf = Vec::new();
        for (o, h, l) in live {
            buf.resize(l as usize, 0);
            old.get_ref().read_exact_at(&mut buf, o)?;
            w.write_all(&buf)?;
            self.index.insert(h, place(end, l));
            end += u64::from(l);
        }
        w.flush()?;
        self.file = Some(w);
        self.end = end;
        self.garbage = 0;
        Ok(())
    }

    /// Calls `f` with every spilled identity (snapshots); records that cannot be read are
    /// skipped and counted in the returned error count.
    pub fn for_each(
        &mut self,
        mut f: impl FnMut(String, IdentityBaseline, Vec<(u64, String)>),
    ) -> u64 {
        let mut live: Vec<(u64, u32)> = self.index.values().map(|p| unplace(*p)).collect();
        live.sort_unstable();
        let mut bad = 0;
        for (o, l) in live {
            match self.read(o, l) {
                Ok(r) => f(r.key, r.baseline, r.texts),
                Err(_) => bad += 1,
            }
        }
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline(n: u32) -> IdentityBaseline {
        let mut b = IdentityBaseline::new(i64::from(n));
        b.mints = n;
        b.scopes.observe(u64::from(n), 10, 1, 8, 0);
        b
    }

    fn store(max: usize) -> (tempfile::TempDir, Spill) {
        let dir = tempfile::tempdir().expect("dir");
        let s = Spill::new(&StateConfig {
            max_spilled_identities: max,
            spill_dir: Some(dir.path().to_path_buf()),
            ..StateConfig::default()
        });
        (dir, s)
    }

    #[test]
    fn a_spilled_identity_comes_back_whole_once() {
        let (_d, mut s) = store(100);
        s.put("ci:a", &baseline(7), vec![(7, "scope-a".into())])
            .expect("put");
        s.put("ci:b", &baseline(8), vec![]).expect("put");
        assert!(s.contains("ci:a") && !s.contains("ci:c"));
        let (b, texts) = s.take("ci:a").expect("read").expect("spilled");
        assert_eq!(b, baseline(7));
        assert_eq!(texts, vec![(7, "scope-a".to_string())]);
        assert!(s.take("ci:a").expect("read").is_none(), "taken once");
        assert_eq!(s.len(), 1);
        assert_eq!(
            s.counts,
            SpillCounts {
                spilled: 2,
                reloaded: 1,
                dropped: 0
            }
        );
    }

    #[test]
    fn past_its_bound_the_longest_spilled_are_forgotten_and_counted() {
        let (_d, mut s) = store(10);
        for i in 0..11 {
            s.put(&format!("ci:{i}"), &baseline(i), vec![])
                .expect("put");
        }
        // The eleventh made room by forgetting the first tenth (one identity): the oldest.
        assert_eq!(s.len(), 10);
        assert!(!s.contains("ci:0") && s.contains("ci:1") && s.contains("ci:10"));
        assert_eq!(s.counts.dropped, 1);
        let (_d, mut none) = store(0);
        none.put("ci:x", &baseline(1), vec![]).expect("put");
        assert!(none.is_empty());
        assert_eq!(none.counts.dropped, 1);
    }

    #[test]
    fn compaction_keeps_every_live_record_and_frees_the_rest() {
        let (_d, mut s) = store(1_000);
        s.compact_min = 1;
        for i in 0..100 {
            s.put(&format!("ci:{i}"), &baseline(i), vec![])
                .expect("put");
        }
        let full = s.file_bytes();
        for i in 0..60 {
            assert!(s.take(&format!("ci:{i}")).expect("read").is_some());
        }
        assert!(
            s.file_bytes() <= full * 6 / 10,
            "{} of {full} bytes",
            s.file_bytes()
        );
        let mut seen = Vec::new();
        assert_eq!(s.for_each(|k, b, _| seen.push((k, b.mints))), 0);
        let want: Vec<(String, u32)> = (60..100).map(|i| (format!("ci:{i}"), i)).collect();
        assert_eq!(seen, want, "oldest first, none lost");
    }

    #[test]
    fn bounds_are_validated_by_name() {
        let small = StateConfig {
            max_identities: 99,
            ..StateConfig::default()
        };
        let e = small.validate().expect_err("too small").to_string();
        assert!(e.contains("state.max_identities"), "{e}");
        let nodir = StateConfig {
            spill_dir: Some("/nonexistent/spill".into()),
            ..StateConfig::default()
        };
        let e = nodir.validate().expect_err("no dir").to_string();
        assert!(e.contains("state.spill_dir"), "{e}");
    }
}
