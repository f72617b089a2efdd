#!/usr/bin/env bash
# Benchmark of `srcgrab enumerate` on a large synthetic nixpkgs-shaped set (bench/gen-pkgset.py)
# against a find-tarballs.nix-style evaluation (bench/find-tarballs.nix).
#
#   bench/enumerate.sh [PACKAGES]        default 20000; `bench/enumerate.sh small` = 2000
#
# Environment: SEED (1), CRASH_FRACTION (0.33), SRCGRAB (a built binary, or `none` for the
# baseline alone; default: cargo build --release -p srcgrab), WORKDIR (default: a new
# /tmp/srcgrab-bench.XXXXXX, kept for inspection), BOTH_SYSTEMS=0 to skip the aarch64 run.
# The 20000-package run takes about 10 minutes on 2 cores, most of it in (d).
#
# Runs, in this order, each under /usr/bin/time -v with the RSS of its whole process tree
# sampled every 0.2 s (time -v reports only the largest single process of the tree):
#   prewarm   nix-instantiate of every attribute of the set (on a cold store it writes every
#             .drv; the table says whether the store was cold); the
#             crash sets' healthy attributes and the aarch64 evaluation are pre-instantiated
#             too, untimed, so every srcgrab run below finds its .drv files already in the store
#   (a)(b)    srcgrab enumerate --jobs 1 / --jobs 2
#   (c)       find-tarballs baseline: nix-instantiate --eval --strict --json (read-only mode:
#             it never writes a .drv)
#   (d)       srcgrab enumerate --jobs 2 on the crash variant (--crash-fraction)
#   (d')      the same on a crash variant without stack overflows (which end an evaluator)
#   (e)       find-tarballs on the crash variant (expected to die at the first uncatchable error)
#   (f)       srcgrab enumerate --jobs 2 --system x86_64-linux --system aarch64-linux
# "evaluators alive s" is how long srcgrab had evaluator processes (its attribute walk); the
# rest of its wall time is the .drv closure walk and the manifest.
# Every FOD set is checked against the generator's ground truth (expected.json, store paths
# computed independently of Nix), and srcgrab's against find-tarballs'.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
packages=${1:-${PACKAGES:-20000}}
[ "$packages" = small ] && packages=2000
seed=${SEED:-1}
crash_fraction=${CRASH_FRACTION:-0.33}
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
        log "srcgrab does not build: only the baseline runs"
    fi
fi

