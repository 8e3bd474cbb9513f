#!/usr/bin/env python3
"""Benchmark (not a test): host-side throughput of emu's deferred-fault path, in faults/s.

    python tools/bench_faults.py [--arch x86_64|aarch64|both] [--small 5000] [--large 50000]
                                 [--runs 3] [--ram 1G] [--emu-arg ARG] [--json FILE]

firmware's `page_touch N` maps N fresh anonymous pages, writes one byte into each and
reads them back. Every first write is a fault the C fast path cannot resolve, so it takes
the whole slow path: the thread blocks in WAITPAGE, a pulse wakes procnto's memory-manager
thread, which zero-fills a frame, maps it and makes the toucher READY again.

For each architecture, `python -m emu run --clean-env --stats FILE page_touch N` runs
--runs times at N = --small and at N = --large, interleaved. Per size it takes the median
of `host.wall_seconds` (engine creation to guest exit: Python start-up and imports are not
in it) and `faults.total` (deterministic; checked equal across runs). Then

    faults/s = (faults(large) - faults(small)) / (wall(large) - wall(small))

so the program's start-up, its own page-ins and emu's set-up cancel out. The issue's
target is at least 50,000 faults/s; the verdict is printed for each architecture.
Exit status 0 whatever the verdict (this is a benchmark); 1 if a run fails.

The emu that runs is the one in this checkout (PYTHONPATH is set to it); the programs
come from firmware/build/<arch>/ (`make -C firmware`).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from emu_runs import firmware_program, run_emu  # tools/ is on sys.path when run

REPO = Path(__file__).resolve().parents[1]
ARCHES = ("x86_64", "aarch64")
TARGET = 50_000          # faults per second, from issue 3 ("Done when")


def run_once(arch: str, pages: int, ram: str, workdir: Path,
             extra: list[str]) -> tuple[int, float, str]:
    """(faults.total, host.wall_seconds, stdout) of one page_touch run."""
    program = firmware_program("bench_faults", arch, "page_touch")
    stdout, stats = run_emu("bench_faults", ["--arch", arch, "--clean-env", "--ram", ram, *extra,
                                             str(program), str(pages)],
                            workdir / f"{arch}-{pages}.json", workdir)
    return stats["faults"]["total"], stats["host"]["wall_seconds"], stdout


def bench_arch(arch: str, sizes: tuple[int, int], runs: int, ram: str, workdir: Path,
               extra: list[str]) -> dict:
    """Median wall time and the fault count at each size, and the net faults/s."""
    faults: dict[int, set[int]] = {n: set() for n in sizes}
    outputs: dict[int, set[str]] = {n: set() for n in sizes}
    walls: dict[int, list[float]] = {n: [] for n in sizes}
    for _ in range(runs):
        for n in sizes:
            f, wall, out = run_once(arch, n, ram, workdir, extra)
            faults[n].add(f)
            outputs[n].add(out)
            walls[n].append(wall)
    for n in sizes:
        if len(faults[n]) != 1 or len(outputs[n]) != 1:
            raise SystemExit(f"bench_faults: {arch} page_touch {n}: runs differ "
                             f"(faults {sorted(faults[n])})")
    small, large = sizes
    f_small, f_large = faults[small].pop(), faults[large].pop()
    w_small, w_large = statistics.median(walls[small]), statistics.median(walls[large])
    if w_large <= w_small:
        raise SystemExit(f"bench_faults: {arch}: the large run was not slower than the small one")
    rate = (f_large - f_small) / (w_large - w_small)
    return {"arch": arch, "sizes": list(sizes),
            "faults": {str(small): f_small, str(large): f_large},
            "wall_seconds": {str(small): walls[small], str(large): walls[large]},
            "median_wall_seconds": {str(small): w_small, str(large): w_large},
            "raw_faults_per_second": f_large / w_large,
            "faults_per_second": rate, "us_per_fault": 1e6 / rate,
            "target": TARGET, "met": rate >= TARGET}


def git_head() -> str:
    """`git log -1 --oneline` of the checkout, plus a note when the tree has changes."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--oneline"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "emu"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" (+ uncommitted changes in emu/)" if dirty else "")


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=(*ARCHES, "both"), default="both")
    parser.add_argument("--small", type=int, default=5_000, help="pages in the small run")
    parser.add_argument("--large", type=int, default=50_000, help="pages in the large run")
    parser.add_argument("--runs", type=int, default=3, help="runs per size (median; default 3)")
    parser.add_argument("--ram", default="1G", help="guest RAM (default 1G: room for --large)")
    parser.add_argument("--emu-arg", action="append", default=[], metavar="ARG",
                        help="extra `emu run` option, e.g. --emu-arg=--stop-on-every-fault "
                             "(repeatable)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    opts = parser.parse_args()
    if not 0 <= opts.small < opts.large:
        parser.error("need 0 <= --small < --large")
    if opts.runs < 1:
        parser.error("--runs must be at least 1")

    arches = ARCHES if opts.arch == "both" else (opts.arch,)
    commit = git_head()
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"bench_faults: page_touch {opts.small} vs {opts.large}, median of {opts.runs} runs; "
          f"{when}; commit {commit}"
          + (f"; emu run {' '.join(opts.emu_arg)}" if opts.emu_arg else ""))
    load = os.getloadavg()[0]
    print(f"host: {platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"load average {load:.2f} at start")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        for arch in arches:
            results.append(bench_arch(arch, (opts.small, opts.large), opts.runs, opts.ram,
                                      Path(tmp), opts.emu_arg))

    s, l = str(opts.small), str(opts.large)
    head = (f"{'arch':<8} {'faults ' + s:>13} {'wall s':>7} {'faults ' + l:>13} {'wall s':>7} "
            f"{'net faults/s':>13} {'us/fault':>9} {'raw faults/s':>13}  target {TARGET:,}/s")
    print()
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r['arch']:<8} {r['faults'][s]:>13,} {r['median_wall_seconds'][s]:>7.3f} "
              f"{r['faults'][l]:>13,} {r['median_wall_seconds'][l]:>7.3f} "
              f"{r['faults_per_second']:>13,.0f} {r['us_per_fault']:>9.2f} "
              f"{r['raw_faults_per_second']:>13,.0f}  {'met' if r['met'] else 'NOT met'}")
    print("net faults/s = (faults(large) - faults(small)) / (wall(large) - wall(small)); "
          "raw = faults(large) / wall(large)")
    if opts.json:
        Path(opts.json).write_text(json.dumps(
            {"date": when, "commit": commit, "python": platform.python_version(),
             "load_average_at_start": load,
             "runs": opts.runs, "emu_args": opts.emu_arg, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
