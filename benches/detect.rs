//! Detection throughput (criterion): the four detectors over events already decoded from a
//! simulated organisation, so this measures baselines, detectors and alerting alone. The
//! whole path (reading, decoding, detecting, writing alerts) is `nhiwatch replay`, measured by
//! `scripts/bench-detect`.
//!
//! Groups:
//! * `detect/steady`: 2,000 identities whose baselines are already learned (the engine has
//!   seen the preceding days), the common case in production;
//! * `detect/cold`: the same events into an empty engine (every identity is new);
//! * `detect/naive`: the naive `first_seen` rule, for comparison.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

use nhiwatch::config::Config;
use nhiwatch::event::Event;
use nhiwatch::simulate::{Settings, Simulation};

mod common;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Events of a 2,000-identity organisation over 8 days, split into history (7 days) and the
/// day measured.
fn events(cfg: &Config) -> (Vec<Event>, Vec<Event>) {
    let sim = Simulation::new(Settings {
        seed: 7,
        identities: 2000,
        days: 8,
        ..Settings::default()
    })
    .expect("settings");
    let decoder = common::decoder(cfg);
    let mut out = Vec::new();
    let mut all = Vec::new();
    for r in sim.records(usize::MAX) {
        out.clear();
        decoder.decode(r.as_bytes(), &mut out);
        all.extend(out.drain(..).filter_map(Result::ok));
    }
    let cut = nhiwatch::time::Timestamp::parse("2026-03-30T00:00:00Z").expect("t");
    let split = all.partition_point(|e| e.time < cut);
    let day = all.split_off(split);
    (all, day)
}

fn bench(c: &mut Criterion) {
    let cfg = common::config();
    let (history, day) = events(&cfg);
    let mut g = c.benchmark_group("detect");
    g.sample_size(10);
    g.throughput(Throughput::Elements(day.len() as u64));
    let learned = |only: Option<&[String]>| {
        let mut e = cfg.engine(only).expect("engine");
        let mut alerts = Vec::new();
        for ev in &history {
            e.process(ev, &mut alerts);
        }
        e
    };
    g.bench_function("steady", |b| {
        b.iter_batched(
            || learned(None),
            |mut e| {
                let mut alerts = Vec::new();
                for ev in &day {
                    e.process(ev, &mut alerts);
                }
                e.flush(&mut alerts);
                alerts.len()
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("cold", |b| {
        b.iter_batched(
            || cfg.engine(None).expect("engine"),
            |mut e| {
                let mut alerts = Vec::new();
                for ev in &day {
                    e.process(ev, &mut alerts);
                }
                alerts.len()
            },
            BatchSize::LargeInput,
        )
    });
    let naive = ["first_seen".to_string()];
    g.bench_function("naive", |b| {
        b.iter_batched(
            || learned(Some(&naive)),
            |mut e| {
                let mut alerts = Vec::new();
                for ev in &day {
                    e.process(ev, &mut alerts);
                }
                alerts.len()
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
