#!/usr/bin/env bash
# Mirroring binaries: N (default 2000) store paths built by real Nix (builder /bin/sh, sandbox
# off; each references an earlier one, sizes from 1 KB to 4 MB), copied by `nix copy` into a
# signed file:// cache (xz, as Hydra's), served on 127.0.0.1, then mirrored by
#
#   nix-copy   nix copy --from http://127.0.0.1:PORT --to file://DIR (xz kept as the
#              upstream has it: Nix decompresses and recompresses every NAR)
#   srcgrab    srcgrab fetch --store-paths LIST --substituter http://127.0.0.1:PORT (each NAR
#              checked, kept as it came)
#
# on the plain loopback and on a far link (LATENCY s before each response's first byte,
# RATE bytes/s per connection). Then `srcgrab stats` of a manifest with STATS_PATHS (10,000)
# outputs, sized from the narinfos of a server holding them, on both links.
#
#   bench/binaries.sh                       N=2000 LATENCY=0.6 RATE=2000000 STATS_PATHS=10000
#   N=200 FAR=0 bench/binaries.sh           a quick run, loopback only
#   LIMIT=600 bench/binaries.sh             stop any one run after 600 s
#   STATS_ONLY=1 bench/binaries.sh          only the stats rows (no Nix builds)
#
# The stats rows' server (bench/farlink_server.py) traces the look-ups in flight each second.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
n=${N:-2000}
latency=${LATENCY:-0.6}
rate=${RATE:-2000000}
stats_paths=${STATS_PATHS:-10000}
work=$(mktemp -d /var/tmp/srcgrab-binaries.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ -s "$work/paths" ]; then tac "$work/paths" | xargs -r nix-store --delete > /dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release -q --bin srcgrab --manifest-path "$root/Cargo.toml"
srcgrab="$root/target/release/srcgrab"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A static server: DIR PORT LATENCY RATE (0 0: plain loopback). HTTP/1.1 keep-alive, ranges.
serve() {
  python3 - "$@" > /dev/null 2>&1 <<'PY' &
import http.server, os, sys, time
root, port, latency, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
class Link(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
    def do_HEAD(self): self.answer(False)
    def do_GET(self): self.answer(True)
    def answer(self, body):
        if latency: time.sleep(latency)
        path = os.path.join(root, self.path.lstrip("/").split("?")[0])
        if ".." in self.path or not os.path.isfile(path):
            self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers(); return
        total = os.path.getsize(path)
        start, end, status = 0, total, 200
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes="):
            first, _, last = wanted[6:].partition("-")
            start, end, status = int(first), min(int(last) + 1 if last else total, total), 206
        self.send_response(status)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{total:x}"')
        if status == 206: self.send_header("Content-Range", f"bytes {start}-{end - 1}/{total}")
        self.end_headers()
        if not body: return
        with open(path, "rb") as f:
            f.seek(start)
            sent, began = 0, time.monotonic()
            while sent < end - start:
                chunk = f.read(min(65536, end - start - sent))
                self.wfile.write(chunk)
                sent += len(chunk)
                if rate:
                    ahead = sent / rate - (time.monotonic() - began)
                    if ahead > 0: time.sleep(ahead)
http.server.ThreadingHTTPServer.request_queue_size = 1024
http.server.ThreadingHTTPServer.daemon_threads = True
http.server.ThreadingHTTPServer(("127.0.0.1", port), Link).serve_forever()
PY
  pids+=($!)
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$2/" && break; sleep 0.1; done
}

measure() { # LABEL COMMAND...
  local label=$1; shift
  local began ended
  began=$(date +%s.%N)
  # LIMIT (s): a run still going then is stopped and shown with its limit as a lower bound.
  timeout "${LIMIT:-1800}" "$@" > "$work/$label.log" 2>&1 || { echo "$label failed or stopped:"; tail -3 "$work/$label.log"; }
  ended=$(date +%s.%N)
  printf '%-22s wall %7.1f s\n' "$label" "$(echo "$ended - $began" | bc)"
  echo "$ended - $began" | bc > "$work/$label.wall"
}
ratio() { printf '%-22s %.2f x nix copy\n' "$1" "$(echo "$(cat "$work/$1.wall") / $(cat "$work/$2.wall")" | bc -l)"; }

links="plain"
[ "${FAR:-1}" = 1 ] && links="plain far"
if [ "${STATS_ONLY:-0}" != 1 ]; then
echo "building $n store paths with Nix"
seed=$(date +%s%N)
cat > "$work/closure.nix" <<EOF
let
  # Every 50th path 1-2 MB, the rest 1-40 KB (before base64).
  size = i: toString (if i - (i / 50) * 50 == 0 then 1000000 + i * 500
                      else 1000 + (i * 7919) - ((i * 7919) / 40000) * 40000);
  mk = i: dep: derivation {
    name = "bench-bin-\${toString i}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" ''
      { echo "$seed \${toString i} uses \${dep}"; /usr/bin/head -c \${size i} /dev/urandom | /usr/bin/base64; } > \$out
    '' ];
  };
  paths = builtins.genList (i: mk i (if i == 0 then "nothing" else builtins.elemAt paths (i / 2))) $n;