# Samples the summed VmRSS of PID and all its descendants until PID exits; prints
# "<peak sum kB> <peak single process kB> <most processes at once> <s until the last
# grandchild (an evaluator under srcgrab under time) was seen> <s until PID exited>".
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
def rss(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
peak_sum = peak_one = peak_procs = 0
start = last_grandchild = time.monotonic()
while os.path.exists(f"/proc/{root}"):
    pids = tree()
    sizes = [rss(p) for p in pids]
    peak_sum, peak_one = max(peak_sum, sum(sizes)), max([peak_one] + sizes)
    peak_procs = max(peak_procs, sum(1 for s in sizes if s))
    if sum(1 for s in sizes if s) > 2:
        last_grandchild = time.monotonic()
    time.sleep(0.2)
print(peak_sum, peak_one, peak_procs, f"{last_grandchild - start:.1f}", f"{time.monotonic() - start:.1f}")
EOF

# measure NAME CMD...: runs CMD (stdout to NAME.out, stderr to NAME.err) timed and sampled.
measure() {
    local name=$1
    shift
    log "run $name (load average $(cut -d' ' -f1-3 /proc/loadavg)): $*"
    /usr/bin/time -v -o "$work/$name.time" "$@" >"$work/$name.out" 2>"$work/$name.err" &
    local pid=$!
    python3 "$work/tree-rss.py" "$pid" >"$work/$name.rss" &
    local sampler=$!
    local rc=0
    wait "$pid" || rc=$?
    wait "$sampler"
    echo "$rc" >"$work/$name.rc"
    log "run $name: exit $rc, $(grep 'Elapsed' "$work/$name.time" | awk '{print $NF}')"
}

log "generating $packages packages (seed $seed) in $work"
python3 "$root/bench/gen-pkgset.py" "$work/set" --packages "$packages" --seed "$seed"
python3 "$root/bench/gen-pkgset.py" "$work/crash" --packages "$packages" --seed "$seed" --crash-fraction "$crash_fraction"
# The same without stack overflows, the one failure that ends a `nix repl` evaluator.
python3 "$root/bench/gen-pkgset.py" "$work/crash-nso" --packages "$packages" --seed "$seed" \
    --crash-fraction "$crash_fraction" --crash-kinds abort,missing-attribute,infinite-recursion,missing-argument,type-error

# Whether the store already holds this set's .drv files (same seed and size run before):
# --eval computes a drvPath without writing it.
probe_attr=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["attrs"][-1])' "$work/set/expected.json")
probe_drv=$(nix-instantiate --eval -E "(import $work/set { }).$probe_attr.drvPath" | tr -d '"')
if [ -e "$probe_drv" ]; then echo warm >"$work/prewarm.store"; else echo cold >"$work/prewarm.store"; fi
measure prewarm nix-instantiate "$work/set"
[ "$(cat "$work/prewarm.rc")" = 0 ] || { log "the set does not instantiate: see $work/prewarm.err"; exit 1; }
# prewarm_healthy SET: instantiates every attribute of SET that is meant to evaluate (one
# nix-instantiate over a list of them, since the failing ones would stop it), untimed.
prewarm_healthy() {
    python3 - "$1" >"$1-healthy.nix" <<'EOF'
import json, sys
expected = json.load(open(f"{sys.argv[1]}/expected.json"))
failing = {f["attr"] for f in expected["failing"]}
print(f"let pkgs = import {sys.argv[1]} {{ }}; in [")
print("\n".join(f"  pkgs.{a}" for a in expected["attrs"] if a not in failing))
print("]")
EOF
    nix-instantiate "$1-healthy.nix" >/dev/null 2>"$1-prewarm.err" ||
        { log "the healthy attributes of $1 do not instantiate: see $1-prewarm.err"; exit 1; }
}
log "pre-instantiating the crash sets' healthy attributes and the aarch64 set (untimed)"
prewarm_healthy "$work/crash"
prewarm_healthy "$work/crash-nso"
if [ "${BOTH_SYSTEMS:-1}" = 1 ]; then
    nix-instantiate "$work/set" --argstr system aarch64-linux >/dev/null 2>"$work/prewarm-aarch64.err" ||
        { log "the aarch64 set does not instantiate: see $work/prewarm-aarch64.err"; exit 1; }
fi

if [ -n "$srcgrab" ]; then
    measure srcgrab-j1 "$srcgrab" enumerate --nixpkgs "$work/set" --jobs 1 -o "$work/srcgrab-j1.json"
    measure srcgrab-j2 "$srcgrab" enumerate --nixpkgs "$work/set" --jobs 2 -o "$work/srcgrab-j2.json"
fi
measure find-tarballs nix-instantiate --eval --strict --json "$root/bench/find-tarballs.nix" \
    --arg pkgs "import $work/set { }"
if [ -n "$srcgrab" ]; then
    measure srcgrab-crash-j2 "$srcgrab" enumerate --nixpkgs "$work/crash" --jobs 2 -o "$work/srcgrab-crash-j2.json"
    measure srcgrab-crash-nso-j2 "$srcgrab" enumerate --nixpkgs "$work/crash-nso" --jobs 2 \
        -o "$work/srcgrab-crash-nso-j2.json"
fi
measure find-tarballs-crash nix-instantiate --eval --strict --json "$root/bench/find-tarballs.nix" \
    --arg pkgs "import $work/crash { }"
