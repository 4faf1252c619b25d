//! Writing the lake: rows go to an open *part* per (table, day[, source]); each part stages
//! its rows in an Arrow IPC stream file under `_staging/` and becomes one Parquet file when it
//! rolls (by size, by age, or at close).
//!
//! Why stage: a Parquet file is readable only once its footer is written, so a file per
//! checkpoint would mean thousands of tiny files a day, and a file per roll would lose what
//! a crash catches unfinished. The staging stream can be appended and `fsync`ed at every
//! checkpoint ([`Writer::sync`]), so an input offset is committed only once its rows are on
//! disk, and Parquet files stay large. A staging file whose writer died (its `flock` is free)
//! is converted by the next writer that opens the lake; a torn last batch is cut.
//!
//! A write that fails for want of disk space loses no row: the batches not yet wholly in the
//! staging file (a failed write leaves a torn tail; the write buffer is up to 256 KiB of
//! batches) are kept in memory, the file is cut back to its last whole batch and set aside,
//! and [`Writer::sync`] writes them again, to a new staging file, once it can. Until then
//! every call that touches the disk fails with the I/O error (so the caller pauses) while
//! rows keep being accepted into memory.
//!
//! Rows become visible to queries when their part rolls (`lake.roll_interval`, 5 minutes by
//! default). Parquet files are written to `*.parquet.tmp`, synced, and renamed, so readers
//! never see half a file.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

use super::schema::{AlertRows, EventRows, Table, day_of};
use super::{Error, LakeConfig, Result};
use crate::alert::Alert;
use crate::event::Event;
use crate::telemetry::metrics;
use crate::time::Timestamp;

/// Rows gathered in builders before they are staged as one batch.
const BATCH_ROWS: usize = 8192;
/// Most parts open at once (each holds a staging file, its descriptor and write buffer).
/// Past it the part written least recently rolls. A replay of history moves through days
/// faster than `lake.roll_interval`: with no bound, a 90-day replay held some 360 parts
/// open. 64 is more than nine days of every source and the alerts, so a live stream's late
/// events and a replayed week do not churn it.
pub const MAX_OPEN_PARTS: usize = 64;
/// Most rows waiting in builders across all parts (some 70 MB of events with their
/// records). Past it the part with the most waiting rows is staged: the bound is on memory,
/// not on files, so no small Parquet file comes of it.
pub const PENDING_ROWS: usize = 65_536;
/// Schema metadata naming the directory (relative to the lake) a staging file belongs to.
const PARTITION_KEY: &str = "nhiwatch.partition";
/// Schema metadata naming the table of a staging file.
const TABLE_KEY: &str = "nhiwatch.table";
const STAGING: &str = "_staging";

/// Counts of what a writer wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Event rows written to Parquet files.
    pub events: u64,
    /// Alert rows written to Parquet files.
    pub alerts: u64,
    /// Parquet files written.
    pub files: u64,
    /// Bytes of Parquet written.
    pub bytes: u64,
}

/// A part: table, UTC day (days since the Unix epoch, so routing a row allocates nothing)
/// and, for events, source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PartKey {
    table: Table,
    day: i64,
    source: Option<&'static str>,
}

const DAY_MICROS: i64 = 86_400 * 1_000_000;

impl PartKey {
    fn new(table: Table, t: Timestamp, source: Option<&'static str>) -> Self {
        PartKey {
            table,
            day: t.as_micros().div_euclid(DAY_MICROS),
            source,
        }
    }

    fn dir(&self) -> String {
        let day = day_of(Timestamp::from_micros(self.day * DAY_MICROS));
        match self.source {
            Some(s) => format!("{}/day={day}/source={s}", self.table.name()),
            None => format!("{}/day={day}", self.table.name()),
        }
    }
}

enum Rows {
    Events(Box<EventRows>),
    Alerts(Box<AlertRows>),
}

impl Rows {
    fn len(&self) -> usize {
        match self {
            Rows::Events(r) => r.len(),
            Rows::Alerts(r) => r.len(),
        }
    }

