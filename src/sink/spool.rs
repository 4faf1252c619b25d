//! A bounded, durable, in-order queue on disk: one per network sink. Every alert routed to
//! the sink is appended here first, and the sink's delivery thread reads from the head and
//! acknowledges what the receiver accepted, so alerts survive the receiver being down and
//! nhiwatch restarting, and leave in the order they were found.
//!
//! Layout of the directory: segment files `<20-digit number>.seg` of records
//! `[len u32][arrival u64][check u32][payload]` (little endian; `check` is the low 32 bits of
//! XXH3 over arrival and payload), and `ack`, the position `segment offset` of the first
//! record not yet delivered, replaced atomically. A torn record at the end of the last segment
//! (a crash mid-append) is cut off at open.
//!
//! The bound is on the bytes of records not yet delivered. When it is reached the policy
//! decides: `block` makes the appender wait for the delivery thread; `drop_oldest` discards
//! the oldest records, counted and logged.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Bytes of a record header.
const HEADER: u64 = 16;
/// A new segment is started past this size.
const SEGMENT_BYTES: u64 = 8 << 20;
/// The largest record accepted.
pub const MAX_RECORD: usize = 16 << 20;

/// What to do when the spool is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait until the sink delivers (input stops being consumed: back-pressure).
    #[default]
    Block,
    /// Discard the oldest undelivered alerts, with an error log and a counter.
    DropOldest,
}

/// A spool failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Disk I/O.
    #[error("spool {dir}: {source}")]
    Io {
        /// The spool directory.
        dir: String,
        /// Why.
        source: io::Error,
    },
    /// The disk (or quota) is full: the record is kept in memory, in order, and written by
    /// the next append or [`Spool::sync`] that finds room; until then the spool is not
    /// durable, so the caller must not commit (and `run` pauses consumption).
    #[error("spool {dir}: kept in memory until the disk has room again: {source}")]
    Deferred {
        /// The spool directory.
        dir: String,
        /// Why.
        source: io::Error,
    },
    /// A record larger than the spool could ever hold.
    #[error("spool {dir}: a record of {len} bytes does not fit (limit {limit} bytes)")]
    TooLarge {
        /// The spool directory.
        dir: String,
        /// Its size.
        len: usize,
        /// The limit.
        limit: u64,
    },
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    seq: u64,
    segment: u64,
    offset: u64,
    len: u32,
    arrival: u64,
}

struct Inner {
    queue: VecDeque<Entry>,
    /// Undelivered bytes (headers included).
    bytes: u64,
    next_seq: u64,
    /// Segment numbers present, oldest first; the last is the one appended to.
    segments: VecDeque<u64>,
    tail: File,
    tail_len: u64,
    /// A read handle on the segment being read.
    reader: Option<(u64, File)>,
    dropped: u64,
    closed: bool,
    /// Records accepted while the disk was full, not yet written (arrival, payload).
    overflow: VecDeque<(u64, Vec<u8>)>,
}

/// One record handed to the delivery thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Position in the spool (acknowledge up to it).
    pub seq: u64,
    /// When its input record arrived (Unix microseconds, 0 unknown).
    pub arrival: u64,
    /// The encoded alert.
    pub payload: Vec<u8>,
}

/// What opening a spool found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Opened {
    /// Records left undelivered by a previous run.
    pub records: u64,
    /// Bytes cut off a torn tail.
    pub torn_bytes: u64,
}

/// The spool of one sink.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    when_full: WhenFull,
    inner: Mutex<Inner>,
    /// Signalled on append (the reader waits on it).
    appended: Condvar,
    /// Signalled on acknowledge and drop (a blocked appender waits on it).
    freed: Condvar,
}

fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.seg"))
}

