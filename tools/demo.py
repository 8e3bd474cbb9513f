#!/usr/bin/env python3
"""The demo: what the emulated MMU does, then paging policies side by side, then the seed's
experiment.

Usage: python3 tools/demo.py [--ram SIZE]
1. Every firmware program on both architectures: instructions, fast-path TLB fills,
   faults by cause and frames, from `emu run --stats`.
2. The same page-touching program under four policies of the memory manager:
   committed memory (the default), MAP_LAZY, procnto -ml (every process locked) and
   -mL (superlocked: everything set up at once, no faults at all).
3. tools/seed_experiment.py: fault latency grows by two time slices per CPU-bound
   thread at the faulting thread's priority, and not at all above it.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from emu_runs import firmware_program, run_emu  # tools/ is on sys.path when run

REPO = Path(__file__).resolve().parents[1]
PROGRAMS = [
    ("hello", ["demo"]),
    ("page_touch", ["1000"]),
    ("mmap_exercise", []),
    ("compute_loop", ["2000000"]),
    ("store_loop", ["2000000"]),
    ("pthreads", []),
]
POLICIES = [
    ("committed (default)", [], ["256"]),
    ("MAP_LAZY", [], ["256", "1", "lazy"]),
    ("locked (-ml)", ["-ml"], ["256"]),
    ("superlocked (-mL)", ["-mL"], ["256"]),
]


def emu_stats(arch: str, program: str, args: list[str], flags: list[str], ram: str,
              workdir: Path) -> dict[str, Any]:
    """Run one firmware program under emu and return its --stats report."""
    path = firmware_program("demo", arch, program)
    _, stats = run_emu("demo", ["--ram", ram, "--root", str(workdir), *flags, str(path), *args],
                       workdir / "stats.json", workdir, any_status=True)
    return stats


def print_table(title: str, columns: tuple[str, ...], rows: list[list[str]]) -> None:
    """A plain aligned table."""
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in rows:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))


def firmware_tables(ram: str, workdir: Path) -> bool:
    """Section 1; True if every program exited 0."""
    columns = ("program", "exit", "instructions", "tlb fills", "faults", "zero_fill",
               "page_in", "write_track", "frames peak", "host s")
    ok = True
    for arch in ("x86_64", "aarch64"):
        rows = []
        for program, args in PROGRAMS:
            s = emu_stats(arch, program, args, [], ram, workdir)
            by = s["faults"]["by_cause"]
            status = s["exit"]["signal"] or str(s["exit"]["code"])
            ok &= status == "0"
            rows.append([program, status, f"{s['instructions']:,}", f"{s['tlb']['fills']:,}",
                         str(s["faults"]["total"]), str(by["zero_fill"]), str(by["page_in"]),
                         str(by["write_track"]), str(s["mm"]["frames_peak"]),
                         f"{s['host']['wall_seconds']:.2f}"])
        print_table(f"{arch}: firmware under emu (RAM {ram})", columns, rows)
    print("\nfaults = page faults the C fast path could not resolve; tlb fills = translations"
          "\nit inserted from the page tables; write_track = first writes to pages first read.")
    return ok


def policy_table(ram: str, workdir: Path) -> bool:
    """Section 2; True if every run exited 0."""
    columns = ("policy", "faults", "zero_fill", "lazy_alloc", "page_in", "write_track",
               "waiting for faults", "run time", "frames peak")
    rows, ok = [], True
    for name, flags, args in POLICIES:
        s = emu_stats("x86_64", "page_touch", args, flags, ram, workdir)
        ok &= s["exit"]["code"] == 0
        by, lat = s["faults"]["by_cause"], s["fault_latency_cycles"]
        rows.append([name, str(s["faults"]["total"]), str(by["zero_fill"]), str(by["lazy_alloc"]),
                     str(by["page_in"]), str(by["write_track"]),
                     f"{lat['count'] * lat['mean'] / 1e6:.2f} ms", f"{s['cycles'] / 1e6:.2f} ms",
                     str(s["mm"]["frames_peak"])])
    print_table("x86_64: page_touch 256 under the memory manager's policies (simulated time, "
                "1 GHz)", columns, rows)
    print("\nLocking moves the work ahead: the program runs without waiting on faults (only"
          "\nfirst writes still fault under -ml), at the price of setting everything up at"
          "\nstart, the whole 8 MiB main stack included.")
    return ok


def main() -> int:
    """Run the demo; exit status 1 if anything failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ram", default="256M", help="physical RAM of the emulated machine")
    opts = parser.parse_args()
    if not (REPO / "firmware" / "build").is_dir():
        raise SystemExit("demo: firmware is not built: run `make -C firmware`")
    with tempfile.TemporaryDirectory() as tmp:
        ok = firmware_tables(opts.ram, Path(tmp))
        ok &= policy_table(opts.ram, Path(tmp))
    print("\nThe seed's experiment (docs/SEED_EXPERIMENT.md): a thread touching fresh pages while"
          "\nN CPU-bound threads share its priority; each fault waits behind them twice.",
          flush=True)
    seed = subprocess.run([sys.executable, str(REPO / "tools" / "seed_experiment.py"),
                           "--spinners", "0,1,2,4", "--pages", "4"])
    return 0 if ok and seed.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
