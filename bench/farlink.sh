#!/usr/bin/env bash
# A geostationary satellite link on loopback: every response waits 0.6 s before its first
# byte and each connection carries at most 2 MB/s. Over it, the same source mix (3 files of
# 20-30 MB among 100 small and medium ones, ~120 MB, spread over 4 hosts 127.0.0.1-4) is
# fetched by:
#
#   nix-j1           nix-build of builtin:fetchurl FODs (import <nix/fetchurl.nix>), max-jobs 1
#   nix-j8           the same, max-jobs 8
#   srcgrab          srcgrab fetch --no-substituters, default options (32 connections, 8 per
#                    host, large files in 4 ranges)
#   srcgrab-tuned    srcgrab fetch --max-connections 48 --max-per-host 16 --segments 8
#   srcgrab-mirrors  as srcgrab-tuned, each large file also listed on a second host (ranges
#                    come from both)
#
#   bench/farlink.sh [LATENCY_S] [BYTES_PER_S]      default 0.6 2000000
#   NIX=0 bench/farlink.sh                          srcgrab only
#   TUNED='--max-per-host 16' bench/farlink.sh      other options for the tuned rows
#
# Each line: wall seconds, and the ratio to nix-j8. srcgrab writes a full binary cache (NARs,
# zstd) and mirror; Nix only fills its store.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
latency=${1:-0.6}
rate=${2:-2000000}
tuned=${TUNED:---max-connections 48 --max-per-host 16 --segments 8}
work=$(mktemp -d /var/tmp/srcgrab-farlink.XXXXXX)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  if [ -s "$work/outs" ]; then xargs -r nix-store --delete < "$work/outs" > /dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release -q --bin srcgrab --manifest-path "$root/Cargo.toml"
srcgrab="$root/target/release/srcgrab"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

python3 - "$work" "$port" <<'PY'
import hashlib, json, os, random, sys
work, port = sys.argv[1], sys.argv[2]
rng = random.Random(7)
sizes = [20_000_000, 25_000_000, 30_000_000]
raw = [2 ** rng.uniform(12, 22) for _ in range(100)]
sizes += [max(1000, int(r * 45_000_000 / sum(raw))) for r in raw]
rng.shuffle(sizes)
os.makedirs(f"{work}/srv")
fods, files = ["{"], []
for i, size in enumerate(sizes):
    name = f"src-{i:03d}.tar.gz"
    data = os.urandom(size)
    open(f"{work}/srv/{name}", "wb").write(data)
    host = f"127.0.0.{1 + i % 4}"
    mirror = f"127.0.0.{1 + (i + 1) % 4}"
    digest = hashlib.sha256(data).hexdigest()
    url = f"http://{host}:{port}/{name}"
    fods.append(f'  f{i:03d} = import <nix/fetchurl.nix> {{ url = "{url}"; sha256 = "{digest}"; }};')
    files.append({"url": url, "mirror": f"http://{mirror}:{port}/{name}", "size": size})
fods.append("}")
open(f"{work}/fods.nix", "w").write("\n".join(fods) + "\n")
json.dump(files, open(f"{work}/files.json", "w"))
print(f"{len(sizes)} files, {sum(sizes) / 1e6:.0f} MB, largest {max(sizes) / 1e6:.0f} MB")
PY

# The link: 0.6 s before each response's first byte, 2 MB/s per connection, HTTP/1.1
# keep-alive, byte ranges, a strong ETag (bench/farlink_server.py), on hosts 127.0.0.1-4.
python3 "$root/bench/farlink_server.py" "$work/srv" "$port" "$latency" "$rate" \
  127.0.0.1 127.0.0.2 127.0.0.3 127.0.0.4 > "$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.4:$port/" && break; sleep 0.1; done

nix-instantiate "$work/fods.nix" 2> /dev/null > "$work/drvs"
xargs nix-store --query --outputs < "$work/drvs" > "$work/outs"
python3 - "$work" <<'PY'
import base64, json, subprocess, sys
work = sys.argv[1]
drvs = open(f"{work}/drvs").read().split()
outs = open(f"{work}/outs").read().split()
files = {f["url"]: f for f in json.load(open(f"{work}/files.json"))}
shown = json.loads(subprocess.check_output(
    ["nix", "--extra-experimental-features", "nix-command", "show-derivation", *drvs]))
def manifest(with_mirrors):
    entries = []
    for drv, out in zip(drvs, outs):
        env = shown[drv]["env"]
        urls = [env["url"]]
        if with_mirrors and files[env["url"]]["size"] >= 8 << 20:
            urls.append(files[env["url"]]["mirror"])
        entries.append({
            "storePath": out, "name": out.split("-", 1)[1],
            "hash": {"algo": "sha256", "mode": "flat",
                     "sri": "sha256-" + base64.b64encode(bytes.fromhex(env["outputHash"])).decode()},
            "kind": "url", "urls": urls, "drvPaths": {"x86_64-linux": drv},
            "systems": ["x86_64-linux"], "attrs": [out], "attrCount": 1})
    entries.sort(key=lambda e: e["storePath"])
    return {"version": 1, "provenance": {"systems": ["x86_64-linux"], "nixVersion": "bench",
            "config": {"allowUnfree": False, "allowBroken": False, "allowInsecure": False}, "attrs": []},
            "failures": [], "entries": entries}
json.dump(manifest(False), open(f"{work}/manifest.json", "w"))
json.dump(manifest(True), open(f"{work}/manifest-mirrors.json", "w"))
PY

declare -A walls
measure() { # LABEL COMMAND...
  local label=$1; shift
  local began ended
  began=$(date +%s.%N)
  "$@" > "$work/$label.log" 2>&1 || { echo "$label failed:"; tail -5 "$work/$label.log"; }
  ended=$(date +%s.%N)
  walls[$label]=$(echo "$ended - $began" | bc)
  printf '%-16s wall %6.1f s\n' "$label" "${walls[$label]}"
}

xargs -r nix-store --delete < "$work/outs" > /dev/null 2>&1 || true
for jobs in $([ "${NIX:-1}" = 1 ] && echo 1 8); do
  measure "nix-j$jobs" nix-build "$work/fods.nix" --no-out-link --max-jobs "$jobs" \
    --option substituters '' --option hashed-mirrors ''
  xargs -r nix-store --delete < "$work/outs" > /dev/null 2>&1 || true
done
measure srcgrab "$srcgrab" fetch "$work/manifest.json" --cache "$work/c1" --no-substituters \
  --report "$work/srcgrab.json"
grep -E "entries|127\.0\.0" "$work/srcgrab.log" | sed 's/^/    /'
measure srcgrab-tuned "$srcgrab" fetch "$work/manifest.json" --cache "$work/c2" --no-substituters \
  $tuned
grep -E "entries" "$work/srcgrab-tuned.log" | sed 's/^/    /'
measure srcgrab-mirrors "$srcgrab" fetch "$work/manifest-mirrors.json" --cache "$work/c3" \
  --no-substituters $tuned
grep -E "entries" "$work/srcgrab-mirrors.log" | sed 's/^/    /'
echo
[ -n "${walls[nix-j8]:-}" ] && for label in srcgrab srcgrab-tuned srcgrab-mirrors; do
  printf '%-16s %.2f x nix-j8 time\n' "$label" "$(echo "${walls[$label]} / ${walls[nix-j8]}" | bc -l)"
done
