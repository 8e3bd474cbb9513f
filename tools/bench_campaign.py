"""Campaign throughput: experiments per second with 1 and 2 local workers, with and without
fast-forward, on a campaign of short runs and on one whose faults come late in a long run.

    python tools/bench_campaign.py [--runs N] [--short N] [--late N] [--rounds R]

Each configuration runs the campaign from an empty database (its golden runs are not
timed: `Summary.seconds` covers the experiments only), `--runs` times; the medians and the
ratios are printed, with the targets: 2 workers >= 1.8x 1 worker, fast-forward >= 5x
without it on the late faults. Both campaigns are register bit flips in
firmware/checksum (x86-64): short runs of 40 rounds, register flips at random cycles;
and a long run of R rounds (default 30000, about 0.6 s), flips of its data words in its
last 10 %.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emu.campaign import commands  # noqa: E402

PROGRAM = REPO / "firmware" / "build" / "x86_64" / "checksum"


def campaign_file(folder: Path, name: str, rounds: int, count: int, late: bool) -> Path:
    """A bit-flip campaign of `count` experiments on checksum ROUNDS: register flips at
    random cycles, or (late) flips of its data words in the last 10 % of the run (which
    never run away: a runaway costs the same with or without fast-forward)."""
    path = folder / f"{name}.toml"
    text = (f'[campaign]\nname = "{name}"\nseed = 11\n\n'
            f'[[program]]\npath = "{PROGRAM}"\nargs = ["{rounds}"]\n\n'
            '[[sweep]]\nkind = "bitflip"\nbit = { from = 0, to = 63 }\n'
            f'samples = {count}\n')
    if late:
        text += ('vaddr = ["data+8", "data+800", "data+2048", "data+4000"]\n'
                 'cycle = { samples = %d, from = LATE_FROM, to = "golden" }\n' % count)
    else:
        text += ('reg = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi"]\n'
                 'cycle = { samples = %d, from = 0, to = "golden" }\n' % count)
    path.write_text(text)
    return path


def golden_cycles(folder: Path, rounds: int) -> int:
    """The golden run's cycles (to place the late faults)."""
    from emu.campaign.session import Session, Target

    session = Session(Target(str(PROGRAM), (str(rounds),)))
    try:
        return session.golden(600).record.cycles
    finally:
        session.close()


def measure(path: Path, workers: int, fast: bool, runs: int, folder: Path) -> list[float]:
    """Experiments per second of `runs` runs of the campaign at `path`."""
    rates = []
    for i in range(runs):
        db = folder / f"{path.stem}-{workers}-{int(fast)}-{i}.db"
        summary = commands.run(str(path), str(db), workers, None, fast, 0, quiet=True)
        assert summary.ran == summary.total, "every experiment should run"
        assert not summary.outcomes.get("emulator_error"), summary.outcomes
        rates.append(summary.ran / summary.seconds)
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--short", type=int, default=120, help="experiments (short runs)")
    parser.add_argument("--late", type=int, default=24, help="experiments (late faults)")
    parser.add_argument("--rounds", type=int, default=30000, help="the long run's rounds")
    opts = parser.parse_args()
    if not PROGRAM.exists():
        parser.error(f"{PROGRAM} is missing: make -C firmware")
    with tempfile.TemporaryDirectory(prefix="bench-campaign-") as tmp:
        folder = Path(tmp)
        short = campaign_file(folder, "short", 40, opts.short, late=False)
        late = campaign_file(folder, "late", opts.rounds, opts.late, late=True)
        cycles = golden_cycles(folder, opts.rounds)
        late.write_text(late.read_text().replace("LATE_FROM", str(cycles * 9 // 10)))
        rows = []
        for name, path, configs in (
                ("short runs", short, ((1, True), (2, True), (1, False), (2, False))),
                ("late faults", late, ((1, True), (2, True), (1, False)))):
            for workers, fast in configs:
                rates = measure(path, workers, fast, opts.runs, folder)
                rows.append((name, workers, fast, statistics.median(rates), rates))
                print(f"{name:12} workers={workers} fast_forward={str(fast):5} "
                      f"{statistics.median(rates):8.2f} exp/s  (runs: "
                      + ", ".join(f"{r:.2f}" for r in rates) + ")", flush=True)
    rate = {(n, w, f): m for n, w, f, m, _ in rows}
    print()
    print(f"long run: {cycles:,} cycles; late faults in its last 10 %")
    print(f"short runs: 2 workers / 1 worker (fast-forward): "
          f"{rate[('short runs', 2, True)] / rate[('short runs', 1, True)]:.2f}x  "
          "(target >= 1.8x)")
    print(f"late faults: 2 workers / 1 worker (fast-forward): "
          f"{rate[('late faults', 2, True)] / rate[('late faults', 1, True)]:.2f}x  "
          "(each worker runs the long run forward once)")
    print(f"short runs: 2 workers / 1 worker (no fast-forward): "
          f"{rate[('short runs', 2, False)] / rate[('short runs', 1, False)]:.2f}x  "
          "(target >= 1.8x)")
    print(f"late faults: fast-forward / none (1 worker): "
          f"{rate[('late faults', 1, True)] / rate[('late faults', 1, False)]:.2f}x  "
          "(target >= 5x)")
    print(f"short runs: fast-forward / none (1 worker): "
          f"{rate[('short runs', 1, True)] / rate[('short runs', 1, False)]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
