#!/usr/bin/env bash
# Benchmark of `srcgrab enumerate` on a large synthetic nixpkgs-shaped set (bench/gen-pkgset.py)
# against the one-process floor and a find-tarballs.nix-style evaluation (bench/find-tarballs.nix).
#
#   bench/enumerate.sh [PACKAGES]        default 20000; `bench/enumerate.sh small` = 2000
#
# Environment: SEED (1), FAIL_FRACTION (0.33: the share of attributes failing in the
# generator's nixpkgs-like mix), SRCGRAB (a built binary, or `none` for the baselines alone;
# default: cargo build --release -p srcgrab), WORKDIR (default: a new
# /tmp/srcgrab-bench.XXXXXX, kept for inspection: delete it after), BOTH_SYSTEMS=0 to skip
# the two-system run, JOBS1=0 to skip the --jobs 1 runs.
#
# Two sets of the same size and seed: `set`, where every attribute evaluates, and `mix`,
# where FAIL_FRACTION of them fail as a current nixpkgs fork's do (missing attributes and
# callPackage arguments, removed-package throws, meta.broken, asserts, aborts, a few type
# errors and infinite recursions, very few stack overflows). Runs, in this order, each under
# /usr/bin/time -v with the RSS of its whole process tree sampled every 0.2 s:
#   prewarm      nix-instantiate of every attribute of `set` (on a cold store it writes every
#                .drv; the table says whether the store was cold); the mix's healthy
#                attributes and both sets' aarch64 evaluation are pre-instantiated too,
#                untimed, so every run below finds its .drv files already in the store
#   (a)(b)       srcgrab enumerate --jobs 1 / --jobs 2 on `set`
#   (floor)      one nix-instantiate of every attribute known to evaluate (from the ground
#                truth), no isolation, then its .drv closure read (nix-store -qR, every file read)
#   (c)          find-tarballs on `set` (read-only evaluation: writes no .drv, reads none)
#   (d)(d')      srcgrab --jobs 1 / --jobs 2 on `mix`, and its floor
#   (e)          find-tarballs on `mix` (dies at the first uncatchable error)
#   (f)          srcgrab --jobs 2 --system x86_64-linux --system aarch64-linux on `mix`, and
#                its floor (both systems' healthy attributes in one nix-instantiate)
# "evaluators alive s" is how long srcgrab had evaluator processes (its attribute walk); the
# rest of its wall time is the .drv closure walk and the manifest. "evaluator peak" is the
# largest RSS any one nix process reached, against srcgrab's --max-memory (default 4G).
# Every FOD set is checked against the generator's ground truth (expected.json: store paths
# and kinds computed independently of Nix and of srcgrab), failures against its failing list.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
packages=${1:-${PACKAGES:-20000}}
[ "$packages" = small ] && packages=2000
seed=${SEED:-1}
fail_fraction=${FAIL_FRACTION:-0.33}
work=${WORKDIR:-$(mktemp -d /tmp/srcgrab-bench.XXXXXX)}
mkdir -p "$work"
log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

if [ ! -x /usr/bin/time ]; then
    log "installing GNU time"
    apt-get install -y time >/dev/null
fi

srcgrab=${SRCGRAB:-}
if [ "$srcgrab" = none ]; then
    srcgrab=
elif [ -z "$srcgrab" ]; then
    log "building srcgrab (release)"
    if (cd "$root" && cargo build --release -q -p srcgrab); then
        srcgrab=$root/target/release/srcgrab
    else
        log "srcgrab does not build: only the baselines run"
    fi
fi

# Samples the summed VmRSS of PID and all its descendants until PID exits; prints
# "<peak sum kB> <peak single process kB> <most processes at once> <s until the last
# grandchild (an evaluator under srcgrab under time) was seen> <s until PID exited>
# <peak of one nix process (an evaluator) kB>".
cat > "$work/tree-rss.py" <<'EOF'
import os, sys, time
root = int(sys.argv[1])
def tree():
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    todo, seen = [root], []
    while todo:
        pid = todo.pop()
        seen.append(pid)
        todo.extend(children.get(pid, []))
    return seen
def rss_and_name(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields.get("VmRSS", "0 kB").split()[0]), fields["Name"].strip()
    except (OSError, KeyError, ValueError):
        return 0, ""
peak_sum = peak_one = peak_procs = peak_nix = 0
start = last_grandchild = time.monotonic()
while os.path.exists(f"/proc/{root}"):
    sampled = [rss_and_name(p) for p in tree()]
    sizes = [size for size, _ in sampled]
    peak_sum, peak_one = max(peak_sum, sum(sizes)), max([peak_one] + sizes)
    peak_nix = max([peak_nix] + [size for size, name in sampled if name.startswith("nix")])
    peak_procs = max(peak_procs, sum(1 for s in sizes if s))
    if sum(1 for s in sizes if s) > 2:
        last_grandchild = time.monotonic()
    time.sleep(0.2)
print(peak_sum, peak_one, peak_procs, f"{last_grandchild - start:.1f}", f"{time.monotonic() - start:.1f}", peak_nix)
EOF

# measure NAME CMD...: runs CMD (stdout to NAME.out, stderr to NAME.err) timed and sampled,
# with the 1-minute load average before and after (others may share the machine).
measure() {
    local name=$1
    shift
    cut -d' ' -f1 /proc/loadavg >"$work/$name.load"
    log "run $name (load average $(cut -d' ' -f1-3 /proc/loadavg)): $*"
    /usr/bin/time -v -o "$work/$name.time" "$@" >"$work/$name.out" 2>"$work/$name.err" &
    local pid=$!
    python3 "$work/tree-rss.py" "$pid" >"$work/$name.rss" &
    local sampler=$!
    local rc=0
    wait "$pid" || rc=$?
    wait "$sampler"
    echo "$rc" >"$work/$name.rc"
    cut -d' ' -f1 /proc/loadavg >>"$work/$name.load"
    log "run $name: exit $rc, $(grep 'Elapsed' "$work/$name.time" | awk '{print $NF}')"
}