    fn finish(&mut self) -> std::result::Result<RecordBatch, datafusion::arrow::error::ArrowError> {
        match self {
            Rows::Events(r) => r.finish(),
            Rows::Alerts(r) => r.finish(),
        }
    }
}

/// A file that counts the bytes that reached it.
struct Counted {
    file: File,
    written: u64,
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

struct Staging {
    path: PathBuf,
    /// Holds the `flock` that tells other writers this file is live.
    lock: File,
    writer: StreamWriter<BufWriter<Counted>>,
    /// The table's schema with the partition in its metadata (batches are rebranded to it).
    schema: SchemaRef,
    bytes: u64,
    dirty: bool,
    /// Where the stream's header ends.
    header_end: u64,
    /// Where the last batch known to be wholly in the file ends.
    landed_end: u64,
    /// Batches written to the stream but maybe not wholly to the file yet (the write
    /// buffer's), each with the stream position it ends at: what a failed write would lose.
    in_flight: VecDeque<(u64, RecordBatch)>,
}

impl Staging {
    /// The stream position written so far (file and buffer).
    fn position(&self) -> u64 {
        let buffered = self.writer.get_ref();
        buffered.get_ref().written + buffered.buffer().len() as u64
    }

    /// Bytes that reached the file.
    fn on_disk(&self) -> u64 {
        self.writer.get_ref().get_ref().written
    }

    /// Forgets the batches now wholly in the file.
    fn landed(&mut self) {
        let on_disk = self.on_disk();
        while let Some((end, _)) = self.in_flight.front()
            && *end <= on_disk
        {
            self.landed_end = *end;
            self.in_flight.pop_front();
        }
    }
}

struct Part {
    rows: Rows,
    staging: Option<Staging>,
    /// Batches a failed write gave back, written first at the next stage.
    retry: Vec<RecordBatch>,
    opened: Instant,
    /// The writer's row count when a row last came to this part (least recent rolls first).
    last: u64,
}

/// Writes events and alerts to a lake directory. Not shared between threads: `run`'s ingest
/// stage owns one for events and its detect stage one for alerts; `replay` one for both.
pub struct Writer {
    root: PathBuf,
    id: String,
    seq: u64,
    roll_bytes: u64,
    roll_after: Duration,
    props: WriterProperties,
    parts: BTreeMap<PartKey, Part>,
    /// Rows added so far (the clock of [`Part::last`]).
    added: u64,
    /// Rows in builders, not yet staged, across all parts.
    pending: usize,
    written: Written,
    fresh_staging: bool,
    /// Staging files cut back to their last whole batch after a failed write, to convert
    /// once the disk has room (or by the next writer to open the lake).
    sealed: Vec<PathBuf>,
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

fn arrow_err(path: &Path) -> impl FnOnce(datafusion::arrow::error::ArrowError) -> Error + '_ {
    move |e| Error::Format {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn parquet_err(
    path: &Path,
) -> impl FnOnce(datafusion::parquet::errors::ParquetError) -> Error + '_ {
    move |e| Error::Format {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// `fsync` a directory so a rename or a new file in it survives a crash.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "sync directory"))
}

/// The Parquet writer settings of every lake file.
pub fn properties(row_group_rows: usize) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(row_group_rows.max(1024)))
        .set_created_by(format!("nhiwatch {}", env!("CARGO_PKG_VERSION")))
        .build()
}

impl Writer {
    /// Opens the lake at `cfg.dir` (creating it), and converts the staging files of writers
    /// that died. `name` tells this writer's files apart (`ingest`, `detect`, `replay`).
    pub fn open(root: &Path, cfg: &LakeConfig, name: &str) -> Result<Writer> {
        fs::create_dir_all(root.join(STAGING)).map_err(io_err(root, "create"))?;
        let host = crate::encode::hostname();
        let mut rnd = [0u8; 4];
        let _ = getrandom::fill(&mut rnd);
        let id = format!(
            "{}-{name}-{}-{:08x}",
            host.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_"),
            std::process::id(),
            u32::from_le_bytes(rnd)
        );
        let mut w = Writer {
            root: root.to_path_buf(),
            id,
            seq: 0,
            roll_bytes: cfg.roll_bytes,
            roll_after: Duration::from_secs(cfg.roll_interval.as_secs()),
            props: properties(cfg.row_group_rows),
            parts: BTreeMap::new(),
            added: 0,
            pending: 0,
            written: Written::default(),
            fresh_staging: false,
            sealed: Vec::new(),
        };
        w.recover()?;
        Ok(w)
    }

