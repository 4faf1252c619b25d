//! `nhiwatch replay`: decode files (or stdin), run the detectors over the events in order and
//! write alerts as JSON lines (or, with `--emit events`, the decoded canonical events), with a
//! summary on stderr and, optionally, every rejected record (secrets removed) in a rejects
//! file. The same input always gives the same output.
//!
//! Framing and decoding run on a second thread; the detectors run in input order on the
//! calling thread, so the output never depends on timing.

use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::alert::Alert;
use crate::decode::{Decoded, Decoder, Reject, RejectReason};
use crate::detect::{Engine, Severity, Stats};
use crate::event::{Action, Event, Source};
use crate::redact::redact;
use crate::source::file::{self, Framed, Input, ReadCounter};
use crate::telemetry::metrics::{self, stage};

/// What `replay` writes to its output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Emit {
    /// Alerts as JSON lines (the detectors run).
    #[default]
    Alerts,
    /// Canonical events as JSON lines (decode only; the detectors do not run).
    Events,
    /// Nothing but the summary (the detectors run).
    None,
}

/// When to draw a progress bar on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Progress {
    /// On a terminal, for inputs of 16 MiB or more.
    #[default]
    Auto,
    /// Always (when stderr is a terminal).
    Always,
    /// Never.
    Never,
}

/// Options of one replay.
#[derive(Clone, Debug)]
pub struct Options {
    /// Files, directories or `-`.
    pub inputs: Vec<String>,
    /// What to write.
    pub emit: Emit,
    /// Output file; stdout when `None`.
    pub output: Option<PathBuf>,
    /// Rejects file (JSON lines); none when `None`.
    pub rejects: Option<PathBuf>,
    /// Progress bar policy.
    pub progress: Progress,
    /// Leave alerts still held in their fleet grace period unreleased at the end, as a live
    /// `run` does (they stay in the saved state).
    pub hold: bool,
    /// How alerts are written to the output.
    pub encoding: crate::encode::Encoding,
    /// Write events, alerts and the final baselines to this lake directory.
    pub lake: Option<PathBuf>,
    /// How the lake's files are rolled.
    pub lake_config: crate::lake::LakeConfig,
}