in paths
EOF
nix-build "$work/closure.nix" --no-out-link --max-jobs 4 > "$work/paths" 2> "$work/build.log"
nix-store --generate-binary-cache-key bench-upstream-1 "$work/key.sec" "$work/key.pub"
echo "nix copy into a signed xz upstream"
xargs nix --extra-experimental-features nix-command copy \
  --to "file://$work/upstream?secret-key=$work/key.sec" < "$work/paths"
du -sh "$work/upstream" | sed 's/^/upstream: /'
xz -k -c "$work/paths" > "$work/paths.xz"


for link in $links; do
  port=$(free_port)
  if [ "$link" = plain ]; then serve "$work/upstream" "$port" 0 0; else serve "$work/upstream" "$port" "$latency" "$rate"; fi
  url="http://127.0.0.1:$port"
  measure "nix-copy-$link" xargs nix --extra-experimental-features nix-command copy --no-check-sigs \
    --from "$url" --to "file://$work/nix-$link" < "$work/paths"
  measure "srcgrab-$link" "$srcgrab" fetch --store-paths "$work/paths.xz" --substituter "$url" \
    --cache "$work/srcgrab-$link"
  grep -E "store paths in the closure" "$work/srcgrab-$link.log" | sed 's/^/    /'
  ratio "srcgrab-$link" "nix-copy-$link"
  # As many connections to the one host as Nix opens (http-connections = 25).
  measure "srcgrab-25-$link" "$srcgrab" fetch --store-paths "$work/paths.xz" --substituter "$url" \
    --cache "$work/srcgrab-25-$link" --max-per-host 25
  ratio "srcgrab-25-$link" "nix-copy-$link"
  rm -rf "$work/nix-$link" "$work/srcgrab-$link" "$work/srcgrab-25-$link"
done
fi

echo "stats of $stats_paths outputs from narinfos"
python3 - "$work" "$stats_paths" <<'PY'
import hashlib, json, os, random, sys
work, count = sys.argv[1], int(sys.argv[2])
alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
rng = random.Random(13)
os.makedirs(f"{work}/sized")
derivations = []
for i in range(count):
    h = "".join(rng.choice(alphabet) for _ in range(32))
    path = f"/nix/store/{h}-out-{i}"
    size = rng.randrange(1000, 50_000_000)
    open(f"{work}/sized/{h}.narinfo", "w").write(
        f"StorePath: {path}\nURL: nar/{h}.nar.xz\nCompression: xz\nFileSize: {size // 3}\n"
        f"NarHash: sha256:{hashlib.sha256(h.encode()).hexdigest()}\nNarSize: {size}\nReferences: \n")
    d = "".join(rng.choice(alphabet) for _ in range(32))
    derivations.append({"drvPath": f"/nix/store/{d}-out-{i}.drv", "system": "x86_64-linux",
                        "outputs": {"out": path}, "inputs": [], "sources": []})
derivations.sort(key=lambda d: d["drvPath"])
json.dump({"version": 2, "provenance": {"systems": ["x86_64-linux"], "nixVersion": "bench",
           "config": {"allowUnfree": False, "allowBroken": False, "allowInsecure": False}, "attrs": []},
           "failures": [], "entries": [],
           "build": {"derivations": derivations, "attributes": [
               {"system": "x86_64-linux", "attr": "all", "drvPath": derivations[0]["drvPath"]}]}},
          open(f"{work}/sized.json", "w"))
PY
for link in $links; do
  port=$(free_port)
  if [ "$link" = plain ]; then link_latency=0 link_rate=1e12; else link_latency=$latency link_rate=$rate; fi
  python3 "$root/bench/farlink_server.py" "$work/sized" "$port" "$link_latency" "$link_rate" \
    --trace "$work/trace-$link" > "$work/server-$link.log" 2>&1 &
  server=$!
  pids+=("$server")
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  measure "stats-$link" "$srcgrab" stats "$work/sized.json" --substituter "http://127.0.0.1:$port" \
    ${STATS_ARGS:-}
  kill "$server"; wait "$server" 2>/dev/null || true
  grep -E "all systems +binaries" "$work/stats-$link.log" | sed 's/^/    /'
  sed 's/^/    server: /' "$work/server-$link.log"
  echo "    look-ups in flight (most in each second, from the first request): $(cut -d' ' -f2 "$work/trace-$link" | tr '\n' ' ')"
done
