#!/usr/bin/env bash
# The one-process floor of `srcgrab enumerate`, against srcgrab itself, on one package set:
# a single nix-instantiate that instantiates every attribute known to evaluate (taken from
# an `enumerate --outputs` manifest), with no per-attribute isolation and no closure read.
#
#   bench/enumerate-floor.sh SET [SYSTEM]     e.g. after bench/gen-pkgset.py /tmp/set5k --packages 5000
#
# SRCGRAB: the binary to time (default target/release/srcgrab). Prints /usr/bin/time lines.
set -euo pipefail
set_dir=$(cd "$1" && pwd)
system=${2:-x86_64-linux}
srcgrab=${SRCGRAB:-$(cd "$(dirname "$0")/.." && pwd)/target/release/srcgrab}
work=$(mktemp -d /tmp/srcgrab-floor.XXXXXX)
"$srcgrab" enumerate --nixpkgs "$set_dir" --system "$system" --outputs -o "$work/m.json" 2>/dev/null || true
python3 - "$work" "$set_dir" "$system" <<'PY'
import json, sys
work, set_dir, system = sys.argv[1:]
m = json.load(open(f"{work}/m.json"))
paths = [a["attr"].split(".") for a in m["build"]["attributes"] if a["system"] == system]
quoted = " ".join("[" + " ".join(json.dumps(n) for n in p) + "]" for p in paths)
open(f"{work}/floor.nix", "w").write(
    f'let pkgs = import {set_dir} {{ system = "{system}"; config = {{ }}; overlays = [ ]; }}; '
    f"get = p: builtins.foldl' (s: n: s.${{n}}) pkgs p; in map (p: (get p).drvPath) [ {quoted} ]")
print(f"{len(paths)} attributes", file=sys.stderr)
PY
for run in 1 2; do
    /usr/bin/time -f "floor (one nix-instantiate)     %e s wall, %U s user, %S s sys" \
        nix-instantiate --eval --strict --read-write-mode "$work/floor.nix" >/dev/null
    for jobs in 1 2; do
        /usr/bin/time -o "$work/time" -f "srcgrab enumerate --jobs $jobs       %e s wall, %U s user, %S s sys" \
            "$srcgrab" enumerate --nixpkgs "$set_dir" --system "$system" --jobs "$jobs" -o "$work/j$jobs.json" 2>/dev/null || true
        cat "$work/time" >&2
    done
done
rm -rf "$work"