    /// What this writer has written to Parquet so far.
    pub fn written(&self) -> Written {
        self.written
    }

    /// The lake directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Parts open now (rows pending or staged).
    pub fn open_parts(&self) -> usize {
        self.parts.len()
    }

    /// Rows in builders across all parts, not yet staged.
    pub fn pending_rows(&self) -> usize {
        self.pending
    }

    /// After a row was added: stages what is due by the part's size or by [`PENDING_ROWS`].
    fn after_row(&mut self, key: PartKey, part_rows: usize) -> Result<()> {
        self.pending += 1;
        if part_rows >= BATCH_ROWS {
            self.stage(&key)?;
        }
        if self.pending > PENDING_ROWS {
            let biggest = self
                .parts
                .iter()
                .max_by_key(|(_, p)| p.rows.len())
                .map(|(k, _)| *k);
            if let Some(k) = biggest {
                self.stage(&k)?;
            }
        }
        Ok(())
    }

    /// Past [`MAX_OPEN_PARTS`], rolls the least recently written part to make room for
    /// `key`'s. A part that cannot roll (no disk space) stays open: the bound is exceeded
    /// rather than a row refused.
    fn make_room(&mut self, key: PartKey) -> Result<()> {
        // Looked up first only when the bound is reached: the usual row pays one look-up.
        if self.parts.len() >= MAX_OPEN_PARTS && !self.parts.contains_key(&key) {
            let oldest = self
                .parts
                .iter()
                .min_by_key(|(_, p)| p.last)
                .map(|(k, _)| *k);
            if let Some(old) = oldest {
                self.stage(&old)?;
                self.roll(&old)?;
                self.parts.remove(&old);
            }
        }
        Ok(())
    }

    /// The part for `key`, opened when there is none.
    fn part(&mut self, key: PartKey) -> &mut Part {
        self.added += 1;
        let added = self.added;
        let part = self.parts.entry(key).or_insert_with_key(|k| Part {
            rows: match k.table {
                Table::Events => Rows::Events(Box::new(EventRows::new(mask))),
                _ => Rows::Alerts(Box::default()),
            },
            staging: None,
            retry: Vec::new(),
            opened: Instant::now(),
            last: added,
        });
        part.last = added;
        part
    }

    /// Adds an event. It is on disk after the next [`Writer::sync`]. The row is kept even
    /// when this fails (an error staging earlier rows: the disk is full, say).
    pub fn event(&mut self, e: &Event) -> Result<()> {
        let key = PartKey::new(Table::Events, e.time, Some(e.source.as_str()));
        let room = self.make_room(key);
        let part = self.part(key);
        if let Rows::Events(r) = &mut part.rows {
            r.push(e);
        }
        let n = part.rows.len();
        room.and(self.after_row(key, n))
    }

    /// Adds an alert raised at `raised` (wall time); kept even when this fails, as
    /// [`Writer::event`].
    pub fn alert(&mut self, a: &Alert, raised: Timestamp) -> Result<()> {
        let key = PartKey::new(Table::Alerts, a.event_time, None);
        let room = self.make_room(key);
        let part = self.part(key);
        if let Rows::Alerts(r) = &mut part.rows {
            r.push(a, raised);
        }
        let n = part.rows.len();
        room.and(self.after_row(key, n))
    }

