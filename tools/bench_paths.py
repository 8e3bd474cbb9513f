#!/usr/bin/env python3
"""Benchmark (not a test): the paths every run takes, each as a ratio to a baseline run here.

    python tools/bench_paths.py [--arch x86_64|aarch64|both] [--runs 5] [--baseline DIR]
                                [--json FILE]

1. system calls: `syscall_loop N` (getppid) at two sizes under emu and under qemu-user;
   the net cost per call is (wall(large) - wall(small)) / (N_large - N_small), for emu from
   its host.wall_seconds and for qemu-user from the process's wall time.
2. deferred faults: `page_touch N` at two sizes under emu: net faults per second from
   faults.total and host.wall_seconds (every first touch takes the whole slow path).
3. start-up: the whole `emu run hello` process, from exec to exit, against `qemu-<arch>
   hello` (median wall time of --runs runs each, interleaved).
4. mprotect under threads: `vma_threads ITERS` (readers, a writer and an executor while two
   threads mprotect random ranges), emu against qemu-user, whole process.

With `--baseline DIR` (another checkout of emu, its fast path built), every emu figure is
also measured with that checkout, interleaved run by run, for a before/after comparison.
Medians of --runs runs; the emu that runs is this checkout's (PYTHONPATH), from a neutral
working directory; the programs come from firmware/build/<arch>/. Exit status 0 whatever
the figures (this is a benchmark); 1 if a run fails.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCHES = ("x86_64", "aarch64")
QEMU = {"x86_64": "qemu-x86_64", "aarch64": "qemu-aarch64"}


def program(arch: str, name: str) -> Path:
    """firmware/build/ARCH/NAME, or exit with a one-line message."""
    path = REPO / "firmware" / "build" / arch / name
    if not path.is_file():
        raise SystemExit(f"bench_paths: {path} is missing: run `make -C firmware`")
    return path


class Emu:
    """One checkout of emu, run as a separate process from a neutral directory."""

    def __init__(self, checkout: Path, workdir: Path, label: str) -> None:
        self.checkout, self.workdir, self.label = checkout, workdir, label
        self.env = {**os.environ, "PYTHONPATH": str(checkout)}
        self.env.pop("PYTHONHASHSEED", None)

    def command(self, args: list[str]) -> list[str]:
        return [sys.executable, "-m", "emu", "run", *args]

    def stats(self, args: list[str]) -> dict:  # type: ignore[type-arg]
        """--stats of one run (exit if it fails)."""
        stats = self.workdir / f"stats-{self.label}.json"
        stats.unlink(missing_ok=True)
        proc = subprocess.run(self.command(["--stats", str(stats), *args]), env=self.env,
                              cwd=self.workdir, capture_output=True, text=True)
        if proc.returncode != 0 or not stats.exists():
            raise SystemExit(f"bench_paths: {self.label}: emu run {' '.join(args)} exited "
                             f"{proc.returncode}: {proc.stderr.strip()[-300:]}")
        return json.loads(stats.read_text())

    def wall(self, args: list[str]) -> float:
        """Whole-process wall time of one run."""
        return wall([*self.command(args)], self.env, self.workdir)


def wall(cmd: list[str], env: dict[str, str] | None, cwd: Path) -> float:
    """Wall seconds of one process (exit if it fails)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench_paths: {' '.join(cmd)} exited {proc.returncode}")
    return seconds


def median(values: list[float]) -> float:
    return statistics.median(values)