if [ -n "$srcgrab" ] && [ "${BOTH_SYSTEMS:-1}" = 1 ]; then
    measure srcgrab-2sys-j2 "$srcgrab" enumerate --nixpkgs "$work/set" --jobs 2 \
        --system x86_64-linux --system aarch64-linux -o "$work/srcgrab-2sys-j2.json"
fi

python3 - "$work" "$packages" "$crash_fraction" <<'EOF'
import collections, json, os, sys

work, packages, crash_fraction = sys.argv[1], sys.argv[2], sys.argv[3]
X86, ARM = "x86_64-linux", "aarch64-linux"

def load(name):
    """The JSON a run wrote, or None when it wrote none (or died half-way through)."""
    try:
        return json.load(open(os.path.join(work, name)))
    except (OSError, ValueError):
        return None

def timing(name):
    fields = {}
    for line in open(os.path.join(work, f"{name}.time")):
        key, _, value = line.strip().rpartition(": ")
        fields[key] = value
    wall = fields["Elapsed (wall clock) time (h:mm:ss or m:ss)"].split(":")
    seconds = sum(float(part) * 60 ** i for i, part in enumerate(reversed(wall)))
    cpu = float(fields["User time (seconds)"]) + float(fields["System time (seconds)"])
    largest = int(fields["Maximum resident set size (kbytes)"])
    tree_sum, _, procs, evaluators_until, _ = open(os.path.join(work, f"{name}.rss")).read().split()
    rc = int(open(os.path.join(work, f"{name}.rc")).read())
    # Evaluator processes are alive during srcgrab's walk; what follows is the .drv closure.
    walk = f"{float(evaluators_until):.1f}" if int(procs) > 2 else "-"
    return seconds, cpu, largest, int(tree_sum), int(procs), walk, rc

def mib(kb):
    return f"{kb / 1024:.0f}"

expected = {name: load(f"{name}/expected.json") for name in ("set", "crash", "crash-nso")}
def expected_paths(which, systems):
    return {e["storePath"] for s in systems for e in expected[which]["fods"][s]}
def categories(which, paths):
    cat = {e["storePath"]: e["category"] for s in (X86, ARM) for e in expected[which]["fods"][s]}
    counts = collections.Counter(cat.get(p, "unknown") for p in paths)
    return ", ".join(f"{k} {v}" for k, v in counts.most_common()) or "none"

def srcgrab_result(name, which, systems):
    manifest = load(f"{name}.json")
    if manifest is None:
        return None
    found = {e["storePath"] for e in manifest["entries"] if set(e["systems"]) & set(systems)}
    failed = {f["attr"] for f in manifest["failures"]}
    return found, failed, manifest

rows, notes = [], []
def row(label, name, which, systems, found, failed):
    if not os.path.exists(os.path.join(work, f"{name}.time")):
        return
    seconds, cpu, largest, tree_sum, procs, walk, rc = timing(name)
    truth = expected_paths(which, systems)
    expected_failing = {f["attr"] for f in expected[which]["failing"]}
    if found is None:
        fods = missing = extra = "-"
    else:
        fods, missing, extra = len(found), len(truth - found), len(found - truth)
    fails = "-" if failed is None else f"{len(failed)} / {len(expected_failing)}"
    rows.append(f"| {label} | {seconds:.1f} | {walk} | {cpu:.1f} | {mib(largest)} | {mib(tree_sum)} ({procs}) "
                f"| {fods} | {len(truth)} | {missing} | {extra} | {fails} | {rc} |")

store_state = open(os.path.join(work, "prewarm.store")).read().strip()
row(f"nix-instantiate, every attribute ({store_state} store: "
    f"{'writes every .drv' if store_state == 'cold' else 'the .drv files were there'})", "prewarm", "set", [X86], None, None)