fn check(arrival: u64, payload: &[u8]) -> u32 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&arrival.to_le_bytes());
    h.update(payload);
    h.digest() as u32
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, recovering what a previous run left.
    pub fn open(dir: &Path, max_bytes: u64, when_full: WhenFull) -> Result<(Spool, Opened), Error> {
        let io = |source| Error::Io {
            dir: dir.display().to_string(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let mut segments: Vec<u64> = Vec::new();
        for e in fs::read_dir(dir).map_err(io)? {
            let e = e.map_err(io)?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name.strip_suffix(".seg").and_then(|n| n.parse().ok()) {
                segments.push(n);
            }
        }
        segments.sort_unstable();
        let (ack_seg, ack_off) = read_ack(dir).map_err(io)?;
        // Segments wholly before the acknowledged position were delivered.
        for &n in segments.iter().filter(|&&n| n < ack_seg) {
            let _ = fs::remove_file(seg_path(dir, n));
        }
        segments.retain(|&n| n >= ack_seg);
        if segments.is_empty() {
            segments.push(ack_seg.max(1));
        }
        let mut opened = Opened::default();
        let mut queue = VecDeque::new();
        let mut bytes = 0;
        let mut seq = 0;
        let last = *segments.last().unwrap_or(&1);
        let mut tail_len = 0;
        for &n in &segments {
            let path = seg_path(dir, n);
            let data = match fs::read(&path) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(io(e)),
            };
            let mut off = if n == ack_seg { ack_off } else { 0 };
            let mut good_end = off.min(data.len() as u64);
            while let Some((len, arrival)) = parse_at(&data, off) {
                queue.push_back(Entry {
                    seq,
                    segment: n,
                    offset: off,
                    len,
                    arrival,
                });
                seq += 1;
                bytes += HEADER + len as u64;
                off += HEADER + len as u64;
                good_end = off;
            }
            if good_end < data.len() as u64 {
                let cut = data.len() as u64 - good_end;
                opened.torn_bytes += cut;
                tracing::warn!(spool = %dir.display(), segment = n, offset = good_end, bytes = cut, "spool segment ends in a torn or corrupt record; cut off");
                if n == last {
                    let f = OpenOptions::new().write(true).open(&path).map_err(io)?;
                    f.set_len(good_end).map_err(io)?;
                }
            }
            if n == last {
                tail_len = good_end;
            }
        }
        opened.records = queue.len() as u64;
        let mut tail = crate::files::append(&seg_path(dir, last)).map_err(io)?;
        tail.seek(SeekFrom::End(0)).map_err(io)?;
        let spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            when_full,
            inner: Mutex::new(Inner {
                queue,
                bytes,
                next_seq: seq,
                segments: segments.into(),
                tail,
                tail_len,
                reader: None,
                dropped: 0,
                closed: false,
                overflow: VecDeque::new(),
            }),
            appended: Condvar::new(),
            freed: Condvar::new(),
        };
        Ok((spool, opened))
    }

    fn io(&self, source: io::Error) -> Error {
        Error::Io {
            dir: self.dir.display().to_string(),
            source,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The largest record [`Spool::append`] takes.
    pub fn record_limit(&self) -> usize {
        (self.max_bytes.saturating_sub(HEADER) as usize).min(MAX_RECORD)
    }

    /// Appends one record. When the spool is full, blocks (until delivery frees room or the
    /// spool is closed) or drops the oldest records, as configured. Returns how many old
    /// records were dropped to make room.
    pub fn append(&self, arrival: u64, payload: &[u8]) -> Result<u64, Error> {
        let need = HEADER + payload.len() as u64;
        if payload.len() > MAX_RECORD || need > self.max_bytes {
            return Err(Error::TooLarge {
                dir: self.dir.display().to_string(),
                len: payload.len(),
                limit: self.max_bytes.min(MAX_RECORD as u64),
            });
        }
        let mut g = self.lock();
        let mut dropped = 0;
        while g.bytes + need > self.max_bytes && !g.queue.is_empty() {
            match self.when_full {
                WhenFull::Block => {
                    if g.closed {
                        break;
                    }
                    g = self
                        .freed
                        .wait_timeout(g, Duration::from_millis(500))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                WhenFull::DropOldest => {
                    if let Some(e) = g.queue.pop_front() {
                        g.bytes -= HEADER + e.len as u64;
                        dropped += 1;
                    }
                }
            }
        }
        if dropped > 0 {
            g.dropped += dropped;
            // The acknowledged position moves past the dropped records, so a restart does
            // not bring them back.
            let pos = head_position(&g);
            self.write_ack(pos).map_err(|e| self.io(e))?;
        }
        // Records kept from a full disk go first, so the order holds.
        let written = self
            .drain(&mut g)
            .and_then(|()| self.write_record(&mut g, arrival, payload));
        g.bytes += need;
        match written {
            Ok(()) => {}
            Err(e) if crate::error::is_disk_full(&e) => {
                g.overflow.push_back((arrival, payload.to_vec()));
                return Err(self.deferred(e));
            }
            Err(e) => {
                g.bytes -= need;
                return Err(self.io(e));
            }
        }
        drop(g);
        self.appended.notify_all();
        Ok(dropped)
    }

    fn deferred(&self, source: io::Error) -> Error {
        Error::Deferred {
            dir: self.dir.display().to_string(),
            source,
        }
    }

    /// Writes one record at the tail (a new segment past [`SEGMENT_BYTES`]). A failed write
    /// is cut off the file again, so the tail holds whole records only.
    fn write_record(&self, g: &mut Inner, arrival: u64, payload: &[u8]) -> io::Result<()> {
        if g.tail_len >= SEGMENT_BYTES {
            let next = g.segments.back().copied().unwrap_or(0) + 1;
            // The previous segment is complete: make it durable before leaving it.
            g.tail.sync_data()?;
            let f = crate::files::append(&seg_path(&self.dir, next))?;
            g.tail = f;
            g.tail_len = 0;
            g.segments.push_back(next);
        }
        let need = HEADER + payload.len() as u64;
        let mut rec = Vec::with_capacity(need as usize);
        rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        rec.extend_from_slice(&arrival.to_le_bytes());
        rec.extend_from_slice(&check(arrival, payload).to_le_bytes());
        rec.extend_from_slice(payload);
        if let Err(e) = g.tail.write_all(&rec) {
            // Cutting needs no space; if even that fails, the torn record is cut at the
            // next open (records after it would be too, so say so).
            if let Err(cut) = g.tail.set_len(g.tail_len) {
                tracing::error!(spool = %self.dir.display(), error = %cut, "cannot cut a torn record off the spool's tail");
                return Err(io::Error::other(format!(
                    "{e}; and cutting the torn record failed: {cut}"
                )));
            }
            return Err(e);
        }
        let entry = Entry {
            seq: g.next_seq,
            segment: g.segments.back().copied().unwrap_or(1),
            offset: g.tail_len,
            len: payload.len() as u32,
            arrival,
        };
        g.next_seq += 1;
        g.tail_len += need;
        g.queue.push_back(entry);
        Ok(())
    }

    /// Writes the records kept from a full disk, oldest first, as long as there is room.
    fn drain(&self, g: &mut Inner) -> io::Result<()> {
        while let Some((arrival, payload)) = g.overflow.pop_front() {
            if let Err(e) = self.write_record(g, arrival, &payload) {
                g.overflow.push_front((arrival, payload));
                return Err(e);
            }
        }
        Ok(())
    }

    /// Makes every appended record durable (before the input offset is committed): the
    /// records kept from a full disk are written first ([`Error::Deferred`] while there is
    /// still no room).
    pub fn sync(&self) -> Result<(), Error> {
        let mut g = self.lock();
        let had = g.overflow.len();
        if let Err(e) = self.drain(&mut g) {
            return Err(if crate::error::is_disk_full(&e) {
                self.deferred(e)
            } else {
                self.io(e)
            });
        }
        let synced = g.tail.sync_data().map_err(|e| self.io(e));
        drop(g);
        if had > 0 {
            self.appended.notify_all();
        }
        synced
    }

    /// Up to `max_records` records (and about `max_bytes`) from the head, oldest first,
    /// waiting up to `wait` for the first one. Records stay in the spool until acknowledged.
    pub fn peek(
        &self,
        max_records: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Vec<Record>, Error> {
        let deadline = Instant::now() + wait;
        let mut g = self.lock();
        while g.queue.is_empty() && !g.closed {
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            g = self
                .appended
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let mut out = Vec::new();
        let mut size = 0;
        let entries: Vec<Entry> = g.queue.iter().take(max_records).copied().collect();
        for e in entries {
            if !out.is_empty() && size + e.len as usize > max_bytes {
                break;
            }
            let payload = self.read(&mut g, &e).map_err(|err| self.io(err))?;
            size += payload.len();
            out.push(Record {
                seq: e.seq,
                arrival: e.arrival,
                payload,
            });
        }
        Ok(out)
    }

    fn read(&self, g: &mut Inner, e: &Entry) -> io::Result<Vec<u8>> {
        if g.reader.as_ref().is_none_or(|(n, _)| *n != e.segment) {
            g.reader = Some((e.segment, File::open(seg_path(&self.dir, e.segment))?));
        }
        let Some((_, f)) = g.reader.as_mut() else {
            return Err(io::Error::other("no reader"));
        };
        f.seek(SeekFrom::Start(e.offset + HEADER))?;
        let mut buf = vec![0; e.len as usize];
        f.read_exact(&mut buf)?;
        Ok(buf)
    }

    /// Marks every record up to and including `seq` delivered.
    pub fn ack(&self, seq: u64) -> Result<(), Error> {
        let mut g = self.lock();
        let mut any = false;
        while g.queue.front().is_some_and(|e| e.seq <= seq) {
            if let Some(e) = g.queue.pop_front() {
                g.bytes -= HEADER + e.len as u64;
                any = true;
            }
        }
        if any {
            let (seg, off) = head_position(&g);
            self.write_ack((seg, off)).map_err(|e| self.io(e))?;
            // Delivered segments other than the one appended to can go.
            while g.segments.len() > 1 && g.segments.front().is_some_and(|&n| n < seg) {
                if let Some(n) = g.segments.pop_front() {
                    if g.reader.as_ref().is_some_and(|(r, _)| *r == n) {
                        g.reader = None;
                    }
                    let _ = fs::remove_file(seg_path(&self.dir, n));
                }
            }
        }
        drop(g);
        self.freed.notify_all();
        Ok(())
    }

    /// Replaces the ack file durably: the new content is on disk before the rename, and the
    /// rename before delivered segments are removed (a crash must never leave an empty ack,
    /// which would keep the spool from opening, nor one that points at a removed segment).
    fn write_ack(&self, (seg, off): (u64, u64)) -> io::Result<()> {
        let tmp = self.dir.join("ack.tmp");
        {
            let mut f = crate::files::create(&tmp)?;
            f.write_all(format!("{seg} {off}\n").as_bytes())?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.dir.join("ack"))?;
        File::open(&self.dir)?.sync_all()
    }

    /// Records not yet delivered (those kept in memory from a full disk included).
    pub fn len(&self) -> usize {
        let g = self.lock();
        g.queue.len() + g.overflow.len()
    }

    /// True when everything was delivered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Undelivered bytes.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Records dropped because the spool was full, since open.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Wakes every waiter and makes `peek` return at once and blocked appends proceed
    /// (beyond the bound) — for shutdown.
    pub fn close(&self) {
        self.lock().closed = true;
        self.appended.notify_all();
        self.freed.notify_all();
    }
}

/// The position of the first undelivered record, or the end of the tail when none is left.
fn head_position(g: &Inner) -> (u64, u64) {
    match g.queue.front() {
        Some(e) => (e.segment, e.offset),
        None => (g.segments.back().copied().unwrap_or(1), g.tail_len),
    }
}

fn read_ack(dir: &Path) -> io::Result<(u64, u64)> {
    match fs::read_to_string(dir.join("ack")) {
        Ok(s) => {
            let mut it = s.split_whitespace().map(str::parse::<u64>);
            match (it.next(), it.next()) {
                (Some(Ok(seg)), Some(Ok(off))) => Ok((seg, off)),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("ack file holds {s:?}, not `segment offset`"),
                )),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((0, 0)),
        Err(e) => Err(e),
    }
}

/// The record at `off`: (payload length, arrival), when whole and intact.
fn parse_at(data: &[u8], off: u64) -> Option<(u32, u64)> {
    let off = usize::try_from(off).ok()?;
    let h = data.get(off..off + HEADER as usize)?;
    let len = u32::from_le_bytes(h[0..4].try_into().ok()?);
    let arrival = u64::from_le_bytes(h[4..12].try_into().ok()?);
    let sum = u32::from_le_bytes(h[12..16].try_into().ok()?);
    let start = off + HEADER as usize;
    let payload = data.get(start..start.checked_add(len as usize)?)?;
    (check(arrival, payload) == sum).then_some((len, arrival))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(s: &Spool) -> Vec<String> {
        s.peek(usize::MAX, usize::MAX, Duration::ZERO)
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r.payload).unwrap())
            .collect()
    }

    #[test]
    fn delivers_in_order_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (s, o) = Spool::open(dir.path(), 1 << 20, WhenFull::Block).unwrap();
        assert_eq!(o, Opened::default());
        for i in 0..5 {
            s.append(i, format!("alert-{i}").as_bytes()).unwrap();
        }
        let got = s.peek(2, usize::MAX, Duration::ZERO).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].arrival, 1);
        s.ack(got[1].seq).unwrap();
        s.sync().unwrap();
        drop(s);
        let (s, o) = Spool::open(dir.path(), 1 << 20, WhenFull::Block).unwrap();
        assert_eq!(o.records, 3);
        assert_eq!(payloads(&s), ["alert-2", "alert-3", "alert-4"]);
        s.append(9, b"alert-5").unwrap();
        let all = s.peek(10, usize::MAX, Duration::ZERO).unwrap();
        s.ack(all.last().unwrap().seq).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0);
        drop(s);
        let (s, o) = Spool::open(dir.path(), 1 << 20, WhenFull::Block).unwrap();
        assert_eq!(o.records, 0);
        assert!(s.is_empty());
    }

    #[test]
    fn torn_tail_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Spool::open(dir.path(), 1 << 20, WhenFull::Block).unwrap();
        s.append(1, b"whole").unwrap();
        s.append(2, b"torn-record").unwrap();
        drop(s);
        let seg = seg_path(dir.path(), 1);
        let len = fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let (s, o) = Spool::open(dir.path(), 1 << 20, WhenFull::Block).unwrap();
        assert_eq!(o.records, 1);
        assert_eq!(o.torn_bytes, HEADER + 11 - 3);
        s.append(3, b"after").unwrap();
        assert_eq!(payloads(&s), ["whole", "after"]);
    }

    #[test]
    fn drop_oldest_keeps_the_bound_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        // Room for three records of 10 bytes.
        let (s, _) = Spool::open(dir.path(), 3 * (HEADER + 10), WhenFull::DropOldest).unwrap();
        for i in 0..5 {
            s.append(0, format!("record-{i:03}").as_bytes()).unwrap();
        }
        assert_eq!(s.dropped(), 2);
        assert_eq!(payloads(&s), ["record-002", "record-003", "record-004"]);
        drop(s);
        let (s, o) = Spool::open(dir.path(), 1 << 20, WhenFull::Block).unwrap();
        assert_eq!(o.records, 3, "dropped records stay dropped after a restart");
        assert_eq!(payloads(&s)[0], "record-002");
    }

    #[test]
    fn block_waits_for_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Spool::open(dir.path(), 2 * (HEADER + 10), WhenFull::Block).unwrap();
        let s = std::sync::Arc::new(s);
        s.append(0, b"record-000").unwrap();
        s.append(0, b"record-001").unwrap();
        let writer = {
            let s = s.clone();
            std::thread::spawn(move || s.append(0, b"record-002").unwrap())
        };
        // The writer cannot finish until the head is acknowledged.
        let first = s.peek(1, usize::MAX, Duration::ZERO).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(s.len(), 2, "a blocked append must not have written");
        s.ack(first[0].seq).unwrap();
        assert_eq!(writer.join().unwrap(), 0);
        assert_eq!(payloads(&s), ["record-001", "record-002"]);
    }

    #[test]
    fn segments_roll_and_delivered_ones_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Spool::open(dir.path(), 64 << 20, WhenFull::Block).unwrap();
        let big = vec![b'x'; 1 << 20];
        for _ in 0..10 {
            s.append(0, &big).unwrap();
        }
        let segs = || {
            fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|x| x == "seg")
                })
                .count()
        };
        assert_eq!(segs(), 2);
        let all = s.peek(100, usize::MAX, Duration::ZERO).unwrap();
        assert_eq!(all.len(), 10);
        s.ack(all[9].seq).unwrap();
        assert_eq!(segs(), 1);
        drop(s);
        let (s, o) = Spool::open(dir.path(), 64 << 20, WhenFull::Block).unwrap();
        assert_eq!(o.records, 0);
        s.append(0, b"next").unwrap();
        assert_eq!(payloads(&s), ["next"]);
    }

    #[test]
    fn too_large_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Spool::open(dir.path(), 100, WhenFull::Block).unwrap();
        assert!(matches!(
            s.append(0, &[0; 200]),
            Err(Error::TooLarge { .. })
        ));
    }
}