/// A replay failure that stops it (bad records never do).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An output file could not be created or written.
    #[error("cannot write {what} {path}: {source}")]
    Output {
        /// `output` or `rejects`.
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// A sink could not take an alert (spool or file write failed).
    #[error(transparent)]
    Sink(#[from] crate::sink::Error),
    /// The lake could not be written.
    #[error(transparent)]
    Lake(#[from] crate::lake::Error),
    /// An input argument could not be expanded (unreadable directory).
    #[error("cannot list {path}: {source}")]
    Input {
        /// The argument.
        path: String,
        /// Why.
        source: io::Error,
    },
}

/// Counts of one replay.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Inputs (files, stdin) that were read.
    pub inputs_read: u64,
    /// Inputs that could not be opened or read.
    pub io_errors: u64,
    /// Bytes read (decompressed).
    pub bytes: u64,
    /// Records seen (a CloudTrail delivery file counts each of its records).
    pub records: u64,
    /// Events by source and action.
    pub events: [[u64; Action::ALL.len()]; Source::ALL.len()],
    /// Rejected records by reason.
    pub rejects: [u64; RejectReason::ALL.len()],
    /// Wall time.
    pub elapsed: Duration,
    /// Output stopped early because the reader went away (closed pipe).
    pub output_closed: bool,
    /// Detection counters, when the detectors ran.
    pub detection: Option<Stats>,
    /// Identities with a baseline at the end.
    pub identities: usize,
    /// Live credential bindings at the end.
    pub credentials: usize,
    /// Approximate bytes of the identity baselines at the end (keys, structs and heap).
    pub baseline_bytes: usize,
    /// Peer groups at the end, the values their members adopted, and their approximate
    /// bytes.
    pub peers: (usize, usize, usize),
    /// Peak resident memory of the process, bytes (Linux).
    pub peak_rss: Option<u64>,
    /// What was written to the lake, when one was given.
    pub lake: Option<crate::lake::Written>,
}

impl Summary {
    /// Total events.
    pub fn events_total(&self) -> u64 {
        self.events.iter().flatten().sum()
    }

    /// Total rejects.
    pub fn rejects_total(&self) -> u64 {
        self.rejects.iter().sum()
    }

    /// Records per second.
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// True when nothing could be read: no event, and at least one failure.
    pub fn nothing_read(&self) -> bool {
        self.events_total() == 0 && (self.rejects_total() > 0 || self.io_errors > 0)
    }

    /// The human summary printed on stderr.
    pub fn render(&self) -> String {
        let mut s = format!(
            "nhiwatch replay: {} records from {} input{} ({}) in {:.2} s: {}/s\n",
            thousands(self.records),
            self.inputs_read,
            if self.inputs_read == 1 { "" } else { "s" },
            human_bytes(self.bytes),
            self.elapsed.as_secs_f64(),
            thousands(self.records_per_sec() as u64),
        );
        s.push_str(&format!("  events: {}\n", thousands(self.events_total())));
        for (si, source) in Source::ALL.iter().enumerate() {
            let row = &self.events[si];
            if row.iter().sum::<u64>() == 0 {
                continue;
            }
            let parts: Vec<String> = Action::ALL
                .iter()
                .enumerate()
                .filter(|(ai, _)| row[*ai] > 0)
                .map(|(ai, a)| format!("{} {}", a.as_str(), thousands(row[ai])))
                .collect();
            s.push_str(&format!(
                "    {:<15}{}\n",
                source.as_str(),
                parts.join("  ")
            ));
        }
        s.push_str(&format!("  rejects: {}\n", thousands(self.rejects_total())));
        for (ri, reason) in RejectReason::ALL.iter().enumerate() {
            if self.rejects[ri] > 0 {
                s.push_str(&format!(
                    "    {:<17}{}\n",
                    reason.as_str(),
                    thousands(self.rejects[ri])
                ));
            }
        }
        if self.io_errors > 0 {
            s.push_str(&format!("  unreadable inputs: {}\n", self.io_errors));
        }
        if self.output_closed {
            s.push_str("  output closed early; the rest of the input was not processed\n");
        }
        if let Some(d) = &self.detection {
            s.push_str(&format!(
                "  detection: {} mints and uses inspected, {} identities ({} B of baseline each), {} live credentials\n",
                thousands(d.inspected),
                thousands(self.identities as u64),
                thousands((self.baseline_bytes / self.identities.max(1)) as u64),
                thousands(self.credentials as u64)
            ));
            s.push_str(&format!(
                "  peer groups: {} ({} adopted values, {} B per identity)\n",
                thousands(self.peers.0 as u64),
                thousands(self.peers.1 as u64),
                thousands((self.peers.2 / self.identities.max(1)) as u64)
            ));
            s.push_str(&format!("  alerts: {}\n", thousands(d.alerts_total())));
            let mut names: Vec<&str> = d.alerts.keys().map(|(n, _)| n.as_str()).collect();
            names.extend(d.suppressed.keys().map(String::as_str));
            names.extend(d.rollouts.keys().map(String::as_str));
            names.extend(d.peer_routine.keys().map(String::as_str));
            names.sort_unstable();
            names.dedup();
            for name in names {
                let by_sev: Vec<String> = Severity::ALL
                    .iter()
                    .rev()
                    .filter_map(|sev| {
                        d.alerts
                            .get(&(name.to_string(), *sev))
                            .map(|n| format!("{} {}", sev.as_str(), thousands(*n)))
                    })
                    .collect();
                let mut line = format!("    {name:<17}{:>7}", thousands(d.alerts_of(name)));
                if !by_sev.is_empty() {
                    line.push_str(&format!("  ({})", by_sev.join(", ")));
                }
                if let Some(n) = d.suppressed.get(name) {
                    line.push_str(&format!("  suppressed repeats {}", thousands(*n)));
                }
                if let Some(n) = d.rollouts.get(name) {
                    line.push_str(&format!("  dropped as fleet rollouts {}", thousands(*n)));
                }
                if let Some(n) = d.replacements.get(name) {
                    line.push_str(&format!("  moved for good {}", thousands(*n)));
                }
                if let Some(n) = d.peer_routine.get(name) {
                    line.push_str(&format!("  routine among peers {}", thousands(*n)));
                }
                s.push_str(&line);
                s.push('\n');
            }
            if d.allowlisted > 0 {
                s.push_str(&format!(
                    "    allowlisted findings {}\n",
                    thousands(d.allowlisted)
                ));
            }
        }
        if let Some(w) = &self.lake {
            s.push_str(&format!(
                "  lake: {} events and {} alerts in {} Parquet files ({})\n",
                thousands(w.events),
                thousands(w.alerts),
                thousands(w.files),
                human_bytes(w.bytes)
            ));
        }
        if let Some(rss) = self.peak_rss {
            s.push_str(&format!("  peak memory: {}\n", human_bytes(rss)));
        }
        s
    }
}

/// One line of the rejects file.
#[derive(Serialize)]
struct RejectLine<'a> {
    file: &'a str,
    line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    reason: RejectReason,
    message: &'a str,
    /// The record with secrets masked, cut at 64 KiB.
    record: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    record_truncated: bool,
}

