//! Masking cost: `redact` over every line of a file (the lake's `record` column masks every
//! record it keeps). `cargo bench --bench redact -- FILE.jsonl`; prints the best of seven runs
//! in records/s and MB/s, and how many lines had something masked.

use std::time::Instant;

fn main() {
    let Some(path) = std::env::args().skip(1).find(|a| !a.starts_with("--")) else {
        eprintln!("usage: cargo bench --bench redact -- FILE.jsonl");
        return;
    };
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            return;
        }
    };
    let lines: Vec<&[u8]> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut best = f64::MAX;
    let mut masked = 0usize;
    for _ in 0..7 {
        let started = Instant::now();
        masked = 0;
        for line in &lines {
            let out = nhiwatch::redact::redact(line);
            if matches!(out, std::borrow::Cow::Owned(_)) {
                masked += 1;
            }
            std::hint::black_box(&out);
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    println!(
        "redact: {} records, {:.0} records/s, {:.1} MB/s, {} masked",
        lines.len(),
        lines.len() as f64 / best,
        text.len() as f64 / best / 1e6,
        masked
    );
}
