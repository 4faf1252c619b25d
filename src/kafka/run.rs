//! Wires the two stages: waits for the cluster (retrying, never crashing), creates the
//! internal topics, runs ingest on a thread and detect on the calling thread, and stops both
//! cleanly on SIGTERM or SIGINT (a second SIGINT exits at once).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::Error;
use super::client::{self, Wanted};
use super::detect::{self, Detect};
use super::ingest::{self, Ingest};
use crate::config::Config;
use crate::decode::Decoder;

/// Counts of a run, for the final log line.
#[derive(Debug, Default)]
pub struct Summary {
    /// Ingest counters.
    pub ingest: Arc<ingest::Counters>,
    /// Detect counters.
    pub detect: Arc<detect::Counters>,
}

/// The exposition of the run's counters (Prometheus text format).
fn render(i: &ingest::Counters, d: &detect::Counters) -> String {
    use crate::telemetry::server::metric;
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::with_capacity(2048);
    for (name, kind, help, v) in [
        (
            "nhiwatch_ingest_records_total",
            "counter",
            "Input records consumed.",
            n(&i.records),
        ),
        (
            "nhiwatch_ingest_events_total",
            "counter",
            "Events written to the events topic.",
            n(&i.events),
        ),
        (
            "nhiwatch_ingest_rejects_total",
            "counter",
            "Input records (or batch elements) rejected.",
            n(&i.rejects) + n(&d.rejects),
        ),
        (
            "nhiwatch_dlq_records_total",
            "counter",
            "Rejected records written to the dead-letter topic.",
            n(&i.dead_letters) + n(&d.dead_letters),
        ),
        (
            "nhiwatch_detect_events_total",
            "counter",
            "Events inspected and learned by the detectors.",
            n(&d.events),
        ),
        (
            "nhiwatch_detect_duplicates_total",
            "counter",
            "Repartitioned events dropped as repeats of an origin already processed.",
            n(&d.duplicates),
        ),
        (
            "nhiwatch_detect_in_checkpoint_total",
            "counter",
            "Events skipped because the restored checkpoint includes them.",
            n(&d.in_checkpoint),
        ),
        (
            "nhiwatch_alerts_total",
            "counter",
            "Alerts emitted.",
            n(&d.alerts),
        ),
        (
            "nhiwatch_checkpoints_total",
            "counter",
            "Partition checkpoints written and committed.",
            n(&d.checkpoints),
        ),
        (
            "nhiwatch_restores_total",
            "counter",
            "Partition states restored (local file or changelog).",
            n(&d.restores),
        ),
        (
            "nhiwatch_partitions_owned",
            "gauge",
            "Partitions this instance detects on.",
            n(&d.owned),
        ),
    ] {
        metric(&mut out, name, kind, help, v);
    }
    out.push_str(&format!(
        "# HELP nhiwatch_build_info Version of the running binary.\n# TYPE nhiwatch_build_info gauge\nnhiwatch_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    ));
    out
}

/// The internal topics of a group.
pub fn internal_topics(group: &str) -> (String, String) {
    (format!("{group}-events"), format!("{group}-changelog"))
}

/// Runs until SIGTERM/SIGINT (or `stop` is set). `cfg` must have passed
/// [`Config::validate_run`].
pub fn run(cfg: &Config, stop: Arc<AtomicBool>) -> Result<Summary, Error> {
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone())
            .and_then(|_| signal_hook::flag::register(sig, stop.clone()))
            .map_err(|e| Error::Setup(format!("cannot install signal handlers: {e}")))?;
    }
    let k = &cfg.kafka;
    let group = k.group_id.clone();
    let (events_topic, changelog_topic) = internal_topics(&group);
    let parts = k.partitions as i32;
    let mut wanted = vec![Wanted {
        name: &changelog_topic,
        partitions: parts,
        compact: true,
        check: true,
    }];
    if k.repartition {
        wanted.push(Wanted {
            name: &events_topic,
            partitions: parts,
            compact: false,
            check: true,
        });
    }
    for t in [&k.alerts_topic, &k.dlq_topic].into_iter().flatten() {
        wanted.push(Wanted {
            name: t,
            partitions: parts,
            compact: false,
            check: false,
        });
    }
    let bootstrap = k.bootstrap_servers.clone().unwrap_or_default();
    let mut backoff = Duration::from_secs(1);
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(Summary::default());
        }
        match client::ensure_topics(k, &wanted, Duration::from_secs(10)) {
            Ok(()) => break,
            Err(Error::Unavailable { message }) => {
                tracing::error!(
                    bootstrap = %bootstrap,
                    error = %message,
                    retry_in_secs = backoff.as_secs(),
                    "cannot reach kafka; retrying"
                );
                let until = std::time::Instant::now() + backoff;
                while std::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e),
        }
    }
    let mut decoders = HashMap::new();
    for t in &k.topics {
        let d = Decoder::from_config(cfg, t.format).map_err(|e| Error::Setup(e.to_string()))?;
        decoders.insert(t.name.clone(), d);
    }
    let summary = Summary::default();
    if let Some(addr) = &cfg.run.metrics_addr {
        let (i, d) = (summary.ingest.clone(), summary.detect.clone());
        let render: crate::telemetry::server::Render = Arc::new(move || render(&i, &d));
        crate::telemetry::server::serve(addr, render, summary.detect.ready.clone())
            .map_err(|e| Error::Setup(format!("run.metrics_addr {addr}: {e}")))?;
    }
    let (ingest, topics) = if k.repartition {
        let canonical = Decoder::from_config(cfg, crate::decode::Format::Canonical)
            .map_err(|e| Error::Setup(e.to_string()))?;
        let ingest = Ingest {
            decoders,
            events_topic: events_topic.clone(),
            partitions: k.partitions,
            dlq_topic: k.dlq_topic.clone(),
            counters: summary.ingest.clone(),
        };
        (
            Some(ingest),
            HashMap::from([(events_topic.clone(), canonical)]),
        )
    } else {
        (None, decoders)
    };
    let detect = Detect {
        cfg: cfg.clone(),
        topics,
        changelog_partitions: parts,
        repartitioned: k.repartition,
        changelog_topic,
        // Direct mode reads the input topics themselves: under the group users configured,
        // so lag monitoring of their topics shows it.
        group: if k.repartition {
            format!("{group}-detect")
        } else {
            group.clone()
        },
        alerts_topic: k.alerts_topic.clone(),
        dlq_topic: k.dlq_topic.clone(),
        state_dir: cfg.run.state_dir.clone(),
        interval: Duration::from_secs(cfg.run.checkpoint_interval.as_secs()),
        stdout: cfg.run.alerts_stdout,
        counters: summary.detect.clone(),
    };
    tracing::info!(
        bootstrap = %bootstrap,
        group = %group,
        topics = ?k.topics.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        partitions = k.partitions,
        repartition = k.repartition,
        "nhiwatch run started"
    );
    let result = std::thread::scope(|s| {
        let ingest_stop = &stop;
        let h = ingest.map(|ingest| {
            s.spawn(move || {
                let r = ingest.run(k, &group, ingest_stop);
                if r.is_err() {
                    ingest_stop.store(true, Ordering::Relaxed);
                }
                r
            })
        });
        let d = detect.run(&stop);
        stop.store(true, Ordering::Relaxed);
        let i = match h {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(Error::Setup("ingest thread panicked".into()))),
            None => Ok(()),
        };
        d.and(i)
    });
    let (i, d) = (&summary.ingest, &summary.detect);
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    tracing::info!(
        records = n(&i.records),
        events = n(&i.events),
        rejects = n(&i.rejects),
        dead_letters = n(&i.dead_letters),
        detected = n(&d.events),
        duplicates = n(&d.duplicates),
        in_checkpoint = n(&d.in_checkpoint),
        alerts = n(&d.alerts),
        checkpoints = n(&d.checkpoints),
        "nhiwatch run stopped"
    );
    result.map(|()| summary)
}