/// Rejects logged one by one before the rest are only counted.
const LOGGED_REJECTS: u64 = 20;
/// Output is handed to the writer in blocks of this size.
const FLUSH_AT: usize = 1 << 20;
const MAX_REJECT_RECORD: usize = 64 << 10;

/// Records per batch handed from the decoding thread to the detecting one.
const BATCH: usize = 256;
/// Batches in flight between the two threads.
const IN_FLIGHT: usize = 32;

/// Records of a batch by source (the last slot: not recognised) and their bytes.
#[derive(Clone, Copy, Default)]
struct Tally {
    sources: [u64; Source::ALL.len() + 1],
    bytes: u64,
}

impl Tally {
    fn add(&mut self, source: Option<Source>, records: u64, bytes: usize) {
        self.sources[source.map_or(Source::ALL.len(), |s| s as usize)] += records;
        self.bytes += bytes as u64;
    }
}

/// Metric handles and state of a replay.
struct Meters {
    /// Input records of files and of stdin.
    file: metrics::RecordCounters,
    stdin: metrics::RecordCounters,
    events: metrics::EventCounters,
    detected: prometheus::IntCounter,
    /// The sink alerts are handed to (`stdout` or `file`), when they are written.
    sink: Option<&'static str>,
    env: crate::environment::EnvResolver,
    /// Arrival stamps of alerts written to the buffer but not yet to the output.
    unflushed: Vec<u64>,
    last_census: Instant,
}

/// How often the detection-state gauges are recounted during a replay.
const CENSUS_EVERY: Duration = Duration::from_secs(5);

/// What the decoding thread hands over, in input order.
enum Msg {
    /// The events and rejects of consecutive records of input number `input`.
    Batch {
        input: usize,
        records: u64,
        items: Vec<Item>,
        /// When the batch was handed over (Unix microseconds): its records' arrival.
        arrival: u64,
        /// Records by source, and bytes, for the metrics.
        tally: Tally,
    },
    /// Input number `input` was read to its end (`bytes`, decompressed), or failed.
    Done {
        input: usize,
        result: io::Result<u64>,
    },
    /// Input number `input` could not be opened.
    Unopened { input: usize, error: io::Error },
}

// Events are the common case; boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
enum Item {
    Event(Event),
    Reject {
        line: u64,
        reject: Reject,
        /// The rejected text, cut at `MAX_REJECT_RECORD` (only with a rejects file).
        text: Vec<u8>,
        truncated: bool,
    },
}

struct Run<'a> {
    engines: &'a mut [Engine],
    lake: Option<crate::lake::Background>,
    encoder: crate::encode::Encoder,
    sinks: Option<&'a crate::sink::Sinks>,
    alerts: Vec<Alert>,
    emit: Emit,
    out: Box<dyn Write>,
    out_buf: Vec<u8>,
    rejects: Option<(io::BufWriter<File>, String)>,
    summary: Summary,
    logged_rejects: u64,
    error: Option<Error>,
    output_name: String,
    meters: Meters,
    /// Scratch: the values an event may have rolled out (engines sharing their context).
    rollout: Vec<u64>,
}

