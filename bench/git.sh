#!/usr/bin/env bash
# Benchmark of srcgrab's native git fetching and of its Nix builder fallback.
#
#   bench/git.sh [REVISIONS]          default 40 pinned revisions of one repository
#
# Environment: FILES (3000 files in the synthetic repository), COMMITS (400), JOBS (4, git
# checkouts at once), VENDOR (20 vendor-style FODs for the builder part), SRCGRAB (a built
# binary; default: cargo build --release -p srcgrab), WORKDIR (default: a new
# /tmp/srcgrab-git-bench.XXXXXX, kept for inspection).
#
# (a) git: a synthetic repository (FILES files, COMMITS commits, each touching a few files,
#     plus one 8 MiB blob) served by `git daemon` on 127.0.0.1; REVISIONS revisions spread
#     over its history become manifest entries (hashes from nix-hash of `git archive`).
#       shared   srcgrab fetch, cold mirror: one bare mirror, every revision fetched into it
#       warm     srcgrab fetch again into an empty cache, mirror kept (revisions already there)
#       unshared srcgrab fetch of each entry alone with its own new mirror (no sharing)
#       fresh    one fresh shallow clone per entry, as nixpkgs' fetchgit does in a Nix build
#                (the steps of tests/fixtures/git/fetchgit-builder.sh), then nix-hash of it
#     all with JOBS entries at once.
# (b) builder: VENDOR fixed-output derivations made by a shell script (about 1 MiB each);
#     both runs with NIX_CONFIG="substituters =" so neither waits on an unreachable cache
#       realise  nix-store --realise of all of them, then delete the outputs
#       srcgrab  srcgrab fetch --builder nix (realise, check, export into the cache, delete)
#     overhead per entry = (srcgrab - realise) / VENDOR.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
revisions=${1:-${REVISIONS:-40}}
files=${FILES:-3000}
commits=${COMMITS:-400}
jobs=${JOBS:-4}
vendor=${VENDOR:-20}
work=${WORKDIR:-$(mktemp -d /tmp/srcgrab-git-bench.XXXXXX)}
mkdir -p "$work"
echo "workdir: $work"

if [ -z "${SRCGRAB:-}" ]; then
    (cd "$root" && cargo build --release -q -p srcgrab)
    SRCGRAB=$root/target/release/srcgrab
fi

export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.invalid
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.invalid
export GIT_AUTHOR_DATE=2022-01-01T00:00:00Z GIT_COMMITTER_DATE=2022-01-01T00:00:00Z

seconds() { python3 -c 'import time; print(f"{time.monotonic():.3f}")'; }
elapsed() { python3 -c "print(f'{$2 - $1:.1f}')"; }
per_minute() { python3 -c "print(f'{$1 * 60 / ($3 - $2):.1f}')"; }

# --- the repository ------------------------------------------------------------------------
repo=$work/src
served=$work/srv
if [ ! -d "$served/big.git" ]; then
    echo "making a repository: $files files, $commits commits"
    rm -rf "$repo" "$served"
    mkdir -p "$repo" "$served"
    git -C "$repo" init -q -b main
    git -C "$repo" config gc.auto 0   # a background gc would race the clone below
    python3 - "$repo" "$files" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(1)
for i in range(n):
    d = os.path.join(root, f"dir{i % 60:02d}", f"sub{i % 7}")
    os.makedirs(d, exist_ok=True)
    words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", str(i)]) for _ in range(400))
    with open(os.path.join(d, f"file{i}.c"), "w") as f:
        f.write(f"/* file {i} */\n{words}\n")
with open(os.path.join(root, "blob.bin"), "wb") as f:
    f.write(rng.randbytes(8 << 20))
EOF
    git -C "$repo" add -A
    git -C "$repo" commit -q -m "initial"
    for c in $(seq 1 "$commits"); do
        for k in 1 2 3; do
            f=$(( (c * 37 + k * 101) % files ))
            echo "change $c $k" >> "$repo/dir$(printf %02d $((f % 60)))/sub$((f % 7))/file$f.c"
        done
        git -C "$repo" commit -q -am "change $c"
    done
    git clone -q --bare "$repo" "$served/big.git"
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$(git --exec-path)/git-daemon" --reuseaddr --export-all --listen=127.0.0.1 --port="$port" \
    --base-path="$served" "$served" 2> "$work/daemon.log" &
daemon=$!
trap 'kill $daemon 2>/dev/null || true' EXIT
until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.1; done
url=git://127.0.0.1:$port/big.git

# --- the manifest: REVISIONS pinned revisions -----------------------------------------------
git -C "$served/big.git" rev-list main | awk -v n="$revisions" -v total="$commits" \
    'NR % int((total + 1) / n) == 1' | head -n "$revisions" > "$work/revs"