    /// Moves a part's pending rows (after the batches a failed write gave back) to its
    /// staging file, creating it. On a failed write, nothing is lost: see [`Writer::seal`].
    fn stage(&mut self, key: &PartKey) -> Result<()> {
        let seq = self.seq;
        let roll_bytes = self.roll_bytes;
        let staging_dir = self.root.join(STAGING);
        let id = &self.id;
        let Some(part) = self.parts.get_mut(key) else {
            return Ok(());
        };
        let mut batches = std::mem::take(&mut part.retry);
        if part.rows.len() > 0 {
            self.pending -= part.rows.len();
            match part.rows.finish() {
                Ok(b) => batches.push(b),
                Err(e) => {
                    part.retry = batches;
                    return Err(arrow_err(&staging_dir)(e));
                }
            }
        }
        if batches.is_empty() {
            return Ok(());
        }
        if part.staging.is_none() {
            let path = staging_dir.join(format!("{id}-{seq:06}.arrows"));
            match open_staging(&path, key) {
                Ok(st) => {
                    self.seq += 1;
                    part.staging = Some(st);
                    part.opened = Instant::now();
                    self.fresh_staging = true;
                }
                Err(e) => {
                    // Nothing was written: the batches wait for the next attempt.
                    let _ = fs::remove_file(&path);
                    part.retry = batches;
                    return Err(e);
                }
            }
        }
        let mut full = false;
        let mut failed = None;
        if let Some(st) = &mut part.staging {
            let mut left = batches.into_iter();
            while let Some(batch) = left.next() {
                let written = batch
                    .clone()
                    .with_schema(st.schema.clone())
                    .and_then(|b| st.writer.write(&b));
                match written {
                    Ok(()) => {
                        st.bytes += batch.get_array_memory_size() as u64;
                        let end = st.position();
                        st.in_flight.push_back((end, batch));
                        st.landed();
                        st.dirty = true;
                    }
                    Err(e) => {
                        let back: Vec<RecordBatch> = std::iter::once(batch).chain(left).collect();
                        failed = Some((arrow_err(&st.path)(e), back));
                        break;
                    }
                }
            }
            full = st.bytes >= roll_bytes;
        }
        if let Some((e, back)) = failed {
            self.seal(key, back);
            return Err(e);
        }
        if full {
            self.roll(key)?;
        }
        Ok(())
    }

    /// After a failed write to a part's staging file: the batches not wholly in the file go
    /// back to the part (before `back`, the ones the write did not reach), the file is cut
    /// back to its last whole batch and set aside for conversion (or removed if it holds
    /// none), so the part's next rows start a new file.
    fn seal(&mut self, key: &PartKey, back: Vec<RecordBatch>) {
        let Some(part) = self.parts.get_mut(key) else {
            return;
        };
        let Some(st) = part.staging.take() else {
            part.retry.extend(back);
            return;
        };
        let on_disk = st.on_disk();
        let mut whole = st.landed_end.max(st.header_end);
        let mut retry = Vec::new();
        for (end, batch) in st.in_flight {
            if end <= on_disk {
                whole = whole.max(end);
            } else {
                retry.push(batch);
            }
        }
        retry.extend(back);
        retry.append(&mut part.retry);
        part.retry = retry;
        // The write buffer may reach the file as the writer is dropped; cut after that.
        drop(st.writer);
        let cut = st.lock.set_len(whole);
        let rows_kept = whole > st.header_end && whole <= on_disk;
        if cut.is_err() || !rows_kept {
            // Whatever it held is in `retry` (or the cut failed and it cannot be trusted
            // past its header: its batches are all written again).
            if cut.is_err() {
                tracing::warn!(staging = %st.path.display(), "cannot cut a staging file back after a failed write; its rows are written again elsewhere");
                let _ = fs::rename(&st.path, st.path.with_extension("arrows.broken"));
            } else {
                let _ = fs::remove_file(&st.path);
            }
            return;
        }
        drop(st.lock);
        self.sealed.push(st.path);
    }