for name, label, which, systems in (
    ("srcgrab-j1", "(a) srcgrab enumerate --jobs 1", "set", [X86]),
    ("srcgrab-j2", "(b) srcgrab enumerate --jobs 2", "set", [X86]),
    ("srcgrab-crash-j2", f"(d) srcgrab --jobs 2, {crash_fraction} crashing", "crash", [X86]),
    ("srcgrab-crash-nso-j2", f"(d') the same, no stack overflows among the crashes", "crash-nso", [X86]),
    ("srcgrab-2sys-j2", "(f) srcgrab --jobs 2, x86_64 + aarch64", "set", [X86, ARM]),
):
    result = srcgrab_result(name, which, systems)
    if result is None:
        row(label, name, which, systems, None, None)
        continue
    found, failed, _ = result
    row(label, name, which, systems, found, failed)
    truth = expected_paths(which, systems)
    if truth - found:
        notes.append(f"- {label} misses {len(truth - found)} expected FODs: {categories(which, truth - found)}")
    if found - truth:
        notes.append(f"- {label} reports {len(found - truth)} FODs not in the ground truth, e.g. {sorted(found - truth)[:3]}")
    exp_fail = {f["attr"] for f in expected[which]["failing"]}
    if failed != exp_fail:
        notes.append(f"- {label}: failures differ from the expected ones: {len(failed - exp_fail)} unexpected "
                     f"(e.g. {sorted(failed - exp_fail)[:3]}), {len(exp_fail - failed)} not reported "
                     f"(e.g. {sorted(exp_fail - failed)[:3]})")

baseline = load("find-tarballs.out")
if baseline is not None:
    relaxed = {f["path"] for f in baseline["fods"]}
    strict = {f["path"] for f in baseline["fods"] if f["mode"] == "flat" and not f["postFetch"]}
    row("(c) find-tarballs, upstream filter (flat, no postFetch)", "find-tarballs", "set", [X86], strict, None)
    row("(c') same evaluation, any FOD with url/urls", "find-tarballs", "set", [X86], relaxed, None)
    truth = expected_paths("set", [X86])
    notes.append(f"- find-tarballs (upstream filter) misses {len(truth - strict)} of {len(truth)} x86_64 FODs: "
                 f"{categories('set', truth - strict)}")
    notes.append(f"- find-tarballs (any url/urls) misses {len(truth - relaxed)}: {categories('set', truth - relaxed)}; "
                 f"it saw {baseline['noUrl']} FODs without a URL and cannot fetch them")
    for name in ("srcgrab-j1", "srcgrab-j2"):
        result = srcgrab_result(name, "set", [X86])
        if result:
            lost = relaxed - result[0]
            notes.append(f"- {name} ⊇ find-tarballs: {'yes' if not lost else f'NO, {len(lost)} missing: {sorted(lost)[:5]}'}"
                         f"; srcgrab finds {len(result[0] - strict)} FODs find-tarballs (upstream filter) does not: "
                         f"{categories('set', result[0] - strict)}")
if os.path.exists(os.path.join(work, "find-tarballs-crash.time")):
    row(f"(e) find-tarballs, {crash_fraction} crashing", "find-tarballs-crash", "crash", [X86],
        None if load("find-tarballs-crash.out") is None else {f["path"] for f in load("find-tarballs-crash.out")["fods"]}, None)
    err = [l for l in open(os.path.join(work, "find-tarballs-crash.err")) if l.startswith("error")]
    notes.append(f"- (e) find-tarballs on the crash set: {err[0].strip() if err else 'no error'}")

print(f"\n### srcgrab enumerate vs find-tarballs: {packages} packages, seed from the command, work dir {work}\n")
print("| run | wall s | evaluators alive s | CPU s | peak RSS, largest process (MiB) | peak RSS, process tree sum (MiB) (procs) "
      "| FODs found | expected | missing | extra | failed attrs found / expected | exit |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
print("\n".join(rows))
print()
print("\n".join(notes))
EOF
