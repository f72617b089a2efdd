#!/usr/bin/env bash
# Throughput of the cache writer (`Cache::publish_file`: NAR + sha256/sha512 of the bytes +
# NarHash + zstd + FileHash in one pass, fsync, rename, mirror link) against the floor of
# one sha256 pass and one single-threaded zstd -3 pass over the same bytes.
#
#   bench/publish.sh [MIB]        default 1024
#
# Two inputs: incompressible (random, like a .tar.gz) and compressible (text). Page cache is
# warm for every run (the file is read once before). Each line gives wall time and CPU time
# (helper threads included); on a shared machine the CPU figures are the ones to compare.
# The fsync of every published file makes wall time disk-bound; TMPDIR=/dev/shm leaves the
# disk out.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mib=${1:-1024}
work=$(mktemp -d "${TMPDIR:-/tmp}/srcgrab-publish-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
cargo build --release -q -p srcgrab-fetcher --example publish_throughput --manifest-path "$root/Cargo.toml"
bin="$root/target/release/examples/publish_throughput"

head -c $((mib << 20)) /dev/urandom > "$work/random"
# Compressible: base64 text of random data (4/3 of MIB), which zstd shrinks by about 1/4.
head -c $((mib * 3 << 18)) /dev/urandom | base64 -w 76 > "$work/text"

for input in random text; do
  cat "$work/$input" > /dev/null
  echo "== $input, $mib MiB"
  for compression in zstd none; do
    rm -rf "$work/cache"
    "$bin" "$work/$input" "$work/cache" "$compression" cache,mirror
  done
  rm -rf "$work/cache"
  "$bin" "$work/$input" "$work/cache" zstd cache
  echo "-- CLI reference: sha256sum; zstd -3 -T1"
  /usr/bin/time -f "sha256sum %e s" sha256sum "$work/$input" > /dev/null
  /usr/bin/time -f "zstd -3 -T1 %e s" zstd -q -3 -T1 -c "$work/$input" > /dev/null
done