echo "hashing $(wc -l < "$work/revs") revisions for the manifest"
: > "$work/entries.tsv"
while read -r rev; do
    tree=$work/tree-$rev
    rm -rf "$tree" && mkdir -p "$tree"
    git -C "$served/big.git" archive "$rev" | tar -x -C "$tree"
    hash=$(nix-hash --type sha256 --base32 "$tree")
    name=big-${rev:0:7}
    path=$(nix-store --print-fixed-path --recursive sha256 "$hash" "$name")
    printf '%s\t%s\t%s\t%s\n' "$rev" "$name" "$hash" "$path" >> "$work/entries.tsv"
    rm -rf "$tree"
done < "$work/revs"
python3 - "$work/entries.tsv" "$url" > "$work/git-manifest.json" <<'EOF'
import base64, json, sys
alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
def nix32_to_bytes(s):
    out = bytearray(32)
    for i, c in enumerate(reversed(s)):
        v = alphabet.index(c)
        for j in range(5):
            bit = i * 5 + j
            if v >> j & 1 and bit // 8 < 32:
                out[bit // 8] |= 1 << (bit % 8)
    return bytes(out)
entries = []
for line in open(sys.argv[1]):
    rev, name, h, path = line.rstrip("\n").split("\t")
    sri = "sha256-" + base64.b64encode(nix32_to_bytes(h)).decode()
    entries.append({
        "storePath": path, "name": name,
        "hash": {"algo": "sha256", "mode": "recursive", "sri": sri},
        "kind": "git",
        "git": {"url": sys.argv[2], "rev": rev, "fetchSubmodules": True, "leaveDotGit": False,
                "deepClone": False, "fetchLfs": False},
        "drvPaths": {"x86_64-linux": "/nix/store/00000000000000000000000000000000-unused.drv"},
        "systems": ["x86_64-linux"], "attrs": [name], "attrCount": 1,
    })
entries.sort(key=lambda e: e["storePath"])
print(json.dumps({"version": 1, "provenance": {"systems": ["x86_64-linux"], "nixVersion": "bench",
      "config": {"allowUnfree": False, "allowBroken": False, "allowInsecure": False}, "attrs": []},
      "failures": [], "entries": entries}, indent=1))
EOF
n=$(wc -l < "$work/entries.tsv")

# --- (a) shared mirror vs a clone per entry -------------------------------------------------
# Dirty pages of one phase must not be flushed on the next one's clock.
settle() { sync; sleep 1; }
rm -rf "$work/cache" "$work/mirrors"
settle
t0=$(seconds)
"$SRCGRAB" fetch "$work/git-manifest.json" --cache "$work/cache" --no-substituters \
    --git-jobs "$jobs" --git-cache "$work/mirrors" 2> "$work/shared.log"
t1=$(seconds)
mirror_size=$(du -sm "$work/mirrors" | cut -f1)
rm -rf "$work/cache"
settle
t2=$(seconds)
"$SRCGRAB" fetch "$work/git-manifest.json" --cache "$work/cache" --no-substituters \
    --git-jobs "$jobs" --git-cache "$work/mirrors" 2> "$work/warm.log"
t3=$(seconds)

# The same srcgrab, but every entry with its own new mirror (no sharing): same checkout and
# publishing work, each revision downloaded on its own.
python3 - "$work/git-manifest.json" "$work/single" <<'EOF2'
import json, os, sys
m = json.load(open(sys.argv[1]))
os.makedirs(sys.argv[2], exist_ok=True)
for i, e in enumerate(m["entries"]):
    json.dump(dict(m, entries=[e]), open(os.path.join(sys.argv[2], f"{i}.json"), "w"))
EOF2
unshared_one() {
    local manifest=$1 dir
    dir=$(mktemp -d "$work/unshared.XXXXXX")
    "$SRCGRAB" fetch "$manifest" --cache "$work/cache-unshared" --no-substituters \
        --git-cache "$dir/mirror" 2>> "$work/unshared.log"
    du -sk "$dir/mirror" | cut -f1 >> "$work/unshared.sizes"
    rm -rf "$dir"
}
fresh_one() {
    local rev=$1 expected=$2 out
    out=$(mktemp -d "$work/fresh.XXXXXX")/out
    env -u GIT_CONFIG_GLOBAL out="$out" url="$url" rev="$rev" fetchSubmodules=1 \
        bash "$root/tests/fixtures/git/fetchgit-builder.sh" 2>/dev/null
    [ "$(nix-hash --type sha256 --base32 "$out")" = "$expected" ] || { echo "fresh clone of $rev: wrong hash" >&2; exit 1; }
    rm -rf "$(dirname "$out")"
}
export -f fresh_one unshared_one
export url root work SRCGRAB
rm -rf "$work/cache-unshared" "$work/unshared.sizes"
settle
t4=$(seconds)
ls "$work"/single/*.json | xargs -P "$jobs" -n 1 bash -c 'unshared_one "$0"'
t5=$(seconds)
unshared_size=$(( $(paste -sd+ "$work/unshared.sizes" | bc) / 1024 ))
settle
t6=$(seconds)
cut -f1,3 "$work/entries.tsv" | xargs -P "$jobs" -L 1 bash -c 'fresh_one "$0" "$1"'
t7=$(seconds)

echo
echo "(a) $n git entries of one repository ($files files, $commits commits, 8 MiB blob), $jobs at once"
echo "    srcgrab, shared mirror, cold   : $(elapsed "$t0" "$t1") s = $(per_minute "$n" "$t0" "$t1") entries/min; git objects fetched: $mirror_size MiB"
echo "    srcgrab, shared mirror, warm   : $(elapsed "$t2" "$t3") s = $(per_minute "$n" "$t2" "$t3") entries/min"
echo "    srcgrab, own mirror per entry  : $(elapsed "$t4" "$t5") s = $(per_minute "$n" "$t4" "$t5") entries/min; git objects fetched: $unshared_size MiB"
echo "    fetchgit steps, clone per entry: $(elapsed "$t6" "$t7") s = $(per_minute "$n" "$t6" "$t7") entries/min (+ nix-hash, no cache writing)"
tail -n 2 "$work/shared.log" | sed 's/^/    /'

# --- (b) builder fallback overhead ------------------------------------------------------------
nixfile=$work/vendor.nix
cat > "$nixfile" <<EOF
{ salt }:
builtins.genList (i: derivation {
  name = "vendor-\${toString i}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "mkdir -p \$out/vendor; yes v | head -c 1048576 > \$out/vendor/blob; echo \${salt}-\${toString i} > \$out/id" ];
  PATH = "/usr/bin:/bin";
  outputHashMode = "recursive";
  outputHashAlgo = "sha256";
  outputHash = builtins.readFile (./hashes + "/\${toString i}");
}) $vendor
EOF
salt=$(date +%s%N)
mkdir -p "$work/hashes"
: > "$work/vendor.tsv"
for i in $(seq 0 $((vendor - 1))); do
    d=$(mktemp -d)
    mkdir -p "$d/out/vendor"
    { yes v || true; } | head -c 1048576 > "$d/out/vendor/blob"
    echo "$salt-$i" > "$d/out/id"
    h=$(nix-hash --type sha256 --base32 "$d/out")
    printf '%s' "$h" > "$work/hashes/$i"
    rm -rf "$d"
done
mapfile -t drvs < <(nix-instantiate "$nixfile" --argstr salt "$salt" 2>/dev/null)
outs=()
for i in $(seq 0 $((vendor - 1))); do
    outs+=("$(nix-store --print-fixed-path --recursive sha256 "$(cat "$work/hashes/$i")" "vendor-$i")")
    printf '%s\t%s\t%s\t%s\n' "${drvs[$i]}" "vendor-$i" "$(cat "$work/hashes/$i")" "${outs[$i]}" >> "$work/vendor.tsv"
done
python3 - "$work/vendor.tsv" > "$work/vendor-manifest.json" <<'EOF'
import base64, json, sys
alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
def nix32_to_bytes(s):
    out = bytearray(32)
    for i, c in enumerate(reversed(s)):
        v = alphabet.index(c)
        for j in range(5):
            bit = i * 5 + j
            if v >> j & 1 and bit // 8 < 32:
                out[bit // 8] |= 1 << (bit % 8)
    return bytes(out)
entries = []
for line in open(sys.argv[1]):
    drv, name, h, path = line.rstrip("\n").split("\t")
    sri = "sha256-" + base64.b64encode(nix32_to_bytes(h)).decode()
    entries.append({"storePath": path, "name": name,
        "hash": {"algo": "sha256", "mode": "recursive", "sri": sri}, "kind": "other",
        "drvPaths": {"x86_64-linux": drv}, "systems": ["x86_64-linux"], "attrs": [name], "attrCount": 1})
entries.sort(key=lambda e: e["storePath"])
print(json.dumps({"version": 1, "provenance": {"systems": ["x86_64-linux"], "nixVersion": "bench",
      "config": {"allowUnfree": False, "allowBroken": False, "allowInsecure": False}, "attrs": []},
      "failures": [], "entries": entries}, indent=1))
EOF
export NIX_CONFIG="substituters ="
b0=$(seconds)
nix-store --max-jobs 2 --realise "${drvs[@]}" > /dev/null 2>&1
b1=$(seconds)
nix-store --delete "${outs[@]}" > /dev/null 2>&1
rm -rf "$work/vendor-cache"
b2=$(seconds)
"$SRCGRAB" fetch "$work/vendor-manifest.json" --cache "$work/vendor-cache" --no-substituters \
    --builder nix --builder-jobs 2 2> "$work/builder.log"
b3=$(seconds)
for o in "${outs[@]}"; do
    ! nix-store --check-validity "$o" 2>/dev/null || { echo "$o left in the store" >&2; exit 1; }
done
echo
echo "(b) $vendor vendor FODs (1 MiB each), 2 at once"
echo "    nix-store --realise alone      : $(elapsed "$b0" "$b1") s"
echo "    srcgrab fetch --builder nix    : $(elapsed "$b2" "$b3") s (realise + check + export + delete)"
python3 -c "print(f'    overhead per entry             : {(($b3 - $b2) - ($b1 - $b0)) / $vendor * 1000:.0f} ms')"
tail -n 2 "$work/builder.log" | sed 's/^/    /'