    /// Converts the files set aside after failed writes.
    fn convert_sealed(&mut self) -> Result<()> {
        while let Some(path) = self.sealed.last().cloned() {
            match convert(&self.root, &path, &self.id, self.seq, &self.props) {
                Ok((table, rows, bytes)) => {
                    self.seq += 1;
                    self.sealed.pop();
                    if rows > 0 {
                        self.count(table, rows, bytes);
                    }
                }
                Err(e) if e.is_disk_full() || matches!(e, Error::Io { .. }) => return Err(e),
                Err(e) => {
                    self.sealed.pop();
                    metrics::get().error(metrics::stage::LAKE, "staging_unreadable");
                    tracing::error!(staging = %path.display(), error = %e, "cannot convert staging file; left in place");
                }
            }
        }
        Ok(())
    }

    /// Makes every row added so far durable (staged and `fsync`ed), then rolls the parts that
    /// are due. Call before committing the input offsets those rows came from.
    pub fn sync(&mut self) -> Result<()> {
        self.convert_sealed()?;
        let keys: Vec<PartKey> = self.parts.keys().copied().collect();
        for key in &keys {
            self.stage(key)?;
        }
        for key in &keys {
            let Some(part) = self.parts.get_mut(key) else {
                continue;
            };
            if let Some(st) = &mut part.staging
                && st.dirty
            {
                let flushed = match st.writer.flush() {
                    Ok(()) => st
                        .writer
                        .get_mut()
                        .flush()
                        .map_err(io_err(&st.path, "write")),
                    Err(e) => Err(arrow_err(&st.path)(e)),
                };
                st.landed();
                if let Err(e) = flushed {
                    self.seal(key, Vec::new());
                    return Err(e);
                }
                st.lock.sync_data().map_err(io_err(&st.path, "sync"))?;
                st.dirty = false;
            }
        }
        if self.fresh_staging {
            sync_dir(&self.root.join(STAGING))?;
            self.fresh_staging = false;
        }
        self.roll_due()
    }

    /// Rolls the parts older than `lake.roll_interval` (their rows must be staged already;
    /// [`Writer::sync`] does both).
    fn roll_due(&mut self) -> Result<()> {
        let due: Vec<PartKey> = self
            .parts
            .iter()
            .filter(|(_, p)| p.staging.is_some() && p.opened.elapsed() >= self.roll_after)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.roll(&key)?;
        }
        // Parts with nothing pending and nothing staged are forgotten (yesterday's, say).
        self.parts
            .retain(|_, p| p.staging.is_some() || p.rows.len() > 0);
        Ok(())
    }

    /// Turns a part's staging file into a Parquet file.
    fn roll(&mut self, key: &PartKey) -> Result<()> {
        let Some(part) = self.parts.get_mut(key) else {
            return Ok(());
        };
        let Some(st) = part.staging.as_mut() else {
            return Ok(());
        };
        let finished = st.writer.finish().map_err(arrow_err(&st.path));
        st.landed();
        if let Err(e) = finished {
            self.seal(key, Vec::new());
            return Err(e);
        }
        let Some(st) = part.staging.take() else {
            return Ok(());
        };
        drop(st.writer);
        let converted = convert(&self.root, &st.path, &self.id, self.seq, &self.props);
        drop(st.lock);
        match converted {
            Ok((_, rows, bytes)) => {
                self.seq += 1;
                self.count(key.table, rows, bytes);
                Ok(())
            }
            Err(e) => {
                // The staging file is whole: it waits to be converted.
                self.sealed.push(st.path);
                Err(e)
            }
        }
    }

    fn count(&mut self, table: Table, rows: u64, bytes: u64) {
        match table {
            Table::Events => self.written.events += rows,
            _ => self.written.alerts += rows,
        }
        self.written.files += 1;
        self.written.bytes += bytes;
        metrics::get().lake_written(table.name(), rows, bytes);
    }

    /// Rolls every part: all rows so far are in Parquet files. For the end of a replay and
    /// a clean shutdown.
    pub fn close(&mut self) -> Result<Written> {
        let keys: Vec<PartKey> = self.parts.keys().copied().collect();
        for key in &keys {
            self.stage(key)?;
            self.roll(key)?;
        }
        self.convert_sealed()?;
        self.parts.clear();
        Ok(self.written)
    }

