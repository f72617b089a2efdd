#!/usr/bin/env python3
"""The table of bench/enumerate.sh: every run's time, CPU and memory, and its FOD set,
kinds and failures checked against the generator's ground truth (expected.json).

Usage: enumerate-report.py WORK_DIR PACKAGES FAIL_FRACTION   (WORK_DIR as enumerate.sh left it)
"""

import collections
import json
import os
import sys

X86, ARM = "x86_64-linux", "aarch64-linux"


class Report:
    def __init__(self, work, packages, fail_fraction):
        self.work, self.packages, self.fail_fraction = work, packages, fail_fraction
        self.expected = {name: self.load(f"{name}/expected.json") for name in ("set", "mix")}
        self.rows, self.notes, self.figures = [], [], {}

    def load(self, name):
        """The JSON a run wrote, or None when it wrote none (or died half-way through)."""
        try:
            with open(os.path.join(self.work, name)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def read(self, name):
        with open(os.path.join(self.work, name)) as f:
            return f.read()

    def ran(self, name):
        """Whether the run NAME has finished (its exit status is written last)."""
        return os.path.exists(os.path.join(self.work, f"{name}.rc"))

    def timing(self, name):
        fields = {}
        for line in self.read(f"{name}.time").splitlines():
            key, _, value = line.strip().rpartition(": ")
            fields[key] = value
        wall = fields["Elapsed (wall clock) time (h:mm:ss or m:ss)"].split(":")
        seconds = sum(float(part) * 60 ** i for i, part in enumerate(reversed(wall)))
        cpu = float(fields["User time (seconds)"]) + float(fields["System time (seconds)"])
        tree_sum, largest, procs, evaluators_until, _, nix_peak = self.read(f"{name}.rss").split()
        load_before, load_after = self.read(f"{name}.load").split()
        # Evaluator processes are alive during srcgrab's walk; what follows is the closure walk.
        walk = f"{float(evaluators_until):.1f}" if int(procs) > 2 and name.startswith("srcgrab") else "-"
        return dict(wall=seconds, cpu=cpu, largest=int(largest), nix_peak=int(nix_peak),
                    tree_sum=int(tree_sum), procs=int(procs), walk=walk,
                    rc=int(self.read(f"{name}.rc")), load=f"{load_before} → {load_after}")

    def truth(self, which, systems):
        return {e["storePath"]: e for s in systems for e in self.expected[which]["fods"][s]}

    def categories(self, which, paths):
        category = {p: e["category"] for p, e in self.truth(which, (X86, ARM)).items()}
        counts = collections.Counter(category.get(p, "unknown") for p in paths)
        return ", ".join(f"{k} {v}" for k, v in counts.most_common()) or "none"

    def row(self, label, name, which, systems, found=None, failed=None, kinds=None):
        if not self.ran(name):
            return
        t = self.timing(name)
        self.figures[name] = t
        expected = self.truth(which, systems)
        expected_failing = {f["attr"] for f in self.expected[which]["failing"]}
        if found is None:
            fods = missing = extra = "-"
        else:
            fods, missing, extra = len(found), len(set(expected) - found), len(found - set(expected))
        wrong_kinds = "-" if kinds is None else sum(
            1 for p, k in kinds.items() if p in expected and expected[p]["kind"] != k)
        fails = "-" if failed is None else f"{len(failed)} / {len(expected_failing)}"
        attrs = self.packages * len(systems)
        self.rows.append(
            f"| {label} | {t['wall']:.1f} | {t['walk']} | {t['cpu']:.1f} | {1000 * t['cpu'] / attrs:.2f} "
            f"| {mib(t['nix_peak'])} | {mib(t['largest'])} | {mib(t['tree_sum'])} ({t['procs']}) "
            f"| {fods} | {len(expected)} | {missing} | {extra} | {wrong_kinds} | {fails} | {t['rc']} | {t['load']} |")

    def srcgrab_row(self, label, name, which, systems):
        manifest = self.load(f"{name}.json")
        if manifest is None:
            self.row(label, name, which, systems)
            return
        entries = [e for e in manifest["entries"] if set(e["systems"]) & set(systems)]
        found = {e["storePath"] for e in entries}
        kinds = {e["storePath"]: e["kind"] for e in entries}
        failed = {f["attr"] for f in manifest["failures"]}
        self.row(label, name, which, systems, found, failed, kinds)
        expected = self.truth(which, systems)
        if set(expected) - found:
            lost = set(expected) - found
            self.notes.append(f"- {label} misses {len(lost)} expected FODs: {self.categories(which, lost)}")
        if found - set(expected):
            self.notes.append(f"- {label} reports {len(found - set(expected))} FODs not in the ground truth, "
                              f"e.g. {sorted(found - set(expected))[:3]}")
        wrong = collections.Counter((expected[p]["kind"], k) for p, k in kinds.items()
                                    if p in expected and expected[p]["kind"] != k)
        if wrong:
            self.notes.append(f"- {label}: kinds differing from the ground truth (expected, found): {dict(wrong)}")
        expected_failing = {f["attr"] for f in self.expected[which]["failing"]}
        if failed != expected_failing:
            self.notes.append(
                f"- {label}: failures differ from the expected ones: {len(failed - expected_failing)} unexpected "
                f"(e.g. {sorted(failed - expected_failing)[:3]}), {len(expected_failing - failed)} not reported "
                f"(e.g. {sorted(expected_failing - failed)[:3]})")

    def find_tarballs_rows(self):
        baseline = self.load("find-tarballs.out")
        if baseline is not None:
            relaxed = {f["path"] for f in baseline["fods"]}
            strict = {f["path"] for f in baseline["fods"] if f["mode"] == "flat" and not f["postFetch"]}
            self.row("(c) find-tarballs, upstream filter (flat, no postFetch)", "find-tarballs", "set", [X86], strict)
            self.row("(c') same evaluation, any FOD with url/urls", "find-tarballs", "set", [X86], relaxed)
            x86 = set(self.truth("set", [X86]))
            self.notes.append(f"- find-tarballs (upstream filter) misses {len(x86 - strict)} of {len(x86)} x86_64 "
                              f"FODs: {self.categories('set', x86 - strict)}")
            self.notes.append(f"- find-tarballs (any url/urls) misses {len(x86 - relaxed)}: "
                              f"{self.categories('set', x86 - relaxed)}; it saw {baseline['noUrl']} FODs without "
                              f"a URL and cannot fetch them")

    def find_tarballs_mix_row(self):
        if not self.ran("find-tarballs-mix"):
            return
        out = self.load("find-tarballs-mix.out")
        self.row(f"(e) find-tarballs, {self.fail_fraction} failing", "find-tarballs-mix", "mix", [X86],
                 None if out is None else {f["path"] for f in out["fods"]})
        errors = [line for line in self.read("find-tarballs-mix.err").splitlines() if line.startswith("error")]
        self.notes.append(f"- (e) find-tarballs on the failing set: {errors[0].strip() if errors else 'no error'}")

    def print(self):
        store_state = self.read("prewarm.store").strip()
        self.row(f"nix-instantiate, every attribute ({store_state} store: "
                 f"{'writes every .drv' if store_state == 'cold' else 'the .drv files were there'})",
                 "prewarm", "set", [X86])
        self.srcgrab_row("(a) srcgrab --jobs 1", "srcgrab-j1", "set", [X86])
        self.srcgrab_row("(b) srcgrab --jobs 2", "srcgrab-j2", "set", [X86])
        self.row("(floor) one nix-instantiate of every attribute + closure read", "floor", "set", [X86])
        self.find_tarballs_rows()
        self.srcgrab_row(f"(d) srcgrab --jobs 1, {self.fail_fraction} failing", "srcgrab-mix-j1", "mix", [X86])
        self.srcgrab_row(f"(d') srcgrab --jobs 2, {self.fail_fraction} failing", "srcgrab-mix-j2", "mix", [X86])
        self.row("(floor) the same, healthy attributes", "floor-mix", "mix", [X86])
        self.find_tarballs_mix_row()
        self.srcgrab_row(f"(f) srcgrab --jobs 2, x86_64 + aarch64, {self.fail_fraction} failing",
                         "srcgrab-mix-2sys-j2", "mix", [X86, ARM])
        self.row("(floor) the same, both systems' healthy attributes", "floor-mix-2sys", "mix", [X86, ARM])

        for run, floor in (("srcgrab-j1", "floor"), ("srcgrab-j2", "floor"), ("srcgrab-mix-j1", "floor-mix"),
                           ("srcgrab-mix-j2", "floor-mix"), ("srcgrab-mix-2sys-j2", "floor-mix-2sys")):
            if run in self.figures and floor in self.figures:
                r, f = self.figures[run], self.figures[floor]
                self.notes.append(f"- {run} / {floor}: {r['cpu'] / f['cpu']:.2f}x CPU, {r['wall'] / f['wall']:.2f}x wall")
        kinds = collections.Counter(f["kind"] for f in self.expected["mix"]["failing"])
        self.notes.append(f"- the failing set's {sum(kinds.values())} failures of {self.packages} attributes: "
                          + ", ".join(f"{k} {v}" for k, v in kinds.most_common()))

        print(f"\n### srcgrab enumerate: {self.packages} attributes, work dir {self.work}\n")
        print("| run | wall s | evaluators alive s | CPU s | CPU ms / attribute | evaluator peak RSS (MiB) "
              "| largest process (MiB) | process tree sum (MiB) (procs) | FODs found | expected | missing | extra "
              "| wrong kind | failed attrs found / expected | exit | load avg before → after |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        print("\n".join(self.rows))
        print()
        print("\n".join(self.notes))


def mib(kb):
    return f"{kb / 1024:.0f}"


def main():
    work, packages, fail_fraction = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    Report(work, packages, fail_fraction).print()


if __name__ == "__main__":
    main()