log "generating $packages packages (seed $seed) in $work"
python3 "$root/bench/gen-pkgset.py" "$work/set" --packages "$packages" --seed "$seed"
python3 "$root/bench/gen-pkgset.py" "$work/mix" --packages "$packages" --seed "$seed" --fail-fraction "$fail_fraction"

# healthy_list SET SYSTEM...: a Nix file listing every attribute of SET meant to evaluate,
# for each SYSTEM (from the ground truth; one nix-instantiate of it is the floor).
healthy_list() {
    python3 - "$@" <<'EOF'
import json, sys
set_dir, systems = sys.argv[1], sys.argv[2:]
expected = json.load(open(f"{set_dir}/expected.json"))
failing = {f["attr"] for f in expected["failing"]}
healthy = [a for a in expected["attrs"] if a not in failing]
print("[")
for system in systems:
    print(f'  (let pkgs = import {set_dir} {{ system = "{system}"; config = {{ }}; overlays = [ ]; }}; in [')
    print("\n".join(f"    pkgs.{a}" for a in healthy))
    print("  ])")
print("]")
EOF
}
# The floor: one evaluation of every healthy attribute, then every .drv of their closure read
# once, following each one's input derivations (as srcgrab's closure walk does; `nix-store
# --query --requisites` of the same roots costs as much CPU as the evaluation itself).
cat >"$work/floor.sh" <<'EOF'
set -euo pipefail
nix-instantiate "$1" >"$1.drvs"
python3 -c '
import re, sys
inputs = re.compile(rb"\(\"(/nix/store/[^\"]+\.drv)\",\[")
todo = [line.strip().encode() for line in open(sys.argv[1]) if line.strip()]
seen = set(todo)
while todo:
    with open(todo.pop(), "rb") as f:
        for path in inputs.findall(f.read()):
            if path not in seen:
                seen.add(path)
                todo.append(path)
print(len(seen), "derivations read", file=sys.stderr)
' "$1.drvs"
EOF
healthy_list "$work/set" x86_64-linux >"$work/set-healthy.nix"
healthy_list "$work/mix" x86_64-linux >"$work/mix-healthy.nix"
healthy_list "$work/mix" x86_64-linux aarch64-linux >"$work/mix-healthy-2sys.nix"

# Whether the store already holds this set's .drv files (same seed and size run before):
# --eval computes a drvPath without writing it.
probe_attr=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["attrs"][-1])' "$work/set/expected.json")
probe_drv=$(nix-instantiate --eval -E "(import $work/set { }).$probe_attr.drvPath" | tr -d '"')
if [ -e "$probe_drv" ]; then echo warm >"$work/prewarm.store"; else echo cold >"$work/prewarm.store"; fi
measure prewarm nix-instantiate "$work/set"
[ "$(cat "$work/prewarm.rc")" = 0 ] || { log "the set does not instantiate: see $work/prewarm.err"; exit 1; }
log "pre-instantiating the mix's healthy attributes and the aarch64 sets (untimed)"
nix-instantiate "$work/mix-healthy-2sys.nix" >/dev/null 2>"$work/prewarm-mix.err" ||
    { log "the mix's healthy attributes do not instantiate: see $work/prewarm-mix.err"; exit 1; }
nix-instantiate "$work/set" --argstr system aarch64-linux >/dev/null 2>"$work/prewarm-aarch64.err" ||
    { log "the aarch64 set does not instantiate: see $work/prewarm-aarch64.err"; exit 1; }

jobs1=${JOBS1:-1}
if [ -n "$srcgrab" ] && [ "$jobs1" = 1 ]; then
    measure srcgrab-j1 "$srcgrab" enumerate --nixpkgs "$work/set" --jobs 1 -o "$work/srcgrab-j1.json"
fi
if [ -n "$srcgrab" ]; then
    measure srcgrab-j2 "$srcgrab" enumerate --nixpkgs "$work/set" --jobs 2 -o "$work/srcgrab-j2.json"
fi
measure floor bash "$work/floor.sh" "$work/set-healthy.nix"
measure find-tarballs nix-instantiate --eval --strict --json "$root/bench/find-tarballs.nix" \
    --arg pkgs "import $work/set { }"
if [ -n "$srcgrab" ] && [ "$jobs1" = 1 ]; then
    measure srcgrab-mix-j1 "$srcgrab" enumerate --nixpkgs "$work/mix" --jobs 1 -o "$work/srcgrab-mix-j1.json"
fi
if [ -n "$srcgrab" ]; then
    measure srcgrab-mix-j2 "$srcgrab" enumerate --nixpkgs "$work/mix" --jobs 2 -o "$work/srcgrab-mix-j2.json"
fi
measure floor-mix bash "$work/floor.sh" "$work/mix-healthy.nix"
measure find-tarballs-mix nix-instantiate --eval --strict --json "$root/bench/find-tarballs.nix" \
    --arg pkgs "import $work/mix { }"
if [ "${BOTH_SYSTEMS:-1}" = 1 ]; then
    if [ -n "$srcgrab" ]; then
        measure srcgrab-mix-2sys-j2 "$srcgrab" enumerate --nixpkgs "$work/mix" --jobs 2 \
            --system x86_64-linux --system aarch64-linux -o "$work/srcgrab-mix-2sys-j2.json"
    fi
    measure floor-mix-2sys bash "$work/floor.sh" "$work/mix-healthy-2sys.nix"
fi

python3 "$root/bench/enumerate-report.py" "$work" "$packages" "$fail_fraction"