    /// Converts the staging files nobody holds (their writer died) into Parquet files.
    fn recover(&mut self) -> Result<()> {
        let dir = self.root.join(STAGING);
        let entries = fs::read_dir(&dir).map_err(io_err(&dir, "list"))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "arrows") {
                continue;
            }
            let Ok(file) = File::open(&path) else {
                continue;
            };
            if file.try_lock().is_err() {
                // A live writer's.
                continue;
            }
            match convert(&self.root, &path, &self.id, self.seq, &self.props) {
                Ok((table, rows, bytes)) => {
                    self.seq += 1;
                    tracing::warn!(
                        staging = %path.display(),
                        rows,
                        "converted the staging file of a writer that stopped unexpectedly"
                    );
                    if rows > 0 {
                        self.count(table, rows, bytes);
                    }
                }
                Err(e) => {
                    // Keep it for a person to look at; never block the pipeline on it.
                    metrics::get().error(metrics::stage::LAKE, "staging_unreadable");
                    tracing::error!(staging = %path.display(), error = %e, "cannot convert staging file; left in place");
                }
            }
        }
        Ok(())
    }
}

/// Creates and locks a part's staging file, its stream header written.
fn open_staging(path: &Path, key: &PartKey) -> Result<Staging> {
    let file = crate::files::create_new(path).map_err(io_err(path, "create"))?;
    file.try_lock().map_err(|e| Error::Io {
        what: "lock",
        path: path.display().to_string(),
        source: io::Error::other(e.to_string()),
    })?;
    let lock = file.try_clone().map_err(io_err(path, "open"))?;
    let mut meta = std::collections::HashMap::new();
    meta.insert(PARTITION_KEY.to_string(), key.dir());
    meta.insert(TABLE_KEY.to_string(), key.table.name().to_string());
    let schema = std::sync::Arc::new(Schema::new_with_metadata(
        key.table.schema().fields().clone(),
        meta,
    ));
    let counted = Counted { file, written: 0 };
    let writer = StreamWriter::try_new(BufWriter::with_capacity(256 << 10, counted), &schema)
        .map_err(arrow_err(path))?;
    let mut st = Staging {
        path: path.to_path_buf(),
        lock,
        writer,
        schema,
        bytes: 0,
        dirty: true,
        header_end: 0,
        landed_end: 0,
        in_flight: VecDeque::new(),
    };
    st.header_end = st.position();
    Ok(st)
}

/// Masks secrets in a native record before it is stored (a copy only when one is masked).
fn mask(text: &str) -> std::borrow::Cow<'_, str> {
    match crate::redact::redact(text.as_bytes()) {
        std::borrow::Cow::Borrowed(_) => std::borrow::Cow::Borrowed(text),
        std::borrow::Cow::Owned(v) => {
            std::borrow::Cow::Owned(String::from_utf8_lossy(&v).into_owned())
        }
    }
}

