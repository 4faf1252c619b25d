#!/usr/bin/env python3
"""The ten investigation queries of docs/investigations.md with DuckDB on a lake's Parquet
files: one warm-up run, then the median of N (default 5). The counterpart of
`NHIWATCH_BENCH_LAKE=LAKE cargo bench --bench investigations` (same SQL, same files, same
substitutions of `now()` and of the document's sample values); `benches/investigations.sh`
runs both. Results are fetched as Arrow, so no time goes to building Python objects.
Needs `pip install duckdb pyarrow`.

usage: duckdb_investigations.py LAKE [RUNS] [NOW]
"""
import os
import re
import statistics
import sys
import time

import duckdb

# (literal in docs/investigations.md, SQL choosing the bench lake's value): keep in step with
# LOOKUPS in benches/investigations.rs.
LOOKUPS = [
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
]

lake = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "investigations.md")).read()
queries = re.findall(r"```sql\n(.*?)```", doc, re.S)

con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
con.execute(f"SET threads = {os.cpu_count()}")
con.execute(
    f"CREATE VIEW events AS SELECT * FROM read_parquet('{lake}/events/*/*/*.parquet', hive_partitioning = true)"
)
con.execute(
    f"CREATE VIEW alerts AS SELECT * FROM read_parquet('{lake}/alerts/*/*.parquet', hive_partitioning = true)"
)
con.execute(f"CREATE VIEW baselines AS SELECT * FROM read_parquet('{lake}/baselines/*.parquet')")
now = (
    sys.argv[3]
    if len(sys.argv) > 3
    else con.execute(
        "SELECT CAST(date_trunc('day', max(time)) + INTERVAL 1 DAY AS VARCHAR) FROM events"
    ).fetchone()[0]
)
now = now.replace("+00", "Z") if now.endswith("+00") else now
total = con.execute("SELECT count(*) FROM events").fetchone()[0]
print(f"duckdb {duckdb.__version__}, lake {lake}: {total} events; now() = {now}; median of {runs}")
lookups = [(literal, con.execute(sql).fetchone()[0]) for literal, sql in LOOKUPS]
for literal, value in lookups:
    print(f"  '{literal}' -> '{value}'")
print(f"{'query':<32} {'ms':>10} {'rows':>8}")
for q in queries:
    name = q.strip().splitlines()[0].removeprefix("-- name: ")
    sql = q.replace("now()", f"TIMESTAMP '{now}'")
    for literal, value in lookups:
        sql = sql.replace(literal, value)
    times = []
    rows = 0
    for i in range(runs + 1):
        t = time.perf_counter()
        rows = con.execute(sql).to_arrow_table().num_rows
        if i > 0:
            times.append(time.perf_counter() - t)
    print(f"{name:<32} {statistics.median(times) * 1000:>10.1f} {rows:>8}")
