#!/usr/bin/env bash
# Makes a lake of ≥ 10 million events for benches/investigations.rs: a simulated organisation
# (IDENTITIES, DAYS) streamed through a FIFO into `nhiwatch replay --lake` (no 10 GB file on
# disk). Uses the release binary.
set -euo pipefail
lake=${1:?usage: lake-10m.sh LAKE_DIR}
identities=${IDENTITIES:-2400}
days=${DAYS:-90}
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/nhiwatch
export NHIWATCH_FINGERPRINT_KEY=${NHIWATCH_FINGERPRINT_KEY:-bench-key-0123456789}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkfifo "$tmp/records.jsonl"
"$bin" simulate --identities "$identities" --days "$days" --start 2026-01-05 \
  --output "$tmp/records.jsonl" &
"$bin" replay --emit none --progress never --lake "$lake" "$tmp/records.jsonl"
wait