/// Reads a staging stream (up to a torn tail) and writes its rows to a Parquet file in the
/// partition its metadata names; removes the staging file. Returns the table its metadata
/// names, rows and bytes.
fn convert(
    root: &Path,
    staging: &Path,
    id: &str,
    seq: u64,
    props: &WriterProperties,
) -> Result<(Table, u64, u64)> {
    let file = File::open(staging).map_err(io_err(staging, "open"))?;
    let reader = match StreamReader::try_new(BufReader::with_capacity(1 << 20, file), None) {
        Ok(r) => r,
        Err(_) if fs::metadata(staging).map(|m| m.len()).unwrap_or(0) < 16 => {
            // Created but never written (a crash right after creation): nothing to keep.
            fs::remove_file(staging).map_err(io_err(staging, "remove"))?;
            return Ok((Table::Events, 0, 0));
        }
        Err(e) => return Err(arrow_err(staging)(e)),
    };
    let schema: SchemaRef = reader.schema();
    let table = match schema.metadata().get(TABLE_KEY).map(String::as_str) {
        Some("alerts") => Table::Alerts,
        _ => Table::Events,
    };
    let Some(rel) = schema.metadata().get(PARTITION_KEY).cloned() else {
        return Err(Error::Format {
            path: staging.display().to_string(),
            message: format!("no {PARTITION_KEY} in the stream's metadata"),
        });
    };
    if rel.split('/').any(|c| c == ".." || c.is_empty()) {
        return Err(Error::Format {
            path: staging.display().to_string(),
            message: format!("bad partition {rel:?}"),
        });
    }
    let dir = root.join(&rel);
    fs::create_dir_all(&dir).map_err(io_err(&dir, "create"))?;
    let stamp = Timestamp::now().to_rfc3339();
    let stamp: String = stamp[..19].chars().filter(char::is_ascii_digit).collect();
    let name = format!("part-{stamp}-{id}-{seq:06}.parquet");
    let tmp = dir.join(format!("{name}.tmp"));
    let written = write_parquet(reader, staging, &tmp, props, &schema);
    let (rows, bytes) = match written {
        Ok(Some(done)) => done,
        Ok(None) => {
            // No whole batch: nothing to keep.
            let _ = fs::remove_file(&tmp);
            fs::remove_file(staging).map_err(io_err(staging, "remove"))?;
            return Ok((table, 0, 0));
        }
        Err(e) => {
            // No half-written file is left behind (a full disk, most likely).
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let dest = dir.join(&name);
    fs::rename(&tmp, &dest).map_err(io_err(&dest, "rename"))?;
    sync_dir(&dir)?;
    fs::remove_file(staging).map_err(io_err(staging, "remove"))?;
    if let Some(parent) = staging.parent() {
        sync_dir(parent)?;
    }
    Ok((table, rows, bytes))
}

/// Writes a staging stream's whole batches to `tmp` as Parquet, synced: rows and bytes, or
/// `None` when it holds no row.
fn write_parquet(
    reader: StreamReader<BufReader<File>>,
    staging: &Path,
    tmp: &Path,
    props: &WriterProperties,
    schema: &SchemaRef,
) -> Result<Option<(u64, u64)>> {
    let out = crate::files::create(tmp).map_err(io_err(tmp, "create"))?;
    let plain = Schema::new(schema.fields().clone());
    let mut w = ArrowWriter::try_new(
        BufWriter::with_capacity(1 << 20, out),
        std::sync::Arc::new(plain.clone()),
        Some(props.clone()),
    )
    .map_err(parquet_err(tmp))?;
    let mut rows = 0u64;
    for batch in reader {
        match batch {
            Ok(b) => {
                // The staging metadata stays out of the Parquet file.
                let b =
                    RecordBatch::try_new(std::sync::Arc::new(plain.clone()), b.columns().to_vec())
                        .map_err(arrow_err(staging))?;
                rows += b.num_rows() as u64;
                w.write(&b).map_err(parquet_err(tmp))?;
            }
            Err(e) => {
                // A torn tail from a crash mid-write: what came before is whole.
                tracing::warn!(staging = %staging.display(), rows, error = %e, "staging file ends in a torn batch; keeping the rows before it");
                break;
            }
        }
    }
    if rows == 0 {
        return Ok(None);
    }
    let out = w.into_inner().map_err(parquet_err(tmp))?;
    let file = out
        .into_inner()
        .map_err(|e| io_err(tmp, "write")(e.into_error()))?;
    file.sync_all().map_err(io_err(tmp, "sync"))?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(Some((rows, bytes)))
}

/// Writes `batch` as `<table>/<name>.parquet`, replacing the file atomically: the tables
/// replaced whole at each checkpoint (`baselines`, `identities`; one file per writer).
pub fn write_whole(root: &Path, table: Table, name: &str, batch: &RecordBatch) -> Result<()> {
    let dir = root.join(table.name());
    fs::create_dir_all(&dir).map_err(io_err(&dir, "create"))?;
    let dest = dir.join(format!("{name}.parquet"));
    let tmp = dir.join(format!("{name}.parquet.tmp"));
    let out = crate::files::create(&tmp).map_err(io_err(&tmp, "create"))?;
    let mut w = ArrowWriter::try_new(
        BufWriter::new(out),
        batch.schema(),
        Some(properties(128 * 1024)),
    )
    .map_err(parquet_err(&tmp))?;
    w.write(batch).map_err(parquet_err(&tmp))?;
    let out = w.into_inner().map_err(parquet_err(&tmp))?;
    let file = out
        .into_inner()
        .map_err(|e| io_err(&tmp, "write")(e.into_error()))?;
    file.sync_all().map_err(io_err(&tmp, "sync"))?;
    fs::rename(&tmp, &dest).map_err(io_err(&dest, "rename"))?;
    sync_dir(&dir)
}

/// Removes `baselines/<prefix>*.parquet` and `identities/<prefix>*.parquet` files other than `keep` (a replay with fewer
/// engines than the last one must not leave the old ones behind).
pub fn prune_state_tables(root: &Path, prefix: &str, keep: &[String]) -> Result<()> {
    for table in [Table::Baselines, Table::Identities] {
        prune(root, table, prefix, keep)?;
    }
    Ok(())
}

fn prune(root: &Path, table: Table, prefix: &str, keep: &[String]) -> Result<()> {
    let dir = root.join(table.name());
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".parquet")
            && stem.starts_with(prefix)
            && !keep.iter().any(|k| k == stem)
        {
            fs::remove_file(e.path()).map_err(io_err(&e.path(), "remove"))?;
        }
    }
    Ok(())
}