def bench_arch(arch: str, emus: list[Emu], runs: int, workdir: Path) -> dict:  # type: ignore[type-arg]
    qemu = shutil.which(QEMU[arch])
    if qemu is None:
        raise SystemExit(f"bench_paths: {QEMU[arch]} is not installed")
    out: dict = {"arch": arch}  # type: ignore[type-arg]
    loop, touch = program(arch, "syscall_loop"), program(arch, "page_touch")
    hello, vma = program(arch, "hello"), program(arch, "vma_threads")
    # 1. system calls
    e_small, e_large, q_small, q_large = 2_000, 42_000, 200_000, 2_200_000
    per_call: dict[str, float] = {}
    for emu in emus:
        walls = {n: [] for n in (e_small, e_large)}  # type: ignore[var-annotated]
        for _ in range(runs):
            for n in walls:
                walls[n].append(emu.stats([str(loop), str(n)])["host"]["wall_seconds"])
        per_call[emu.label] = (median(walls[e_large]) - median(walls[e_small])) / (e_large - e_small)
    qw = {n: [wall([qemu, str(loop), str(n)], None, workdir) for _ in range(runs)]
          for n in (q_small, q_large)}
    per_call["qemu-user"] = (median(qw[q_large]) - median(qw[q_small])) / (q_large - q_small)
    out["syscall_us"] = {k: round(v * 1e6, 3) for k, v in per_call.items()}
    # 2. deferred faults
    f_small, f_large = 2_000, 20_000
    rates: dict[str, float] = {}
    for emu in emus:
        got = {n: [] for n in (f_small, f_large)}  # type: ignore[var-annotated]
        faults = {}
        for _ in range(runs):
            for n in got:
                stats = emu.stats(["--ram", "512M", str(touch), str(n)])
                got[n].append(stats["host"]["wall_seconds"])
                faults[n] = stats["faults"]["total"]
        rates[emu.label] = (faults[f_large] - faults[f_small]) / (
            median(got[f_large]) - median(got[f_small]))
    out["faults_per_second"] = {k: round(v) for k, v in rates.items()}
    # 3. start-up, whole process
    starts: dict[str, list[float]] = {e.label: [] for e in emus}
    starts["qemu-user"] = []
    for _ in range(runs):
        for emu in emus:
            starts[emu.label].append(emu.wall([str(hello)]))
        starts["qemu-user"].append(wall([qemu, str(hello)], None, workdir))
    out["hello_seconds"] = {k: round(median(v), 3) for k, v in starts.items()}
    # 4. mprotect under threads
    iters = "1000"
    vmas: dict[str, list[float]] = {e.label: [] for e in emus}
    vmas["qemu-user"] = []
    for _ in range(max(1, runs // 2)):
        for emu in emus:
            vmas[emu.label].append(emu.wall([str(vma), iters]))
        vmas["qemu-user"].append(wall([qemu, str(vma), iters], None, workdir))
    out["vma_threads_seconds"] = {k: round(median(v), 3) for k, v in vmas.items()}
    return out


def report(res: dict, labels: list[str]) -> None:  # type: ignore[type-arg]
    print(f"== {res['arch']}")
    q = res["syscall_us"]["qemu-user"]
    for label in labels:
        sc = res["syscall_us"][label]
        print(f"   {label:<10} system call {sc:8.2f} us  = {sc / q:6.1f}x qemu-user "
              f"({q:.2f} us)   target <= 10x")
    for label in labels:
        print(f"   {label:<10} deferred faults {res['faults_per_second'][label]:9,}/s"
              f"   target >= 50,000/s")
    qh = res["hello_seconds"]["qemu-user"]
    for label in labels:
        h = res["hello_seconds"][label]
        print(f"   {label:<10} hello, whole process {h:6.3f} s = {h / qh:5.1f}x qemu-user "
              f"({qh:.3f} s)   target <= 0.25 s")
    qv = res["vma_threads_seconds"]["qemu-user"]
    for label in labels:
        v = res["vma_threads_seconds"][label]
        print(f"   {label:<10} vma_threads 1000 {v:7.2f} s = {v / qv:6.1f}x qemu-user ({qv:.2f} s)")


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=(*ARCHES, "both"), default="both")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median)")
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="another emu checkout to measure too, as 'before'")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures")
    args = parser.parse_args()
    arches = ARCHES if args.arch == "both" else (args.arch,)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        emus = [Emu(REPO, workdir, "emu")]
        if args.baseline is not None:
            emus.append(Emu(args.baseline.resolve(), workdir, "baseline"))
        print(f"bench_paths: median of {args.runs} runs; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
        results = [bench_arch(arch, emus, args.runs, workdir) for arch in arches]
    for res in results:
        report(res, [e.label for e in emus])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
