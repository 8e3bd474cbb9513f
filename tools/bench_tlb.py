"""TLB and page-walk benchmark (not a test): the page-table walker's fill rate, and the
detailed TLB model's cost against fast mode.

    python tools/bench_tlb.py [--runs K] [--pages N] [--arch x86_64|aarch64|both]
                              [--iters N] [--baseline DIR] [--json FILE]

1. Fill rate. For each page-table format, N pages scattered over 64 GiB (a fixed seed)
   are mapped in a PageTable in RAM of its own; the C walker the TLB-fill hook uses
   (pagetable.c: pt_walk, with the accessed-bit update) then walks every address 50
   times, in a shuffled order. Figure: walks per second, the median of K runs.
2. Guest speed. firmware's store_loop ITERS under `emu run` with the default fast TLB
   and with `--tlb detailed`; ratio detailed/fast of host seconds (host.wall_seconds of
   --stats), median of K runs. With --baseline DIR (another emu checkout, its fast path
   built), the same program under that checkout's emu too: the ratio now/baseline says
   how much the guest loop's speed changed.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emu.cpu.fastpath import ffi, lib  # noqa: E402
from emu.mm.frames import PAGE_SIZE, FrameAllocator, PhysicalMemory  # noqa: E402
from emu.mm.pagetable import PageTable, PageTableFormat, Pte, TableFrames  # noqa: E402

FIRMWARE = REPO / "firmware" / "build"


def walker_rate(fmt: PageTableFormat, pages: int, rounds: int = 50) -> float:
    """Walks per second of the C walker over `pages` scattered, mapped pages."""
    rng = random.Random(1)
    tables = TableFrames(PhysicalMemory(32768 * PAGE_SIZE), FrameAllocator(32768), fmt)
    table = PageTable(tables)
    vpns = rng.sample(range(1 << 24), pages)            # 64 GiB of virtual space
    for i, vpn in enumerate(vpns):
        table.map(vpn, Pte(frame=i, perms=3, modified=True))
    rng.shuffle(vpns)
    vaddrs = ffi.new("uint64_t[]", [v << 12 for v in vpns])
    start = time.perf_counter()
    found = lib.fp_pt_walk_bench(table.handle, vaddrs, pages, rounds)
    elapsed = time.perf_counter() - start
    assert found == pages * rounds, "the walker missed a mapped page"
    return found / elapsed


def guest_seconds(arch: str, iters: int, extra: list[str], pythonpath: str | None) -> float:
    """host.wall_seconds of one store_loop run under emu."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    with tempfile.NamedTemporaryFile(suffix=".json") as stats:
        subprocess.run([sys.executable, "-m", "emu", "run", "--stats", stats.name, *extra,
                        str(FIRMWARE / arch / "store_loop"), str(iters)], check=True,
                       cwd="/", env=env, stdout=subprocess.DEVNULL)
        return float(json.load(open(stats.name))["host"]["wall_seconds"])


def main() -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pages", type=int, default=16384)
    parser.add_argument("--iters", type=int, default=20_000_000)
    parser.add_argument("--arch", choices=("x86_64", "aarch64", "both"), default="both")
    parser.add_argument("--baseline", metavar="DIR", help="another emu checkout to compare with")
    parser.add_argument("--no-detailed", action="store_true",
                        help="skip the detailed TLB mode (an emu without it)")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    arches = ("x86_64", "aarch64") if args.arch == "both" else (args.arch,)
    results: dict[str, object] = {"runs": args.runs, "pages": args.pages, "iters": args.iters}
    print(f"fill rate: C walker over {args.pages} scattered pages, median of {args.runs} runs")
    for arch in arches:
        fmt = PageTableFormat.of_arch(arch)
        rate = statistics.median(walker_rate(fmt, args.pages) for _ in range(args.runs))
        results[f"walks_per_second_{arch}"] = rate
        print(f"  {arch:8} {rate / 1e6:8.1f} M walks/s   ({1e9 / rate:.1f} ns per fill)")
    print(f"guest speed: store_loop {args.iters}, host seconds, median of {args.runs} runs")
    for arch in arches:
        modes = {"fast": []} if args.no_detailed else {"fast": [], "detailed": ["--tlb", "detailed"]}
        runners = {name: (extra, None) for name, extra in
                   (("fast", []), ("detailed", ["--tlb", "detailed"])) if name in modes}
        if args.baseline:
            runners["baseline"] = ([], str(Path(args.baseline).resolve()))
        times: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(args.runs):                      # interleaved: drift hits all alike
            for name, (extra, path) in runners.items():
                times[name].append(guest_seconds(arch, args.iters, extra, path))
        medians = {name: statistics.median(t) for name, t in times.items()}
        results[f"guest_seconds_{arch}"] = medians
        line = "  ".join(f"{name} {sec:.3f} s" for name, sec in medians.items())
        ratios = []
        if "detailed" in medians:
            ratios.append(f"detailed/fast {medians['detailed'] / medians['fast']:.2f}x")
        if "baseline" in medians:
            ratios.append(f"fast/baseline {medians['fast'] / medians['baseline']:.3f}x")
        print(f"  {arch:8} {line}   {'  '.join(ratios)}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
