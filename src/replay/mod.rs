//! `nhiwatch replay`: decode files (or stdin), run the detectors over the events in order and
//! write alerts as JSON lines (or, with `--emit events`, the decoded canonical events), with a
//! summary on stderr and, optionally, every rejected record (secrets removed) in a rejects
//! file. The same input always gives the same output.
//!
//! Framing and decoding run on a second thread; the detectors run in input order on the
//! calling thread, so the output never depends on timing.

mod engines;
mod read;
mod summary;

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
use crate::redact::redact_str;
use crate::source::file::{self, Framed, Input, ReadCounter};
use crate::telemetry::metrics::{self, stage};
use engines::*;
use read::*;
use summary::*;
pub use summary::{Summary, peak_rss, thousands};

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

/// Runs a replay. With engines (and `--emit alerts` or `none`), every decoded event is
/// inspected and learned in input order, and held alerts are released at the end. With more
/// than one engine, each identity goes to engine `hash(identity) % n`: the partitioning of
/// `nhiwatch run`. Engines that [share their context](Engine::share_context) then decide as
/// one engine would (the design of `docs/scale-out.md`); engines that do not judge their
/// identities alone, as `run`'s partitions do with `kafka.share_context = false`.
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
            io::BufWriter::new(crate::files::create(p).map_err(|source| Error::Output {
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
            let now = crate::time::Timestamp::now();
            for (table, batch) in crate::lake::schema::state_tables(engine, now)? {
                lake.whole(table, name.clone(), batch)?;
            }
            names.push(name);
        }
        let written = lake.stop()?;
        if !run.engines.is_empty() {
            crate::lake::writer::prune_state_tables(lake.root(), "replay-", &names)?;
        }
        run.summary.lake = Some(written);
    }
    if !run.engines.is_empty() {
        let mut stats = crate::detect::Stats::default();
        for engine in run.engines.iter() {
            stats.merge(&engine.stats);
            run.summary.identities += engine.state.identities.len();
            {
                let spill = engine.state.spill();
                run.summary.spilled += spill.len();
                let c = &mut run.summary.spill;
                c.spilled += spill.counts.spilled;
                c.reloaded += spill.counts.reloaded;
                c.dropped += spill.counts.dropped;
            }
            run.summary.baseline_bytes += engine.state.identity_bytes();
            if engine.borrows_context() {
                continue;
            }
            run.summary.credentials += engine.state.credentials.len();
            run.summary.credentials_evicted += engine.state.credentials.evicted();
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
