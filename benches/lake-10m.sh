#!/usr/bin/env bash
# Makes a lake of ≥ 10 million events for benches/investigations.rs: a simulated organisation
# (IDENTITIES, DAYS) piped into `nhiwatch replay --lake` (no 10 GB file on disk). Uses the
# release binary.
set -euo pipefail
lake=${1:?usage: lake-10m.sh LAKE_DIR}
identities=${IDENTITIES:-2400}
days=${DAYS:-90}
cd "$(dirname "$0")/.."
# Built together with the bench: the dev-dependencies change DataFusion's features, and two
# release builds of it are some 40 minutes each on a 2-core machine.
cargo build --release --quiet --bin nhiwatch --bench investigations
bin=target/release/nhiwatch
export NHIWATCH_FINGERPRINT_KEY=${NHIWATCH_FINGERPRINT_KEY:-bench-key-0123456789}
"$bin" simulate --identities "$identities" --days "$days" --start 2026-01-05 |
  "$bin" replay --emit none --progress never --lake "$lake" -
