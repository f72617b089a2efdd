#!/usr/bin/env bash
# `srcgrab fetch` against Nix's own ways of filling a binary cache, all from one loopback
# HTTP server (python3 -m http.server) holding FILES generated files of mixed sizes:
#
#   srcgrab-url   srcgrab fetch --no-substituters (download, hash, NAR, zstd, mirror link)
#   nix-realise   nix-store --realise of builtin:fetchurl FODs, then nix copy --to file://
#                 (zstd, like srcgrab's default)
#   nix-copy      nix copy --from http://<srcgrab's cache> --to file:// (zstd)
#   srcgrab-sub   srcgrab fetch --substituter http://<srcgrab's cache> (NAR checks, recompress)
#   floor         one pass of sha256sum and zstd -3 -T1 over the same bytes (teed through a
#                 fifo, so both are waited for and counted), and the limit it sets when its
#                 CPU time is spread over every core
#
#   bench/fetch.sh [FILES] [TOTAL_MIB]      default 2000 files, 2048 MiB
#   SRCGRAB_ONLY=1 bench/fetch.sh ...       srcgrab-url, srcgrab-sub and floor (for iterating)
#   SRCGRAB=/path/to/srcgrab bench/fetch.sh  measure that binary (no build)
#
# Each line: wall seconds, user+system CPU seconds, peak RSS (GNU time). The files stay in
# the page cache (24 GiB machine), so this measures CPU and I/O paths, not a cold disk.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
files=${1:-2000}
total_mib=${2:-2048}
work=$(mktemp -d /var/tmp/srcgrab-fetch-bench.XXXXXX)
pids=()
outs_file="$work/outs"
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ -s "$outs_file" ]; then
    xargs -r nix-store --delete < "$outs_file" > /dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
[ -n "${KEEP:-}" ] && trap - EXIT

# SRCGRAB=path measures another build (e.g. before a change) instead of building this tree.
srcgrab=${SRCGRAB:-$root/target/release/srcgrab}
[ -n "${SRCGRAB:-}" ] || cargo build --release -q --bin srcgrab --manifest-path "$root/Cargo.toml"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# python3's http.server, with a listen backlog of 1024 instead of 5: with the default, a
# burst of concurrent connections gets SYNs dropped and 1 s retransmits dominate.
serve() { # DIR PORT
  python3 -c '
import functools, http.server, sys
http.server.ThreadingHTTPServer.request_queue_size = 1024
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), handler).serve_forever()
' "$1" "$2" > /dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$2/" && return; sleep 0.1; done
  echo "server on $2 did not start" >&2; exit 1
}

