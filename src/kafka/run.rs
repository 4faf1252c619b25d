//! Wires the two stages: waits for the cluster (retrying, never crashing), creates the
//! internal topics, runs ingest on a thread and detect on the calling thread, and stops both
//! cleanly on SIGTERM or SIGINT (a second SIGINT exits at once).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::Error;
use super::client::{self, Wanted};
use super::detect::Detect;
use super::ingest::Ingest;
use crate::config::Config;
use crate::telemetry::metrics;

/// The internal topics of a group.
pub fn internal_topics(group: &str) -> (String, String) {
    (format!("{group}-events"), format!("{group}-changelog"))
}

/// Runs until SIGTERM/SIGINT (or `stop` is set). `cfg` must have passed
/// [`Config::validate_run`].
pub fn run(cfg: &Config, stop: Arc<AtomicBool>) -> Result<(), Error> {
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone())
            .and_then(|_| signal_hook::flag::register(sig, stop.clone()))
            .map_err(|e| Error::Setup(format!("cannot install signal handlers: {e}")))?;
    }
    // Serve health and metrics from the start: `/healthz` answers while the cluster is
    // unreachable, `/readyz` once partitions are assigned and their state restored.
    let ready = Arc::new(AtomicBool::new(false));
    if let Some(addr) = &cfg.run.metrics_addr {
        let token = crate::telemetry::server::metrics_token(cfg.run.metrics_token_file.as_deref())
            .map_err(|e| Error::Setup(e.to_string()))?;
        crate::telemetry::server::serve(addr, ready.clone(), token)
            .map_err(|e| Error::Setup(format!("run.metrics_addr {addr}: {e}")))?;
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
        retention_ms: None,
    }];
    if k.repartition {
        wanted.push(Wanted {
            name: &events_topic,
            partitions: parts,
            compact: false,
            check: true,
            retention_ms: None,
        });
    }
    for t in [&k.alerts_topic, &k.dlq_topic].into_iter().flatten() {
        wanted.push(Wanted {
            name: t,
            partitions: parts,
            compact: false,
            check: false,
            retention_ms: None,
        });
    }
    // Credential bindings shared between instances (partitions judging together).
    let bindings_topic = super::bindings::topic(&group);
    if k.share_context && k.partitions > 1 && k.repartition {
        wanted.push(Wanted {
            name: &bindings_topic,
            partitions: parts,
            compact: false,
            check: false,
            retention_ms: Some(super::bindings::RETENTION_MS),
        });
    }
    let bootstrap = k.bootstrap_servers.clone().unwrap_or_default();
    let mut backoff = Duration::from_secs(1);
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        match client::ensure_topics(k, &wanted, Duration::from_secs(10)) {
            Ok(()) => break,
            Err(Error::Unavailable { message }) => {
                metrics::get().error(metrics::stage::KAFKA, "unreachable");
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
    let lake_dir = cfg.lake.dir.clone();
    for t in &k.topics {
        // Whoever decodes the native records keeps them for the lake.
        let d = cfg
            .decoder(t.format)
            .map_err(|e| Error::Setup(e.to_string()))?
            .keep_records(lake_dir.is_some());
        decoders.insert(t.name.clone(), d);
    }
    let (ingest, topics) = if k.repartition {
        let canonical = cfg
            .decoder(crate::decode::Format::Canonical)
            .map_err(|e| Error::Setup(e.to_string()))?;
        let ingest = Ingest {
            decoders,
            events_topic: events_topic.clone(),
            partitions: k.partitions,
            dlq_topic: k.dlq_topic.clone(),
            lake: match &lake_dir {
                Some(dir) => Some(crate::lake::Writer::open(dir, &cfg.lake, "ingest")?),
                None => None,
            },
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
        ready,
    };
    // The SQL endpoints serve the lake this process writes (validated: they need a lake),
    // listening before the start is announced.
    let _endpoints = match (&lake_dir, cfg.sql.enabled()) {
        (Some(dir), true) => {
            Some(crate::query::serve(dir, &cfg.sql).map_err(|e| Error::Setup(e.to_string()))?)
        }
        _ => None,
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
        if let (Some(dir), Some(keep)) = (&lake_dir, cfg.lake.retention) {
            let stop = &stop;
            s.spawn(move || expire_loop(dir, keep, stop));
        }
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
    let m = metrics::get();
    tracing::info!(
        records = metrics::total(&m.input_records),
        events = metrics::total(&m.events),
        rejects = metrics::total(&m.rejects),
        dead_letters = metrics::total(&m.dlq),
        detected = m.detect_events.get(),
        skipped = metrics::total(&m.detect_skipped),
        alerts = metrics::total(&m.alerts),
        checkpoints = m.checkpoints.get(),
        "nhiwatch run stopped"
    );
    result
}

/// Deletes expired lake partitions at start and hourly, until `stop`.
fn expire_loop(dir: &std::path::Path, keep: crate::config::Duration, stop: &AtomicBool) {
    let mut last: Option<std::time::Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
            last = Some(std::time::Instant::now());
            if let Err(e) = crate::lake::writer::expire(dir, keep, crate::time::Timestamp::now()) {
                metrics::get().error(metrics::stage::LAKE, "expire");
                tracing::error!(error = %e, "lake retention failed (retried in an hour)");
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