/// Deletes the `day=` partitions of events and alerts older than `keep` before `now`.
/// Returns the partitions removed.
pub fn expire(root: &Path, keep: crate::units::Duration, now: Timestamp) -> Result<usize> {
    let cutoff = day_of(now.plus_seconds(-i64::try_from(keep.as_secs()).unwrap_or(i64::MAX / 2)));
    let mut removed = 0;
    for table in [Table::Events, Table::Alerts] {
        let dir = root.join(table.name());
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(day) = name.strip_prefix("day=")
                && day.len() == 10
                && *day < *cutoff.as_str()
            {
                fs::remove_dir_all(e.path()).map_err(io_err(&e.path(), "remove"))?;
                tracing::info!(table = table.name(), day, "lake partition expired");
                removed += 1;
            }
        }
    }
    if removed > 0 {
        metrics::get().lake_expired(removed as u64);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Action, Source};

    /// A replay through months of history keeps at most [`MAX_OPEN_PARTS`] parts open and
    /// [`PENDING_ROWS`] rows in builders, and every row still reaches a Parquet file of its
    /// own day, one file per day and source.
    #[test]
    fn open_parts_and_pending_rows_are_bounded_and_no_row_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let cfg: LakeConfig = toml::from_str("").unwrap();
        let mut w = Writer::open(dir.path(), &cfg, "test").unwrap();
        let start = Timestamp::parse("2026-01-05T00:00:00Z").unwrap();
        let (mut most, mut most_pending) = (0, 0);
        let (days, per) = (20, 1500);
        for day in 0..days {
            // Each source's events of the day interleaved, as a merged stream has them.
            for n in 0..per {
                for (i, source) in Source::ALL.into_iter().enumerate() {
                    let t = start.plus_seconds(day * 86_400 + n * 50 + i as i64);
                    let id = format!("e-{day}-{i}-{n}");
                    let e = Event::new(id, t, source, "k", Action::Mint, "ci:x");
                    w.event(&e).unwrap();
                    most = most.max(w.open_parts());
                    most_pending = most_pending.max(w.pending_rows());
                }
            }
        }
        assert_eq!(most, MAX_OPEN_PARTS, "bounded, and the bound is reached");
        assert_eq!(
            most_pending, PENDING_ROWS,
            "bounded, and the bound is reached"
        );
        let before = w.written();
        assert!(before.events > 0, "older parts rolled before close");
        let done = w.close().unwrap();
        assert_eq!(
            done.events,
            days as u64 * Source::ALL.len() as u64 * per as u64
        );
        let days_written = fs::read_dir(dir.path().join("events")).unwrap().count();
        assert_eq!(days_written, days as usize);
        // One file per (day, source): eviction rolled only parts that were done.
        assert_eq!(done.files, days as u64 * Source::ALL.len() as u64);
    }
}
