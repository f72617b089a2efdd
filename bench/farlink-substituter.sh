#!/usr/bin/env bash
# The far-link substituter path and dead mirrors (issue 12), on loopback, in one run:
#
#   far      an upstream binary cache made by `nix copy` of SMALL small fixed outputs and
#            LARGE large ones, served with LATENCY s before each first byte and RATE bytes/s
#            per connection (HTTP/1.1): `srcgrab fetch --substituter` against
#            `nix copy --from URL --to file://DIR` (Nix's own substituter path)
#   thin     the same cache through a server capping ALL connections at THIN bytes/s:
#            link utilisation (bytes needed / (wall x THIN)) and bytes downloaded / needed
#   mirrors  the same files as flat downloads whose URL lists start with DEAD hosts that do
#            not resolve (`.invalid`), against the same run with only the live URL
#
#   SMALL=2000 LARGE=3 bench/farlink-substituter.sh      defaults: 2000, 3, 0.6 s, 2 MB/s, 1 MB/s, 7
#   SMALL=300 LARGE=2 THIN_SMALL=100 bench/farlink-substituter.sh     modest sizes
#   SRCGRAB=target/debug/srcgrab bench/farlink-substituter.sh         a binary already built
#   ROWS="mirrors" bench/farlink-substituter.sh                       some rows only (far far-h2 thin mirrors)
#   NIX_COPY=0 bench/farlink-substituter.sh                           the far row without `nix copy`
#   LIMIT=600 bench/farlink-substituter.sh                            stop any one run after 600 s
#   LOGS=DIR bench/farlink-substituter.sh                             keep the runs' logs, reports, traces
#
#   far-h2   the far link's cache over HTTP/2 with TLS (a CA made here, trusted through
#            NIX_SSL_CERT_FILE): bench/farlink_h2_server.py under hypercorn (`pip install
#            hypercorn`; HYPERCORN=path/to/hypercorn), LATENCY before each response's head,
#            RATE per TCP connection for all its streams together
#
# The far rows' servers trace the requests in flight each second (printed after the row).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
small=${SMALL:-2000}
large=${LARGE:-3}
latency=${LATENCY:-0.6}
rate=${RATE:-2000000}
thin=${THIN:-1000000}
thin_small=${THIN_SMALL:-$small}
dead=${DEAD:-7}
rows=" ${ROWS:-far far-h2 thin mirrors} "
work=$(mktemp -d /var/tmp/srcgrab-farsub.XXXXXX)
server_pid=
stop_server() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  server_pid=
}
cleanup() {
  stop_server
  if [ -n "${LOGS:-}" ]; then mkdir -p "$LOGS" && cp "$work"/*.log "$work"/*.json "$work"/trace-* "$LOGS"/ 2> /dev/null || true; fi
  if [ -s "$work/paths" ]; then xargs -r nix-store --delete < "$work/paths" > /dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT


srcgrab=${SRCGRAB:-}
if [ -z "$srcgrab" ]; then
  cargo build --release -q --bin srcgrab --manifest-path "$root/Cargo.toml"
  srcgrab="$root/target/release/srcgrab"
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

python3 - "$work" "$small" "$large" <<'PY'
import os, random, sys
work, small, large = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(12)
os.makedirs(f"{work}/files")
for i in range(small + large):
    size = 8_000_000 + rng.randrange(4_000_000) if i >= small else int(2 ** rng.uniform(10, 15))
    open(f"{work}/files/src-{i:05d}.tar.gz", "wb").write(os.urandom(size))
PY
ls "$work"/files/* | xargs nix-store --add-fixed sha256 > "$work/paths"
xargs nix --extra-experimental-features nix-command copy --to "file://$work/srv/cache" < "$work/paths" 2> /dev/null
mkdir -p "$work/srv/files" && cp "$work"/files/* "$work/srv/files/"
xargs nix-store --delete < "$work/paths" > /dev/null 2>&1
needed=$(du -cb "$work"/srv/cache/nar/* | tail -1 | cut -f1)
echo "$small small + $large large outputs; upstream NARs (compressed): $((needed / 1000000)) MB"

python3 - "$work" "$port" "$dead" "$thin_small" "$small" <<'PY'
import base64, hashlib, json, os, sys
work, port, dead, thin_small, small = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
paths = open(f"{work}/paths").read().split()
files = sorted(os.listdir(f"{work}/files"))
def manifest(chosen, dead_hosts):
    entries = []
    for path, name in chosen:
        data = open(f"{work}/files/{name}", "rb").read()
        urls = [f"http://mirror-{n}.invalid/files/{name}" for n in range(dead_hosts)]
        urls.append(f"http://127.0.0.1:{port}/files/{name}")
        entries.append({
            "storePath": path, "name": path.split("-", 1)[1],
            "hash": {"algo": "sha256", "mode": "flat",
                     "sri": "sha256-" + base64.b64encode(hashlib.sha256(data).digest()).decode()},
            "kind": "url", "urls": urls,
            "drvPaths": {"x86_64-linux": f"/nix/store/{'0' * 32}-{name}.drv"},
            "systems": ["x86_64-linux"], "attrs": [name], "attrCount": 1})
    entries.sort(key=lambda e: e["storePath"])
    return {"version": 1, "provenance": {"systems": ["x86_64-linux"], "nixVersion": "bench",
            "config": {"allowUnfree": False, "allowBroken": False, "allowInsecure": False}, "attrs": []},
            "failures": [], "entries": entries}
pairs = list(zip(paths, files))
thin = pairs[:thin_small] + pairs[small:]
json.dump(manifest(pairs, 0), open(f"{work}/live.json", "w"))
json.dump(manifest(pairs, dead), open(f"{work}/dead.json", "w"))
json.dump(manifest(thin, 0), open(f"{work}/thin.json", "w"))
open(f"{work}/thin-paths", "w").write("\n".join(p for p, _ in thin) + "\n")
PY

serve() { # LATENCY RATE [--total] [--trace FILE]
  python3 "$root/bench/farlink_server.py" "$work/srv" "$port" "$@" > "$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
}
declare -A walls
measure() { # LABEL COMMAND...
  local label=$1; shift
  local began ended
  began=$(date +%s.%N)
  # LIMIT (s): a run still going then is stopped; its wall time is then a lower bound.
  timeout "${LIMIT:-7200}" "$@" > "$work/$label.log" 2>&1 || { echo "$label failed or stopped:"; tail -5 "$work/$label.log"; }
  ended=$(date +%s.%N)
  walls[$label]=$(echo "$ended - $began" | bc)
  printf '%-18s wall %7.1f s\n' "$label" "${walls[$label]}"
}
ratio() { echo "${walls[$1]} / ${walls[$2]}" | bc -l; }
show_trace() { # FILE
  echo "    requests in flight (most in each second): $(cut -d' ' -f2 "$1" | tr '\n' ' ')"
  echo "    connections (each second):                $(cut -d' ' -f3 "$1" | tr '\n' ' ')"
}

if [[ $rows == *" far "* ]]; then
echo "== far link: ${latency} s first byte, $rate B/s per connection"
if [ "${NIX_COPY:-1}" = 1 ]; then
  serve "$latency" "$rate"
  measure nix-copy xargs nix --extra-experimental-features nix-command copy --no-check-sigs \
    --from "http://127.0.0.1:$port/cache" --to "file://$work/nixcopy" < "$work/paths"
  tail -1 "$work/server.log" 2>/dev/null || true
  stop_server
fi
serve "$latency" "$rate" --trace "$work/trace-far"
measure srcgrab-far "$srcgrab" fetch "$work/live.json" --cache "$work/c-far" \
  --substituter "http://127.0.0.1:$port/cache" --report "$work/far.json"
grep -E "entries|127\.0\.0" "$work/srcgrab-far.log" | sed 's/^/    /'
stop_server; sleep 0.2
show_trace "$work/trace-far"
if [ "${NIX_COPY:-1}" = 1 ]; then
  printf '  srcgrab / nix copy: %.2fx (goal <= 0.25x)\n' "$(ratio srcgrab-far nix-copy)"
fi
fi

if [[ $rows == *" far-h2 "* ]]; then
echo "== far link over HTTP/2 with TLS: ${latency} s before each head, $rate B/s per connection"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=bench far-link CA" \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2> /dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$work/server.key" \
  -out "$work/server.csr" 2> /dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > "$work/san"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
  -CAcreateserial -days 2 -extfile "$work/san" -out "$work/server.pem" 2> /dev/null
(cd "$root/bench" && FARLINK_ROOT="$work/srv" FARLINK_LATENCY="$latency" FARLINK_RATE="$rate" \
  FARLINK_TRACE="$work/trace-h2" exec "${HYPERCORN:-hypercorn}" --certfile "$work/server.pem" \
  --keyfile "$work/server.key" -b "127.0.0.1:$port" farlink_h2_server:app) > "$work/h2.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do curl -s -o /dev/null --cacert "$work/ca.pem" "https://127.0.0.1:$port/" && break; sleep 0.1; done
curl -s -o /dev/null --cacert "$work/ca.pem" -w '    server speaks HTTP/%{http_version}\n' --http2 "https://127.0.0.1:$port/"
NIX_SSL_CERT_FILE="$work/ca.pem" measure srcgrab-far-h2 "$srcgrab" fetch "$work/live.json" \
  --cache "$work/c-far-h2" --substituter "https://127.0.0.1:$port/cache" --report "$work/far-h2.json"
grep -E "entries|127\.0\.0" "$work/srcgrab-far-h2.log" | sed 's/^/    /'
stop_server; sleep 0.2
show_trace "$work/trace-h2"
fi

if [[ $rows == *" thin "* ]]; then
echo "== thin link: $thin B/s for all connections together, no added latency"
serve 0 "$thin" --total
measure srcgrab-thin "$srcgrab" fetch "$work/thin.json" --cache "$work/c-thin" \
  --substituter "http://127.0.0.1:$port/cache" --report "$work/thin-report.json"
stop_server
python3 - "$work" "$thin" "${walls[srcgrab-thin]}" <<'PY'
import json, os, sys
work, thin, wall = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
report = json.load(open(f"{work}/thin-report.json"))
downloaded = report["summary"]["bytesDownloaded"]
needed = 0
for line in open(f"{work}/thin-paths").read().split():
    narinfo = open(f"{work}/srv/cache/{line[11:43]}.narinfo").read()
    needed += int(next(l for l in narinfo.splitlines() if l.startswith("FileSize: "))[10:])
print(f"  needed {needed} B, downloaded {downloaded} B: wasted {100 * (downloaded / needed - 1):.2f} % (goal < 1 %)")
print(f"  utilisation {100 * needed / (wall * thin):.1f} % of the link over {wall:.1f} s (goal >= 95 %)")
PY

fi

if [[ $rows == *" mirrors "* ]]; then
echo "== mirror lists: $dead dead hosts before the live one, against only the live one"
serve 0 "$rate"
measure mirrors-live "$srcgrab" fetch "$work/live.json" --cache "$work/c-live" --no-substituters
measure mirrors-dead "$srcgrab" fetch "$work/dead.json" --cache "$work/c-dead" --no-substituters \
  --report "$work/dead-report.json"
stop_server
grep -E "entries" "$work/mirrors-live.log" "$work/mirrors-dead.log" | sed 's/^/    /'
printf '  dead hosts add %.1f %% (goal < 10 %%)\n' "$(echo "(${walls[mirrors-dead]} / ${walls[mirrors-live]} - 1) * 100" | bc -l)"
python3 - "$work/dead-report.json" <<'PY'
import json, sys
for host in json.load(open(sys.argv[1]))["hosts"]:
    down = host.get("down")
    when = f", down {down['sinceSeconds']:.1f} s into the run" if down else ""
    print(f"    {host['host']}: {host['requests']} requests{when}")
PY
fi
