//! The ten investigation queries of `docs/investigations.md` on a lake, timed in process:
//! the DataFusion session nhiwatch uses (`nhiwatch query`, the SQL endpoints), warm file
//! cache, one warm-up run then the median of `NHIWATCH_BENCH_RUNS` (default 5).
//! `benches/duckdb_investigations.py` runs the same SQL with DuckDB on the same files.
//!
//! ```sh
//! benches/lake-10m.sh /tmp/lake10m          # simulate and replay ≥ 10 million events
//! NHIWATCH_BENCH_LAKE=/tmp/lake10m cargo bench --bench investigations
//! python3 benches/duckdb_investigations.py /tmp/lake10m
//! ```
//!
//! `now()` is replaced by `NHIWATCH_BENCH_NOW` (default: the day after the newest event) so
//! the windows of the queries cover the simulated data.

use std::time::{Duration, Instant};

#[path = "../tests/util/investigations.rs"]
mod investigations;

fn main() {
    let Ok(lake) = std::env::var("NHIWATCH_BENCH_LAKE") else {
        eprintln!("set NHIWATCH_BENCH_LAKE to a lake directory (benches/lake-10m.sh makes one)");
        return;
    };
    let runs: usize = std::env::var("NHIWATCH_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let rt = nhiwatch::query::runtime().expect("runtime");
    let ctx = rt
        .block_on(nhiwatch::query::session(std::path::Path::new(&lake)))
        .expect("session");
    let now = match std::env::var("NHIWATCH_BENCH_NOW") {
        Ok(v) => v,
        Err(_) => {
            let b = rt
                .block_on(nhiwatch::query::execute(
                    &ctx,
                    "SELECT CAST(date_trunc('day', max(time)) + INTERVAL '1 day' AS VARCHAR) AS t FROM events",
                ))
                .expect("newest event");
            let col = datafusion::arrow::util::display::ArrayFormatter::try_new(
                b[0].column(0).as_ref(),
                &Default::default(),
            )
            .expect("format");
            col.value(0).to_string()
        }
    };
    let events = rt
        .block_on(nhiwatch::query::execute(
            &ctx,
            "SELECT count(*) FROM events",
        ))
        .expect("count");
    println!(
        "lake {lake}: {} events; now() = {now}; median of {runs} runs after one warm-up",
        datafusion::arrow::util::pretty::pretty_format_batches(&events).expect("fmt")
    );
    println!("{:<32} {:>10} {:>8}", "query", "ms", "rows");
    for (name, sql) in investigations::queries() {
        let sql = sql.replace("now()", &format!("TIMESTAMP '{now}'"));
        let mut times: Vec<Duration> = Vec::new();
        let mut rows = 0;
        for i in 0..=runs {
            let t = Instant::now();
            let b = rt
                .block_on(nhiwatch::query::execute(&ctx, &sql))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            if i > 0 {
                times.push(t.elapsed());
            }
            rows = b.iter().map(|b| b.num_rows()).sum::<usize>();
        }
        times.sort();
        println!(
            "{name:<32} {:>10.1} {rows:>8}",
            times[times.len() / 2].as_secs_f64() * 1000.0
        );
    }
}
