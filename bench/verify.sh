#!/usr/bin/env bash
# Verify throughput: `srcgrab verify` (full: decompress, NAR-parse, sha256 of file, NAR and
# content; and --quick: blake3 of each file against the index) against `sha256sum` over the
# same files (the NARs and mirror files verify reads). The cache is made by `srcgrab ingest`
# from FILES random files of SIZE_MB each (random data: as incompressible as real tarballs).
# Runs are warm (files in the page cache), so this measures CPU cost, not the disk.
#
# usage: bench/verify.sh [FILES] [SIZE_MB] [COMPRESSION]     (defaults: 64 16 zstd)
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-64}
size_mb=${2:-16}
compression=${3:-zstd}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --quiet --release --bin srcgrab
cargo build --quiet --release -p srcgrab-manifest --example files_manifest
mkdir -p "$work/disk"
for i in $(seq "$files"); do
  head -c "$((size_mb * 1024 * 1024))" /dev/urandom > "$work/disk/file-$i.tar.gz"
done
target/release/examples/files_manifest "$work/disk" > "$work/manifest.json"
target/release/srcgrab ingest "$work/disk" --manifest "$work/manifest.json" \
  --cache "$work/cache" --compression "$compression" > /dev/null
rm -rf "$work/disk"
# The regular files verify reads: NARs and mirror files (not the mirror keys' symlinks).
find "$work/cache/nar" "$work/cache/sha256" -maxdepth 1 -type f > "$work/files"
bytes=$(xargs cat < "$work/files" | wc -c)
echo "bench/verify: $files files of $size_mb MiB, $compression NARs + mirror files: $((bytes / 1024 / 1024)) MiB to read, $(nproc) cores"

timed() {
  local label=$1
  shift
  "$@" > /dev/null 2>&1 || true # warm the page cache
  local start end
  start=$(date +%s.%N)
  "$@" > /dev/null 2>&1
  end=$(date +%s.%N)
  awk -v l="$label" -v s="$start" -v e="$end" -v b="$bytes" \
    'BEGIN { printf "bench/verify: %-28s %6.2fs  %7.0f MB/s\n", l, e - s, b / (e - s) / 1e6 }'
}
timed "sha256sum (1 process)" sh -c "xargs sha256sum < '$work/files'"
timed "sha256sum ($(nproc) processes)" sh -c "xargs -P $(nproc) -n 8 sha256sum < '$work/files'"
timed "srcgrab verify" target/release/srcgrab verify --cache "$work/cache" --manifest "$work/manifest.json"
timed "srcgrab verify --quick" target/release/srcgrab verify --cache "$work/cache" --quick
