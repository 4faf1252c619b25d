//! The baseline `nhiwatch replay` is compared with: serde_json parsing each line of the same
//! file into a `serde_json::Value`, reading the file the same way (one pass, one core).
//!
//! `cargo bench --bench parse_baseline -- FILE` (see `scripts/bench-replay`). Prints the best
//! of three runs in records/s and MB/s.

use std::io::Read;
use std::time::Instant;

fn main() {
    let Some(path) = std::env::args().skip(1).find(|a| !a.starts_with("--")) else {
        eprintln!("usage: cargo bench --bench parse_baseline -- FILE.jsonl");
        return;
    };
    let mut best = f64::MAX;
    let (mut records, mut bytes) = (0u64, 0u64);
    for _ in 0..3 {
        let started = Instant::now();
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("cannot open {path}: {e}");
                return;
            }
        };
        let mut buf = vec![0u8; 1 << 21];
        let (mut start, mut end) = (0usize, 0usize);
        records = 0;
        bytes = 0;
        loop {
            let n = file.read(&mut buf[end..]).unwrap_or(0);
            end += n;
            let mut pos = start;
            while let Some(i) = memchr::memchr(b'\n', &buf[pos..end]) {
                let line = &buf[pos..pos + i];
                if !line.is_empty() {
                    let v: Result<serde_json::Value, _> = serde_json::from_slice(line);
                    std::hint::black_box(&v);
                    records += 1;
                }
                bytes += i as u64 + 1;
                pos += i + 1;
            }
            buf.copy_within(pos..end, 0);
            end -= pos;
            start = 0;
            if end == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            if n == 0 {
                break;
            }
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    println!(
        "serde_json parse to Value: {records} records, {:.1} MB in {best:.2} s (best of 3): {:.0} records/s, {:.0} MB/s",
        bytes as f64 / 1e6,
        records as f64 / best,
        bytes as f64 / 1e6 / best
    );
}
