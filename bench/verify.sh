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
mkdir -p "$work/disk"
for i in $(seq "$files"); do
  head -c "$((size_mb * 1024 * 1024))" /dev/urandom > "$work/disk/file-$i.tar.gz"
done
python3 - "$work" <<'PY'
# The manifest of those files: flat sha256 entries, store paths as Nix computes them.
import base64, hashlib, json, os, sys
work = sys.argv[1]
alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
def nix32(b):
    out = ""
    for i in range((len(b) * 8 - 1) // 5, -1, -1):
        bit, j = i * 5, i * 5 // 8
        c = (b[j] >> (bit % 8)) | ((b[j + 1] << (8 - bit % 8)) if j + 1 < len(b) else 0)
        out += alphabet[c & 31]
    return out
def store_path(name, digest):
    inner = hashlib.sha256(f"fixed:out:sha256:{digest.hex()}:".encode()).hexdigest()
    fp = hashlib.sha256(f"output:out:sha256:{inner}:/nix/store:{name}".encode()).digest()
    folded = bytearray(20)
    for i, b in enumerate(fp):
        folded[i % 20] ^= b
    return f"/nix/store/{nix32(bytes(folded))}-{name}"
entries = []
for name in sorted(os.listdir(f"{work}/disk")):
    digest = hashlib.sha256(open(f"{work}/disk/{name}", "rb").read()).digest()
    entries.append({
        "storePath": store_path(name, digest), "name": name, "kind": "url",
        "hash": {"algo": "sha256", "mode": "flat", "sri": "sha256-" + base64.b64encode(digest).decode()},
        "drvPath": "/nix/store/00000000000000000000000000000000-bench.drv",
        "systems": ["x86_64-linux"], "attrs": [name], "attrCount": 1,
    })
entries.sort(key=lambda e: e["storePath"])
manifest = {"version": 1, "failures": [], "entries": entries, "provenance": {
    "attrs": [], "systems": ["x86_64-linux"], "nixVersion": "bench",
    "config": {"allowUnfree": False, "allowBroken": False, "allowInsecure": False}}}
json.dump(manifest, open(f"{work}/manifest.json", "w"))
PY
target/release/srcgrab ingest "$work/disk" --manifest "$work/manifest.json" \
  --cache "$work/cache" --compression "$compression" > /dev/null
rm -rf "$work/disk"
bytes=$(cat "$work"/cache/nar/* "$work"/cache/sha256/[0-9a-f]* | wc -c)
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
timed "sha256sum (1 core)" sh -c "cat '$work'/cache/nar/* '$work'/cache/sha256/[0-9a-f]* | sha256sum"
timed "sha256sum (2 in parallel)" sh -c "ls -d '$work'/cache/nar/* '$work'/cache/sha256/[0-9a-f]* | xargs -P 2 -n 8 sha256sum"
timed "srcgrab verify" target/release/srcgrab verify --cache "$work/cache" --manifest "$work/manifest.json"
timed "srcgrab verify --quick" target/release/srcgrab verify --cache "$work/cache" --quick
