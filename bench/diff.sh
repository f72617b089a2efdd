#!/usr/bin/env bash
# Benchmark of `srcgrab diff` on two generated 100,000-entry manifests (about 70 MB each):
# ~1% of packages updated, 0.5% removed, 0.5% added, 0.5% with only metadata changed.
# Prints the wall time of the whole command and, from SRCGRAB_TIMING, parsing (both files,
# read and validated in parallel) apart from the diff itself. Best of RUNS runs.
#
# usage: bench/diff.sh [ENTRIES] [RUNS]        (defaults: 100000 3)
set -euo pipefail
cd "$(dirname "$0")/.."
entries=${1:-100000}
runs=${2:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --quiet --release --bin srcgrab
cargo build --quiet --release -p srcgrab-manifest --example gen_manifest
target/release/examples/gen_manifest "$entries" "$work/old.json" "$work/new.json"
ls -l "$work"/*.json | awk '{print "bench/diff: " $NF ": " $5 " bytes"}'

for format in text json markdown; do
  for i in $(seq "$runs"); do
    start=$(date +%s.%N)
    SRCGRAB_TIMING=1 target/release/srcgrab diff "$work/old.json" "$work/new.json" \
      --format "$format" > "$work/out" 2> "$work/timing"
    end=$(date +%s.%N)
    printf 'bench/diff: %-8s run %d: total %.3fs, %s\n' "$format" "$i" \
      "$(awk "BEGIN{print $end - $start}")" "$(sed -n 's/^srcgrab: timing: //p' "$work/timing")"
  done
done
head -7 "$work/out" | sed 's/^/bench\/diff: /'