/// Runs a replay. With engines (and `--emit alerts` or `none`), every decoded event is
/// inspected and learned in input order, and held alerts are released at the end. With more
/// than one engine, each identity goes to engine `hash(identity) % n`: the partitioning of
/// `nhiwatch run`. Engines that [share their context](Engine::share_context) then decide as
/// one engine would (the design of `docs/scale-out.md`); engines that do not judge their
/// identities alone, as `run`'s partitions do today.
///
/// Framing and decoding run on a second thread, which hands events over in batches, in
/// order; the detectors run on the calling thread. The output does not depend on timing.
pub fn run(
    decoder: &Decoder,
    mut engines: &mut [Engine],
    opts: &Options,
    sinks: Option<&crate::sink::Sinks>,
) -> Result<Summary, Error> {
    if opts.emit == Emit::Events {
        engines = &mut [];
    }
    let started = Instant::now();
    let mut inputs = Vec::new();
    for arg in &opts.inputs {
        match file::expand(std::slice::from_ref(arg)) {
            Ok(v) => inputs.extend(v),
            Err(source) => {
                return Err(Error::Input {
                    path: arg.clone(),
                    source,
                });
            }
        }
    }
    let (out, output_name): (Box<dyn Write>, String) = match &opts.output {
        Some(p) => (
            Box::new(File::create(p).map_err(|source| Error::Output {
                what: "output",
                path: p.display().to_string(),
                source,
            })?),
            p.display().to_string(),
        ),
        None => (Box::new(io::stdout().lock()), "<stdout>".to_string()),
    };
    let rejects = match &opts.rejects {
        Some(p) => Some((
            io::BufWriter::new(File::create(p).map_err(|source| Error::Output {
                what: "rejects",
                path: p.display().to_string(),
                source,
            })?),
            p.display().to_string(),
        )),
        None => None,
    };
    let keep_text = rejects.is_some();
    let m = metrics::get();
    let sink = match (opts.emit, &opts.output) {
        (Emit::Alerts, Some(_)) => Some("file"),
        (Emit::Alerts, None) => Some("stdout"),
        _ => None,
    };
    if let Some(sink) = sink {
        m.declare_sink(sink);
    }
    if let Some(e) = engines.first() {
        m.declare_alerts(&e.detector_names(), &decoder.environments().metric_labels());
    }
    let meters = Meters {
        file: metrics::RecordCounters::new("file"),
        stdin: metrics::RecordCounters::new("stdin"),
        events: metrics::EventCounters::new(),
        detected: m.detect_events.clone(),
        sink,
        env: decoder.environments().clone(),
        unflushed: Vec::new(),
        last_census: Instant::now(),
    };
    let lake = match &opts.lake {
        Some(dir) => {
            metrics::get().declare_lake();
            Some(crate::lake::Background::start(
                dir,
                &opts.lake_config,
                "replay",
            )?)
        }
        None => None,
    };
    let mut run = Run {
        meters,
        engines,
        lake,
        encoder: crate::encode::Encoder::new(opts.encoding, crate::encode::hostname()),
        sinks,
        alerts: Vec::new(),
        emit: opts.emit,
        out,
        out_buf: Vec::with_capacity(FLUSH_AT + (64 << 10)),
        rejects,
        summary: Summary::default(),
        logged_rejects: 0,
        error: None,
        output_name,
        rollout: Vec::new(),
    };

    let names: Vec<String> = inputs.iter().map(Input::name).collect();
    let total: u64 = inputs.iter().filter_map(Input::size).sum();
    let bar = progress_bar(opts.progress, total);
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel(IN_FLIGHT);
        let decode_bar = bar.clone();
        let inputs = &inputs;
        scope.spawn(move || decode_inputs(decoder, inputs, keep_text, &tx, decode_bar));
        loop {
            // Wake up now and then on a quiet stream to keep the state gauges current.
            let msg = match rx.recv_timeout(CENSUS_EVERY) {
                Ok(msg) => msg,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    run.census();
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            };
            match msg {
                Msg::Batch {
                    input,
                    records,
                    items,
                    arrival,
                    tally,
                } => {
                    let stdin = inputs[input] == Input::Stdin;
                    run.batch(&names[input], records, items, arrival);
                    let counters = if stdin {
                        &run.meters.stdin
                    } else {
                        &run.meters.file
                    };
                    counters.add(&tally.sources, tally.bytes);
                    // A live stream's alerts go out as they are found, not when a buffer fills.
                    if stdin && !run.out_buf.is_empty() {
                        run.flush_output(false);
                    }
                    if run.meters.last_census.elapsed() >= CENSUS_EVERY {
                        run.census();
                    }
                }
                Msg::Done { input, result } => match result {
                    Ok(n) => {
                        run.summary.bytes += n;
                        run.summary.inputs_read += 1;
                    }
                    Err(e) => {
                        tracing::error!(input = %names[input], error = %e, "cannot read input");
                        m.error(stage::REPLAY, "input_unreadable");
                        run.summary.io_errors += 1;
                    }
                },
                Msg::Unopened { input, error } => {
                    tracing::error!(input = %names[input], error = %error, "cannot open input");
                    m.error(stage::REPLAY, "input_unreadable");
                    run.summary.io_errors += 1;
                }
            }
            if run.error.is_some() || run.summary.output_closed {
                // Dropping the receiver stops the decoding thread at its next batch.
                break;
            }
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if !opts.hold {
        for engine in run.engines.iter_mut() {
            engine.flush(&mut run.alerts);
        }
    }
    run.write_alerts(0);
    run.census();
    if let Some(mut lake) = run.lake.take()
        && run.error.is_none()
    {
        let mut names = Vec::new();
        for (i, engine) in run.engines.iter().enumerate() {
            let name = format!("replay-{i}");
            let batch =
                crate::lake::schema::baselines_batch(&[engine], crate::time::Timestamp::now())
                    .map_err(|e| crate::lake::Error::Format {
                        path: "baselines".into(),
                        message: e.to_string(),
                    })?;
            lake.baselines(name.clone(), batch)?;
            names.push(name);
        }
        let written = lake.stop()?;
        if !run.engines.is_empty() {
            crate::lake::writer::prune_baselines(lake.root(), "replay-", &names)?;
        }
        run.summary.lake = Some(written);
    }
    if !run.engines.is_empty() {
        let mut stats = crate::detect::Stats::default();
        for engine in run.engines.iter() {
            stats.merge(&engine.stats);
            run.summary.identities += engine.state.identities.len();
            run.summary.baseline_bytes += engine.state.identity_bytes();
            if engine.borrows_context() {
                continue;
            }
            run.summary.credentials += engine.state.credentials.len();
            let p = &engine.state.peers;
            run.summary.peers.0 += p.len();
            run.summary.peers.1 += p.values_len();
            run.summary.peers.2 += p.heap_bytes();
        }
        run.summary.detection = Some(stats);
    }
    run.flush_output(true);
    if let Some((w, path)) = &mut run.rejects
        && let Err(source) = w.flush()
    {
        return Err(Error::Output {
            what: "rejects",
            path: path.clone(),
            source,
        });
    }
    if let Some(e) = run.error {
        return Err(e);
    }
    run.summary.elapsed = started.elapsed();
    run.summary.peak_rss = peak_rss();
    Ok(run.summary)
}

/// The decoding thread: frames and decodes every input in order and sends the results in
/// batches, until the inputs end or the receiver goes away.
fn decode_inputs(
    decoder: &Decoder,
    inputs: &[Input],
    keep_text: bool,
    tx: &std::sync::mpsc::SyncSender<Msg>,
    bar: Option<ProgressBar>,
) {
    let mut results: Vec<Decoded> = Vec::with_capacity(64);
    let mut done_bytes = 0u64;
    let mut records_total = 0u64;
    for (input, source) in inputs.iter().enumerate() {
        let counter = ReadCounter::default();
        let reader = match file::open(source, &counter) {
            Ok(r) => r,
            Err(error) => {
                if tx.send(Msg::Unopened { input, error }).is_err() {
                    return;
                }
                continue;
            }
        };
        // A pipe may be a live stream: hand each of its records over as soon as it is read.
        let batch_size = if *source == Input::Stdin { 1 } else { BATCH };
        let mut max_time = decoder.max_event_time();
        let mut records = 0u64;
        let mut items = Vec::with_capacity(BATCH + 8);
        let mut tally = Tally::default();
        let mut since_tick = 0u32;
        let mut gone = false;
        let res = file::frame(reader, decoder.max_record_bytes(), |framed| {
            records += decode_framed(
                decoder,
                framed,
                max_time,
                keep_text,
                &mut results,
                &mut items,
                &mut tally,
            );
            since_tick += 1;
            if since_tick == 4096 {
                since_tick = 0;
                // A long stdin stream must not judge new records against a stale clock.
                max_time = decoder.max_event_time();
                if let Some(bar) = &bar {
                    bar.set_position(done_bytes + counter.get());
                    bar.set_message(format!("{} records", thousands(records_total + records)));
                }
            }
            if records >= batch_size as u64 || items.len() >= batch_size {
                records_total += records;
                let batch = Msg::Batch {
                    input,
                    records: std::mem::take(&mut records),
                    items: std::mem::replace(&mut items, Vec::with_capacity(BATCH + 8)),
                    arrival: metrics::now_micros(),
                    tally: std::mem::take(&mut tally),
                };
                if tx.send(batch).is_err() {
                    gone = true;
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        if gone {
            return;
        }
        records_total += records;
        if (records > 0 || !items.is_empty())
            && tx
                .send(Msg::Batch {
                    input,
                    records,
                    items,
                    arrival: metrics::now_micros(),
                    tally,
                })
                .is_err()
        {
            return;
        }
        done_bytes += counter.get();
        if tx.send(Msg::Done { input, result: res }).is_err() {
            return;
        }
    }
}

/// Decodes one framed record into `items`; returns the records it counts as.
fn decode_framed(
    decoder: &Decoder,
    framed: Framed<'_>,
    max_time: crate::time::Timestamp,
    keep_text: bool,
    results: &mut Vec<Decoded>,
    items: &mut Vec<Item>,
    tally: &mut Tally,
) -> u64 {
    match framed {
        Framed::Record { bytes, line, doc } => {
            results.clear();
            let n = decoder.decode_with_bound(bytes, max_time, results) as u64;
            tally.add(decoder.source_of(results), n, bytes.len());
            for r in results.drain(..) {
                match r {
                    Ok(event) => items.push(Item::Event(event)),
                    Err(reject) => {
                        let line = doc.map_or(line, |d| d.line_of(reject.offset));
                        items.push(reject_item(line, reject, keep_text, bytes));
                    }
                }
            }
            n
        }
        Framed::Oversize { line, len } => {
            let reject = Reject {
                reason: RejectReason::TooLarge,
                message: format!(
                    "line is {len} bytes; decode.max_record_bytes is {}",
                    decoder.max_record_bytes()
                ),
                offset: 0,
                len: 0,
                index: None,
            };
            items.push(reject_item(line, reject, keep_text, b""));
            tally.add(decoder.format().source(), 1, len as usize);
            1
        }
        Framed::Unparseable {
            line,
            message,
            bytes,
        } => {
            let reject = Reject {
                reason: RejectReason::MalformedJson,
                message: format!("invalid JSON: {message}"),
                offset: 0,
                len: bytes.len(),
                index: None,
            };
            tally.add(decoder.format().source(), 1, bytes.len());
            items.push(reject_item(line, reject, keep_text, bytes));
            1
        }
    }
}

/// A reject with the part of `bytes` it points at (cut at `MAX_REJECT_RECORD`), kept only
/// when there is a rejects file to write it to.
fn reject_item(line: u64, reject: Reject, keep: bool, bytes: &[u8]) -> Item {
    let (text, truncated) = if keep {
        reject_text(&reject, bytes)
    } else {
        (Vec::new(), false)
    };
    Item::Reject {
        line,
        reject,
        text,
        truncated,
    }
}

fn reject_text(reject: &Reject, bytes: &[u8]) -> (Vec<u8>, bool) {
    let end = if reject.len == 0 {
        bytes.len()
    } else {
        (reject.offset + reject.len).min(bytes.len())
    };
    let text = bytes.get(reject.offset.min(end)..end).unwrap_or_default();
    if text.len() > MAX_REJECT_RECORD {
        (text[..MAX_REJECT_RECORD].to_vec(), true)
    } else {
        (text.to_vec(), false)
    }
}

/// Peak resident set size of this process (`VmHWM`), on Linux.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl Run<'_> {
    fn batch(&mut self, file: &str, records: u64, items: Vec<Item>, arrival: u64) {
        self.summary.records += records;
        let mut kept: Vec<Event> = Vec::new();
        let mut events = [[0u64; Action::ALL.len()]; Source::ALL.len()];
        let mut newest = [i64::MIN; Source::ALL.len()];
        for item in items {
            match item {
                Item::Event(event) => {
                    events[event.source as usize][event.action as usize] += 1;
                    let secs = event.time.as_unix_seconds();
                    let n = &mut newest[event.source as usize];
                    *n = (*n).max(secs);
                    if self.emit == Emit::Events {
                        event.write_json(&mut self.out_buf);
                        self.out_buf.push(b'\n');
                    }
                    match self.engines.len() {
                        0 => {}
                        1 => self.engines[0].process(&event, &mut self.alerts),
                        n => {
                            let i = crate::baseline::hash_identity(&event.identity) as usize % n;
                            if self.engines[i].shares_context() {
                                self.shared_process(i, &event);
                            } else {
                                self.engines[i].process(&event, &mut self.alerts);
                            }
                        }
                    }
                    if self.lake.is_some() {
                        kept.push(event);
                    }
                }
                Item::Reject {
                    line,
                    reject,
                    text,
                    truncated,
                } => self.reject(file, line, &reject, &text, truncated),
            }
            if !self.alerts.is_empty() {
                self.write_alerts(arrival);
            }
            if self.out_buf.len() >= FLUSH_AT {
                self.flush_output(false);
            }
        }
        if let Some(lake) = &mut self.lake
            && self.error.is_none()
            && let Err(e) = lake.events(kept)
        {
            metrics::get().error(stage::LAKE, "write");
            self.error = Some(e.into());
        }
        // Metrics per batch, not per record.
        let m = metrics::get();
        let mut total = 0;
        for (si, source) in Source::ALL.iter().enumerate() {
            for (ai, action) in Action::ALL.iter().enumerate() {
                let n = events[si][ai];
                if n > 0 {
                    self.summary.events[si][ai] += n;
                    self.meters.events.of(*source, *action).inc_by(n);
                    total += n;
                }
            }
            if newest[si] != i64::MIN && !self.engines.is_empty() {
                m.saw_event_time(*source, newest[si]);
            }
        }
        if !self.engines.is_empty() {
            self.meters.detected.inc_by(total);
        }
    }

    /// One event through engines that share their cross-identity context: every engine's
    /// clock moves to it (held alerts due are released), the identity's engine judges it, and
    /// the values it may have rolled out drop the other engines' held alerts on them; so the
    /// engines decide as one engine would.
    fn shared_process(&mut self, i: usize, event: &Event) {
        let secs = event.time.as_unix_seconds();
        for e in self.engines.iter_mut() {
            e.advance(secs, &mut self.alerts);
        }
        self.engines[i].process(event, &mut self.alerts);
        let (day, values) = self.engines[i].rollout_values();
        self.rollout.clear();
        self.rollout.extend_from_slice(values);
        for (j, e) in self.engines.iter_mut().enumerate() {
            if j != i {
                e.drop_rollouts(day, &self.rollout);
            }
        }
    }

    /// Recounts the detection-state gauges.
    fn census(&mut self) {
        self.meters.last_census = Instant::now();
        if self.engines.is_empty() {
            return;
        }
        let mut c = crate::detect::Census::default();
        for e in self.engines.iter() {
            c.add(&e.census());
        }
        metrics::get().set_census(&c);
    }

    fn reject(&mut self, file: &str, line: u64, reject: &Reject, text: &[u8], truncated: bool) {
        self.summary.rejects[reject.reason as usize] += 1;
        metrics::get()
            .rejects
            .with_label_values(&[stage::REPLAY, reject.reason.as_str()])
            .inc();
        self.logged_rejects += 1;
        if self.logged_rejects <= LOGGED_REJECTS {
            tracing::warn!(
                file,
                line,
                index = reject.index,
                reason = reject.reason.as_str(),
                "record rejected: {}",
                reject.message
            );
            if self.logged_rejects == LOGGED_REJECTS {
                tracing::warn!(
                    "further rejects are counted in the summary but not logged one by one"
                );
            }
        } else {
            tracing::debug!(
                file,
                line,
                index = reject.index,
                reason = reject.reason.as_str(),
                "record rejected: {}",
                reject.message
            );
        }
        let Some((w, path)) = &mut self.rejects else {
            return;
        };
        let record = String::from_utf8_lossy(&redact(text)).into_owned();
        let line = RejectLine {
            file,
            line,
            index: reject.index,
            reason: reject.reason,
            message: &reject.message,
            record,
            record_truncated: truncated,
        };
        let res = serde_json::to_writer(&mut *w, &line)
            .map_err(io::Error::other)
            .and_then(|()| w.write_all(b"\n"));
        if let Err(source) = res {
            self.error = Some(Error::Output {
                what: "rejects",
                path: path.clone(),
                source,
            });
        }
    }

    /// Writes the pending alerts to the output buffer; `arrival` is their records' arrival
    /// (0: unknown, as for alerts released at the end of the input).
    fn write_alerts(&mut self, arrival: u64) {
        let m = metrics::get();
        if let Some(lake) = &mut self.lake
            && self.error.is_none()
            && let Err(e) = lake.alerts(self.alerts.clone())
        {
            m.error(stage::LAKE, "write");
            self.error = Some(e.into());
        }
        for alert in self.alerts.drain(..) {
            m.alerts
                .with_label_values(&[
                    alert.detector.as_str(),
                    alert.severity.as_str(),
                    self.meters.env.metric_label(alert.environment.as_deref()),
                ])
                .inc();
            if self.emit == Emit::Alerts {
                self.encoder.encode(&alert, &mut self.out_buf);
                self.out_buf.push(b'\n');
                self.meters.unflushed.push(arrival);
            }
            if let Some(sinks) = self.sinks
                && self.error.is_none()
                && let Err(e) = sinks.send(&alert, arrival)
            {
                self.error = Some(e.into());
            }
        }
    }

    fn flush_output(&mut self, last: bool) {
        if self.summary.output_closed || self.error.is_some() {
            self.out_buf.clear();
            return;
        }
        let mut res = self.out.write_all(&self.out_buf);
        if res.is_ok() && (last || !self.meters.unflushed.is_empty()) {
            res = self.out.flush();
        }
        self.out_buf.clear();
        let m = metrics::get();
        let handed = std::mem::take(&mut self.meters.unflushed);
        if let Some(sink) = self.meters.sink {
            let counter = if res.is_ok() {
                &m.sink_deliveries
            } else {
                &m.sink_failures
            };
            counter
                .with_label_values(&[sink])
                .inc_by(handed.len() as u64);
        }
        if res.is_ok() {
            for arrival in handed {
                metrics::observe_alert_latency(arrival);
            }
        }
        match res {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => self.summary.output_closed = true,
            Err(source) => {
                m.error(stage::SINK, "write");
                self.error = Some(Error::Output {
                    what: "output",
                    path: self.output_name.clone(),
                    source,
                })
            }
        }
    }
}

fn progress_bar(mode: Progress, total: u64) -> Option<ProgressBar> {
    let show = match mode {
        Progress::Never => false,
        Progress::Always => true,
        Progress::Auto => total >= 16 << 20,
    };
    if !show || !io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_tables_are_indexed_by_declaration_order() {
        for (i, s) in Source::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
        for (i, a) in Action::ALL.iter().enumerate() {
            assert_eq!(*a as usize, i);
        }
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn formats_counts() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }
}
