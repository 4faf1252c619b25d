#!/usr/bin/env bash
# The ten investigation queries of docs/investigations.md on one lake, with nhiwatch
# (benches/investigations.rs: its DataFusion session, in process) and with DuckDB
# (benches/duckdb_investigations.py, in process, Arrow results), side by side. Both get the
# same `now()` and the same sample values; a query whose row counts differ between the two
# is marked, and the script fails.
#
#   benches/investigations.sh LAKE [RUNS]      (make LAKE with benches/lake-10m.sh)
set -euo pipefail
lake=${1:?usage: investigations.sh LAKE [RUNS]}
runs=${2:-5}
cd "$(dirname "$0")/.."
python3 -c 'import duckdb, pyarrow' 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check duckdb pyarrow
cargo bench --quiet --bench investigations --no-run 2>/dev/null
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
if ! NHIWATCH_BENCH_LAKE=$lake NHIWATCH_BENCH_RUNS=$runs \
  cargo bench --quiet --bench investigations 2>"$out/nhiwatch.err" >"$out/nhiwatch.txt"; then
  cat "$out/nhiwatch.txt" >&2
  grep -v '^ *[0-9]*: \|^note:' "$out/nhiwatch.err" >&2
  exit 1
fi
now=$(sed -n 's/.*now() = \([^;]*\);.*/\1/p' "$out/nhiwatch.txt")
python3 benches/duckdb_investigations.py "$lake" "$runs" "$now" >"$out/duckdb.txt"
head -1 "$out/nhiwatch.txt"
head -1 "$out/duckdb.txt"
if ! diff <(grep "' -> '" "$out/nhiwatch.txt") <(grep "' -> '" "$out/duckdb.txt") >/dev/null; then
  echo "the two engines chose different sample values:" >&2
  diff <(grep "' -> '" "$out/nhiwatch.txt") <(grep "' -> '" "$out/duckdb.txt") >&2 || true
  exit 1
fi
grep "' -> '" "$out/nhiwatch.txt"
python3 - "$out/nhiwatch.txt" "$out/duckdb.txt" <<'PY'
import sys

def table(path):
    rows = {}
    for line in open(path):
        f = line.split()
        if len(f) == 3 and f[0] != "query" and f[1] != "->":
            rows[f[0]] = (float(f[1]), int(f[2]))
    return rows

nw, dd = table(sys.argv[1]), table(sys.argv[2])
print(f"| query | nhiwatch ms | DuckDB ms | ratio | rows |")
print(f"|---|---:|---:|---:|---:|")
bad = 0
for name, (ms, rows) in nw.items():
    dms, drows = dd[name]
    mark = "" if rows == drows else f" ≠ DuckDB {drows}"
    bad += rows != drows
    print(f"| {name} | {ms:.1f} | {dms:.1f} | {ms / dms:.2f} | {rows}{mark} |")
sys.exit(1 if bad else 0)
PY