port=$(free_port)
echo "generating $files files, $total_mib MiB, in $work"
python3 - "$work" "$files" "$total_mib" "$port" <<'EOF'
import hashlib, os, random, sys
work, files, total_mib, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rng = random.Random(42)
# Log-uniform sizes from 4 KiB to 64 MiB, scaled to the total: many small files, a few big.
raw = [2 ** rng.uniform(12, 26) for _ in range(files)]
scale = total_mib * 2**20 / sum(raw)
os.makedirs(f"{work}/srv/f")
fods = ["{"]
for i, r in enumerate(raw):
    size = max(1, int(r * scale))
    name = f"src-{i:05d}.tar.gz"
    # Two thirds incompressible (like compressed tarballs), a third text.
    if i % 3:
        data = os.urandom(size)
    else:
        data = (hashlib.sha256(str(i).encode()).hexdigest() * (size // 64 + 1)).encode()[:size]
        data = bytes(b ^ (j % 7) for j, b in enumerate(data[:4096])) + data[4096:]
    with open(f"{work}/srv/f/{name}", "wb") as f:
        f.write(data)
    digest = hashlib.sha256(data).hexdigest()
    fods.append(f'  f{i:05d} = import <nix/fetchurl.nix> {{ url = "http://127.0.0.1:{port}/f/{name}"; sha256 = "{digest}"; }};')
fods.append("}")
open(f"{work}/fods.nix", "w").write("\n".join(fods) + "\n")
EOF
du -sh "$work/srv"

nix-instantiate "$work/fods.nix" 2> /dev/null > "$work/drvs"
xargs nix-store --query --outputs < "$work/drvs" > "$work/outs.all"
python3 - "$work" "$port" <<'EOF'
import base64, json, subprocess, sys
work, port = sys.argv[1], sys.argv[2]
drvs = open(f"{work}/drvs").read().split()
outs = open(f"{work}/outs.all").read().split()
shown = json.loads(subprocess.check_output(
    ["nix", "--extra-experimental-features", "nix-command", "show-derivation", *drvs]))
entries = []
for drv, out in zip(drvs, outs):
    env = shown[drv]["env"]
    name = out.split("-", 1)[1]
    sri = "sha256-" + base64.b64encode(bytes.fromhex(env["outputHash"])).decode()
    entries.append({
        "storePath": out, "name": name,
        "hash": {"algo": "sha256", "mode": "flat", "sri": sri},
        "kind": "url", "urls": [env["url"]], "drvPaths": {"x86_64-linux": drv},
        "systems": ["x86_64-linux"], "attrs": [name], "attrCount": 1,
    })
entries.sort(key=lambda e: e["storePath"])
manifest = {"version": 1, "provenance": {"systems": ["x86_64-linux"], "nixVersion": "bench",
            "config": {"allowUnfree": False, "allowBroken": False, "allowInsecure": False}, "attrs": []},
            "failures": [], "entries": entries}
json.dump(manifest, open(f"{work}/manifest.json", "w"), indent=1)
EOF

serve "$work/srv" "$port"
measure() { # LABEL COMMAND...
  local label=$1; shift
  /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$@" > "$work/$label.log" 2>&1 \
    || { echo "$label failed:"; tail -5 "$work/$label.log"; }
  read -r wall user sys rss < <(tail -1 "$work/time")
  printf '%-12s wall %7.1f s  cpu %7.1f s (user %5.1f, sys %5.1f)  peak RSS %6d MiB\n' "$label" \
    "$wall" "$(echo "$user + $sys" | bc)" "$user" "$sys" $((rss / 1024))
}

measure srcgrab-url "$srcgrab" fetch "$work/manifest.json" --cache "$work/c-srcgrab" --no-substituters
tail -2 "$work/srcgrab-url.log"

floor() {
  measure floor bash -c "mkfifo '$work/fifo' && { zstd -q -3 -T1 -c < '$work/fifo' > /dev/null & } \
    && cat '$work'/srv/f/* | tee '$work/fifo' | sha256sum > /dev/null && wait"
  read -r _ user sys _ < <(tail -1 "$work/time")
  printf '%-12s wall %7.1f s  (floor CPU spread over %d cores)\n' limit \
    "$(echo "($user + $sys) / $(nproc)" | bc -l)" "$(nproc)"
}

cache_port=$(free_port)
serve "$work/c-srcgrab" "$cache_port"
measure srcgrab-sub "$srcgrab" fetch "$work/manifest.json" --cache "$work/c-sub" \
  --substituter "http://127.0.0.1:$cache_port"
tail -2 "$work/srcgrab-sub.log"
if [ -n "${SRCGRAB_ONLY:-}" ]; then floor; exit 0; fi

cp "$work/outs.all" "$outs_file"
# As many builds as there are build users: beyond that Nix 2.8 polls for a free one every 5 s.
build_users=$(getent group nixbld | awk -F: '{print split($4, users, ",")}')
measure nix-realise bash -c "xargs nix-store --realise --max-jobs $build_users --option substituters '' < '$work/drvs' > /dev/null \
  && xargs nix --extra-experimental-features nix-command copy --to 'file://$work/c-nix?compression=zstd' < '$outs_file'"
xargs -r nix-store --delete < "$outs_file" > /dev/null 2>&1 || true

measure nix-copy bash -c "xargs nix --extra-experimental-features nix-command copy --no-check-sigs \
  --from 'http://127.0.0.1:$cache_port' --to 'file://$work/c-copy?compression=zstd' < '$outs_file'"

floor
