#!/usr/bin/env python3
"""The demo: every firmware program on both architectures, then the seed's experiment.

Usage: python3 tools/demo.py [--ram SIZE]
Each program runs under `emu run --stats`; the table shows what the MMU did
(fast-path TLB fills, faults by cause, frames) next to the instruction count.
Then tools/seed_experiment.py shows fault latency growing by two time slices
per CPU-bound thread at the faulting thread's priority, and not at all above it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROGRAMS = [
    ("hello", ["demo"]),
    ("page_touch", ["1000"]),
    ("mmap_exercise", []),
    ("compute_loop", ["2000000"]),
    ("store_loop", ["2000000"]),
]
COLUMNS = ("program", "exit", "instructions", "tlb fills", "faults", "zero_fill", "page_in",
           "frames peak", "host s")


def run_one(arch: str, program: str, args: list[str], ram: str, workdir: Path) -> list[str]:
    """Run one firmware program and return its table row."""
    stats_file = workdir / f"{arch}-{program}.json"
    cmd = [sys.executable, "-m", "emu", "run", "--ram", ram, "--root", str(workdir),
           "--stats", str(stats_file), str(REPO / "firmware" / "build" / arch / program), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    if not stats_file.exists():
        raise SystemExit(f"demo: {program} on {arch} failed: {proc.stderr.strip()}")
    s = json.loads(stats_file.read_text())
    by = s["faults"]["by_cause"]
    exit_text = s["exit"]["signal"] or str(s["exit"]["code"])
    return [program, exit_text, f"{s['instructions']:,}", f"{s['tlb']['fills']:,}",
            str(s["faults"]["total"]), str(by["zero_fill"]), str(by["page_in"]),
            str(s["mm"]["frames_peak"]), f"{s['host']['wall_seconds']:.2f}"]


def print_table(title: str, rows: list[list[str]]) -> None:
    """A plain aligned table."""
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    print(f"\n{title}")
    print("  ".join(c.rjust(w) for c, w in zip(COLUMNS, widths)))
    for row in rows:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))


def main() -> int:
    """Run the demo; exit status 1 if any program failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ram", default="256M", help="physical RAM of the emulated machine")
    opts = parser.parse_args()
    if not (REPO / "firmware" / "build").is_dir():
        raise SystemExit("demo: firmware is not built: run `make -C firmware`")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ("x86_64", "aarch64"):
            rows = [run_one(arch, p, a, opts.ram, Path(tmp)) for p, a in PROGRAMS]
            failed |= any(r[1] != "0" for r in rows)
            print_table(f"{arch}: firmware under emu (RAM {opts.ram})", rows)
    print("\nfaults = page faults the C fast path could not resolve (one per fresh page);"
          "\ntlb fills = translations the fast path inserted from the page tables.")
    print("\nThe seed's experiment (docs/SEED_EXPERIMENT.md): a thread touching fresh pages while"
          "\nN CPU-bound threads share its priority; each fault waits behind them twice.",
          flush=True)
    seed = subprocess.run([sys.executable, str(REPO / "tools" / "seed_experiment.py"),
                           "--spinners", "0,1,2,4", "--pages", "4"])
    return 1 if failed or seed.returncode else 0


if __name__ == "__main__":
    sys.exit(main())
