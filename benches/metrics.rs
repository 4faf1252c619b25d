//! What the metrics cost (criterion):
//! * `metrics/per_record`: the updates `nhiwatch run` makes per input record and event (record
//!   and byte counters of its topic and source, the event counter, the detector counter, the
//!   event-time watermark) through pre-resolved handles;
//! * `metrics/census`: recounting the detection-state gauges of an engine holding 2,000
//!   identities (done every 5 s);
//! * `metrics/scrape`: rendering `/metrics` with every declared series (alerts of 4 detectors ×
//!   5 severities × 7 environment classes, errors, rejects, process metrics).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use nhiwatch::event::{Action, Source};
use nhiwatch::simulate::{Settings, Simulation};
use nhiwatch::telemetry::metrics::{self, EventCounters, RecordCounters};

mod common;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
    let m = metrics::get();
    let records = RecordCounters::new("bench-topic");
    let events = EventCounters::new();
    let detected = m.detect_events.clone();
    let mut g = c.benchmark_group("metrics");
    g.throughput(Throughput::Elements(1));
    let mut t = 1_700_000_000i64;
    g.bench_function("per_record", |b| {
        b.iter(|| {
            t += 1;
            records.record(Some(Source::Vault), 1100);
            events.of(Source::Vault, Action::Mint).inc();
            detected.inc();
            m.saw_event_time(Source::Vault, t);
        })
    });

    let cfg = common::config();
    let mut engine = cfg.engine(None).expect("engine");
    let decoder = common::decoder(&cfg);
    let sim = Simulation::new(Settings {
        seed: 7,
        identities: 2000,
        days: 3,
        ..Settings::default()
    })
    .expect("settings");
    let mut out = Vec::new();
    let mut alerts = Vec::new();
    for record in sim.records(usize::MAX) {
        out.clear();
        decoder.decode(record.as_bytes(), &mut out);
        for e in out.drain(..).flatten() {
            engine.process(&e, &mut alerts);
        }
    }
    let identities = engine.state.identities.len() as u64;
    g.throughput(Throughput::Elements(identities));
    g.bench_function("census", |b| b.iter(|| m.set_census(&engine.census())));

    m.declare_alerts(
        &engine.detector_names(),
        &decoder.environments().metric_labels(),
    );
    m.declare_sink("kafka");
    g.throughput(Throughput::Elements(1));
    g.bench_function("scrape", |b| b.iter(|| m.encode().len()));
    g.finish();
    eprintln!(
        "metrics: census over {identities} identities; scrape renders {} bytes",
        m.encode().len()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
