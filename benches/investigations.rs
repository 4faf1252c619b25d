//! The ten investigation queries of `docs/investigations.md` on a lake, timed in process:
//! the DataFusion session nhiwatch uses (`nhiwatch query`, the SQL endpoints), warm file
//! cache, one warm-up run then the median of `NHIWATCH_BENCH_RUNS` (default 5), within the
//! default `sql.memory_limit` (2 GiB).
//! `benches/duckdb_investigations.py` runs the same SQL with DuckDB on the same files, and
//! `benches/investigations.sh` runs both and prints them side by side.
//!
//! ```sh
//! benches/lake-10m.sh /tmp/lake10m          # simulate and replay ≥ 10 million events
//! benches/investigations.sh /tmp/lake10m    # both engines, one table
//! NHIWATCH_BENCH_LAKE=/tmp/lake10m cargo bench --bench investigations   # nhiwatch alone
//! NHIWATCH_BENCH_ONLY=new_scopes,credential_trail …                     # some of them
//! ```
//!
//! `now()` is replaced by `NHIWATCH_BENCH_NOW` (default: the day after the newest event) so
//! the windows of the queries cover the simulated data, and the document's sample alert id,
//! credential fingerprint and identity by values of the bench lake (see [`LOOKUPS`]) so the
//! point look-ups find rows. The DuckDB script substitutes the same values.

use std::time::{Duration, Instant};

// The allocator of the nhiwatch binary, so the bench times what `nhiwatch query` and the
// endpoints run.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use datafusion::prelude::SessionContext;

#[path = "../tests/util/investigations.rs"]
mod investigations;

/// (literal in docs/investigations.md, SQL choosing the bench lake's value), as an analyst
/// would pivot: from the newest alert that names a credential, and from the identity of the
/// newest alert on a mint. Keep in step with `LOOKUPS` in `duckdb_investigations.py`.
const LOOKUPS: [(&str, &str); 3] = [
    (
        "a-e7c9304e574141c3bc236b7a7c73e76f",
        "SELECT id FROM alerts WHERE credential IS NOT NULL ORDER BY time DESC, id LIMIT 1",
    ),
    (
        "ff9fb64319d11f468b158cae2f5aece5",
        "SELECT credential FROM alerts WHERE credential IS NOT NULL ORDER BY time DESC, id LIMIT 1",
    ),
    (
        "gitlab:acme-platform/api/.gitlab-ci.yml",
        "SELECT identity FROM alerts WHERE action = 'mint' ORDER BY time DESC, id LIMIT 1",
    ),
];

/// The first value of a result as text.
fn scalar(rt: &tokio::runtime::Runtime, ctx: &SessionContext, sql: &str) -> String {
    let batches = rt
        .block_on(nhiwatch::query::execute(ctx, sql))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let batch = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .unwrap_or_else(|| panic!("no rows: {sql}"));
    datafusion::arrow::util::display::ArrayFormatter::try_new(
        batch.column(0).as_ref(),
        &Default::default(),
    )
    .expect("format")
    .value(0)
    .to_string()
}

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
        .block_on(nhiwatch::query::session(
            std::path::Path::new(&lake),
            nhiwatch::query::SqlConfig::default().memory_limit,
        ))
        .expect("session");
    let now = std::env::var("NHIWATCH_BENCH_NOW").unwrap_or_else(|_| {
        scalar(
            &rt,
            &ctx,
            "SELECT CAST(date_trunc('day', max(time)) + INTERVAL '1 day' AS VARCHAR) FROM events",
        )
    });
    let events = scalar(&rt, &ctx, "SELECT count(*) FROM events");
    println!(
        "nhiwatch {}, lake {lake}: {events} events; now() = {now}; median of {runs} runs after one warm-up",
        env!("CARGO_PKG_VERSION")
    );
    let lookups: Vec<(&str, String)> = LOOKUPS
        .iter()
        .map(|(literal, sql)| (*literal, scalar(&rt, &ctx, sql)))
        .collect();
    for (literal, value) in &lookups {
        println!("  '{literal}' -> '{value}'");
    }
    println!("{:<32} {:>10} {:>8}", "query", "ms", "rows");
    // NHIWATCH_BENCH_ONLY=name[,name…] times only those queries.
    let only = std::env::var("NHIWATCH_BENCH_ONLY").ok();
    let chosen = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|n| n == name))
    };
    for (name, sql) in investigations::queries() {
        if !chosen(&name) {
            continue;
        }
        let mut sql = sql.replace("now()", &format!("TIMESTAMP '{now}'"));
        for (literal, value) in &lookups {
            sql = sql.replace(literal, value);
        }
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
