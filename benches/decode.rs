//! Decoder throughput per format and for the mixed stream, on simulated records (criterion).
//! Also measures the serde_json parse of the same lines into a `Value`, the baseline the
//! decoders are compared with, and the canonical JSON serialization of the decoded events.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nhiwatch::config::DecodeConfig;
use nhiwatch::decode::{Decoder, Format};
use nhiwatch::environment::EnvResolver;
use nhiwatch::fingerprint::Fingerprinter;
use nhiwatch::simulate::{Settings, Simulation};
use nhiwatch::time::Timestamp;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn records(only: Option<Format>, n: usize) -> Vec<String> {
    Simulation::new(Settings {
        seed: 42,
        identities: 300,
        days: 120,
        only,
        ..Settings::default()
    })
    .expect("valid settings")
    .records(n)
}

fn bench(c: &mut Criterion) {
    let fp = Fingerprinter::new(b"bench-key-0123456789").expect("key");
    let decoder = Decoder::new(
        &DecodeConfig::default(),
        fp,
        EnvResolver::default(),
        Format::Auto,
    );
    let bound = Timestamp::now().plus_seconds(86_400);
    let mut group = c.benchmark_group("decode");
    for (name, only) in [
        ("mixed", None),
        ("github", Some(Format::Github)),
        ("gitlab", Some(Format::Gitlab)),
        ("vault", Some(Format::Vault)),
        ("cloudtrail", Some(Format::Cloudtrail)),
        ("kubernetes", Some(Format::Kubernetes)),
    ] {
        let recs = records(only, 2000);
        let bytes: usize = recs.iter().map(String::len).sum();
        group.throughput(Throughput::Elements(recs.len() as u64));
        let mut out = Vec::with_capacity(4);
        group.bench_function(format!("{name} ({} B/record)", bytes / recs.len()), |b| {
            b.iter(|| {
                for r in &recs {
                    out.clear();
                    decoder.decode_with_bound(r.as_bytes(), bound, &mut out);
                }
            })
        });
        if name == "mixed" {
            group.bench_function("mixed: serde_json parse to Value (baseline)", |b| {
                b.iter(|| {
                    for r in &recs {
                        let v: serde_json::Value = serde_json::from_str(r).expect("valid json");
                        std::hint::black_box(v);
                    }
                })
            });
            let mut events = Vec::new();
            for r in &recs {
                decoder.decode_with_bound(r.as_bytes(), bound, &mut events);
            }
            let events: Vec<_> = events.into_iter().filter_map(Result::ok).collect();
            let mut buf = Vec::with_capacity(1 << 20);
            group.throughput(Throughput::Elements(events.len() as u64));
            group.bench_function("mixed: write events as JSON", |b| {
                b.iter(|| {
                    buf.clear();
                    for e in &events {
                        e.write_json(&mut buf);
                        buf.push(b'\n');
                    }
                })
            });
            group.bench_function("mixed: write events as JSON with serde (reference)", |b| {
                b.iter(|| {
                    buf.clear();
                    for e in &events {
                        serde_json::to_writer(&mut buf, e).expect("serialize");
                        buf.push(b'\n');
                    }
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
