#!/usr/bin/env python3
"""The seed's experiment: page-fault latency with CPU-bound threads at the toucher's priority.

    python tools/seed_experiment.py [--arch x86_64|aarch64|both] [--spinners 0,1,2,3,4]
                                    [--pages 8] [--high-prio 20] [--json FILE]

The seed ("No fault of your own", ../shared/seed/ and docs/SEED_EXPERIMENT.md) says a
fault that the kernel's fast path cannot resolve blocks the thread in STATE_WAITPAGE and
pulses procnto; procnto's worker joins the END of the ready queue at the faulting thread's
priority, and when it has fixed the page tables the faulting thread joins the end of that
queue too. With N CPU-bound threads READY at that priority, one fault therefore costs about
2N round-robin time slices: N while procnto waits, N while the faulting thread waits again.

For each architecture and each N in --spinners this runs firmware's
`fault_latency N PAGES PRIO 10` under `python -m emu run --stats ... --events ...` twice:
with the toucher at the spinners' priority (10) and above it (--high-prio). It prints

  - the toucher's mean touch latency as the guest measured it (simulated CLOCK_MONOTONIC),
  - the same latency from the --events file: for each touched page, the timestamp of the
    toucher's next READY->RUNNING after its user fault_begin minus the fault_begin's,
  - that latency in time slices (the slice comes from the machine profile), against the
    prediction 2N,

then, for the largest N, where the toucher's time went (cycles_by_state from --stats, and
a per-fault split from the events: procnto queued READY, procnto working, toucher READY).

The script is a check as well as a demo. It exits 1 if an equal-priority latency is not
within +-10 % of 2N slices (or above 0.1 ms at N=0), if a high-priority latency exceeds
0.1 ms, or if the guest's and the events' figures differ by more than 5 us.

The emu that runs is the one in this checkout (PYTHONPATH is set to it); the programs come
from firmware/build/<arch>/ (`make -C firmware`).
"""
from __future__ import annotations

import argparse
import itertools
import json
import re
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from emu_runs import firmware_program  # tools/ is on sys.path when run
from emu_runs import run_emu as run_emu_stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emu.profile import load_profile  # after the sys.path insert

ARCHES = ("x86_64", "aarch64")
SPINNER_PRIO = 10
PAGE_SIZE = 4096
TOLERANCE = 0.10            # equal priority: within 10 % of 2N slices
HIGH_LIMIT_NS = 100_000     # high-priority toucher (and N=0): at most 0.1 ms
AGREE_NS = 5_000            # guest-measured vs event-derived latency

_TOUCH_RE = re.compile(r"touch_ns mean=(\d+) max=(\d+) min=(\d+)")


@dataclass
class Breakdown:
    """Where the touch faults' time went, summed over the touched pages (nanoseconds)."""

    waitpage: int = 0           # toucher in WAITPAGE (fault_begin .. fault_end)
    server_ready: int = 0       # ... of which procnto's worker was READY, queued
    server_working: int = 0     # ... of which the worker was RUNNING or waiting on the device
    pulse: int = 0              # ... of which the pulse (fault_begin .. pulse)
    toucher_ready: int = 0      # toucher READY again (fault_end .. RUNNING)


@dataclass
class Run:
    """One fault_latency run."""

    arch: str
    spinners: int
    toucher_prio: int
    guest_mean_ns: int
    guest_max_ns: int
    guest_min_ns: int
    event_latencies_ns: list[int]
    event_mean_ns: float
    breakdown: Breakdown
    toucher_cycles_by_state: dict[str, int]
    server_cycles_by_state: dict[str, int]
    context_switches: int
    host_seconds: float
    checks: list[str] = field(default_factory=list)     # failed checks, empty when all pass


def run_emu(arch: str, spinners: int, pages: int, toucher_prio: int, workdir: Path,
            profile: str | None) -> tuple[str, dict, list[dict]]:
    """Run fault_latency once; (stdout, stats, events)."""
    program = firmware_program("seed_experiment", arch, "fault_latency")
    tag = f"{arch}-n{spinners}-p{toucher_prio}"
    events_file = workdir / f"{tag}.events.jsonl"
    args = ["--arch", arch, "--clean-env", "--events", str(events_file)]
    if profile:
        args += ["--profile", profile]
    args += [str(program), str(spinners), str(pages), str(toucher_prio), str(SPINNER_PRIO)]
    stdout, stats = run_emu_stats("seed_experiment", args, workdir / f"{tag}.stats.json", workdir)
    with events_file.open() as f:
        events = [json.loads(line) for line in f]
    return stdout, stats, events


def find_threads(events: list[dict]) -> tuple[tuple[int, int], set[tuple[int, int]]]:
    """(the toucher's (pid, tid), the memory-manager server threads' (pid, tid)s)."""
    toucher = None
    servers = set()
    for e in events:
        if e["kind"] != "thread_create":
            continue
        if str(e.get("name", "")).startswith("procnto"):
            servers.add((e["pid"], e["tid"]))
        elif toucher is None and e["pid"] == e["tid"]:
            toucher = (e["pid"], e["tid"])              # the guest's first thread, "main"
    if toucher is None:
        raise SystemExit("seed_experiment: no guest main thread in the events")
    return toucher, servers


def touch_faults(events: list[dict], toucher: tuple[int, int], pages: int) -> list[int]:
    """Indices of the fault_begin events of the touched pages.

    The touched region is the last anonymous mapping, which the events do not show; its
    faults are the last run of `pages` user write faults of the toucher at consecutive
    page-aligned addresses (region[i * 4096] for i = 0 .. pages-1).
    """
    writes = [i for i, e in enumerate(events)
              if e["kind"] == "fault_begin" and (e["pid"], e["tid"]) == toucher
              and e.get("origin") == "user" and e.get("access") == "write"]
    for end in range(len(writes), pages - 1, -1):
        run = writes[end - pages:end]
        addrs = [events[i]["vaddr"] for i in run]
        if addrs[0] % PAGE_SIZE == 0 and all(b - a == PAGE_SIZE for a, b in itertools.pairwise(addrs)):
            return run
    raise SystemExit(f"seed_experiment: no run of {pages} consecutive write faults by the toucher")


def fault_timeline(events: list[dict], start: int, toucher: tuple[int, int],
                   servers: set[tuple[int, int]]) -> tuple[int, Breakdown]:
    """(latency, breakdown) of the fault whose fault_begin is events[start], in cycles."""
    begin = events[start]["ts"]
    b = Breakdown()
    end_ts = None
    server_ready_since = None
    pulse_ts = None
    for e in events[start + 1:]:
        who = (e["pid"], e["tid"])
        if e["kind"] == "pulse" and who == toucher and pulse_ts is None:
            pulse_ts = e["ts"]
        elif e["kind"] == "fault_end" and who == toucher and end_ts is None:
            end_ts = e["ts"]
        elif e["kind"] == "state" and who in servers and end_ts is None:
            if e["to"] == "READY":
                server_ready_since = e["ts"]
            elif e["from"] == "READY" and server_ready_since is not None:
                b.server_ready += e["ts"] - server_ready_since
                server_ready_since = None
        elif e["kind"] == "state" and who == toucher and e["to"] == "RUNNING":
            if end_ts is None:
                raise SystemExit("seed_experiment: toucher ran before its fault ended")
            b.waitpage = end_ts - begin
            b.pulse = (pulse_ts or begin) - begin
            b.server_working = b.waitpage - b.server_ready - b.pulse
            b.toucher_ready = e["ts"] - end_ts
            return e["ts"] - begin, b
    raise SystemExit("seed_experiment: the toucher never ran again after a fault")


def measure(arch: str, spinners: int, pages: int, toucher_prio: int, workdir: Path,
            profile_path: str | None, ns) -> Run:
    """One run, with the guest's and the events' figures."""
    stdout, stats, events = run_emu(arch, spinners, pages, toucher_prio, workdir, profile_path)
    m = _TOUCH_RE.search(stdout)
    if not m:
        raise SystemExit(f"seed_experiment: no touch_ns line in fault_latency's output: {stdout!r}")
    toucher, servers = find_threads(events)
    latencies, total = [], Breakdown()
    for index in touch_faults(events, toucher, pages):
        latency, b = fault_timeline(events, index, toucher, servers)
        latencies.append(ns(latency))
        for key, value in asdict(b).items():
            setattr(total, key, getattr(total, key) + ns(value))
    by_tid = {(t["pid"], t["tid"]): t for t in stats["threads"]}
    server = next((by_tid[s] for s in sorted(servers) if s in by_tid), {"cycles_by_state": {}})
    return Run(arch=arch, spinners=spinners, toucher_prio=toucher_prio,
               guest_mean_ns=int(m.group(1)), guest_max_ns=int(m.group(2)),
               guest_min_ns=int(m.group(3)), event_latencies_ns=latencies,
               event_mean_ns=statistics.fmean(latencies), breakdown=total,
               toucher_cycles_by_state=by_tid[toucher]["cycles_by_state"],
               server_cycles_by_state=server["cycles_by_state"],
               context_switches=stats["sched"]["context_switches"],
               host_seconds=stats["host"]["wall_seconds"])


def check(run: Run, slice_ns: int) -> None:
    """Record the run's failed checks in run.checks."""
    lat = run.guest_mean_ns
    if run.toucher_prio > SPINNER_PRIO or run.spinners == 0:
        if lat > HIGH_LIMIT_NS:
            run.checks.append(f"latency {lat / 1e6:.3f} ms > {HIGH_LIMIT_NS / 1e6:.1f} ms")
    else:
        predicted = 2 * run.spinners * slice_ns
        if abs(lat - predicted) > TOLERANCE * predicted:
            run.checks.append(f"latency {lat / slice_ns:.2f} slices, not 2N = "
                              f"{2 * run.spinners} +- {TOLERANCE:.0%}")
    if abs(run.guest_mean_ns - run.event_mean_ns) > AGREE_NS:
        run.checks.append(f"guest {run.guest_mean_ns} ns vs events {run.event_mean_ns:.0f} ns "
                          f"differ by more than {AGREE_NS / 1000:.0f} us")


def print_table(arch: str, rows: list[tuple[Run, Run]], slice_ns: int, pages: int,
                high: int) -> None:
    """The table for one architecture: equal priority, then the high-priority toucher."""
    print(f"\n{arch}: fault_latency N {pages} PRIO {SPINNER_PRIO}; time slice {slice_ns / 1e6:g} ms; "
          f"mean latency per touched page ({pages} pages)")
    left = f"toucher prio {SPINNER_PRIO} = spinners"
    right = f"toucher prio {high} > spinners"
    head = (f"{'N':>3} | {'guest ms':>10} {'events ms':>10} {'slices':>7} {'2N':>4} {'ok':>3} | "
            f"{'guest us':>9} {'events us':>9} {'slices':>7} {'ok':>3}")
    bar = head.index("|", 5)
    print(f"{'':>3} | {left:^{bar - 6}}| {right:^{len(head) - bar - 2}}")
    print(head)
    print("-" * len(head))
    for eq, hi in rows:
        print(f"{eq.spinners:>3} | {eq.guest_mean_ns / 1e6:>10.4f} {eq.event_mean_ns / 1e6:>10.4f} "
              f"{eq.guest_mean_ns / slice_ns:>7.3f} {2 * eq.spinners:>4} "
              f"{'yes' if not eq.checks else 'NO':>3} | "
              f"{hi.guest_mean_ns / 1e3:>9.3f} {hi.event_mean_ns / 1e3:>9.3f} "
              f"{hi.guest_mean_ns / slice_ns:>7.4f} {'yes' if not hi.checks else 'NO':>3}")
    diffs = sorted({round((r.guest_mean_ns - r.event_mean_ns) / 1000, 2)
                    for pair in rows for r in pair})
    print("guest: the program's CLOCK_MONOTONIC around each store. events: fault_begin to the "
          "toucher's next RUNNING.")
    print(f"guest - events: {', '.join(f'{d:.2f}' for d in diffs)} us")


def print_where(eq: Run, hi: Run, pages: int) -> None:
    """Where the toucher's time went, for one N > 0 case."""
    n = eq.spinners
    b = eq.breakdown

    def line(label: str, value: float) -> None:
        text = f"{value / 1e6:.3f} ms" if value >= 1e6 else f"{value / 1e3:.3f} us"
        print(f"    {label:<46}{text:>14}")

    print(f"\n{eq.arch}, N={n}, toucher at the spinners' priority: where the time goes")
    print(f"  per touched page (from the events, mean of {pages}):")
    line("toucher WAITPAGE (fault_begin .. fault_end)", b.waitpage / pages)
    line("  fault_begin .. pulse", b.pulse / pages)
    line(f"  procnto READY, queued behind {n} spinner{'s' if n != 1 else ''}", b.server_ready / pages)
    line("  procnto working (switch in + handling)", b.server_working / pages)
    line("toucher READY, queued behind the spinners again", b.toucher_ready / pages)
    queued = b.server_ready + b.toucher_ready
    total = b.waitpage + b.toucher_ready
    line("total (fault_begin .. toucher RUNNING)", total / pages)
    print(f"    ready-queue waiting (procnto's + the toucher's): {queued / total:.3%} of it")
    print("  whole run, cycles_by_state from --stats (start-up and program page-ins included;")
    print("  procnto's READY time lies inside the toucher's WAITPAGE):")
    for who, cbs in (("toucher (main)", eq.toucher_cycles_by_state),
                     ("procnto-mm0", eq.server_cycles_by_state)):
        parts = ", ".join(f"{k} {v / 1e6:.3f} M" for k, v in
                          sorted(cbs.items(), key=lambda kv: -kv[1]) if v)
        print(f"    {who:<15} {parts}")
    hb = hi.breakdown
    print(f"  toucher at priority {hi.toucher_prio} instead: WAITPAGE {hb.waitpage / pages / 1e3:.3f} us "
          f"(procnto READY {hb.server_ready / pages / 1e3:.3f} us), toucher READY "
          f"{hb.toucher_ready / pages / 1e3:.3f} us per page")


def main() -> int:
    """Run the experiment; exit 1 if the effect is not reproduced."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=(*ARCHES, "both"), default="both")
    parser.add_argument("--spinners", default="0,1,2,3,4",
                        help="comma-separated spinner counts N (default 0,1,2,3,4)")
    parser.add_argument("--pages", type=int, default=8, help="pages touched per run (default 8)")
    parser.add_argument("--high-prio", type=int, default=20,
                        help="the toucher's priority in the second series (default 20)")
    parser.add_argument("--profile", help="machine profile (default: emu/profiles/default.toml)")
    parser.add_argument("--json", metavar="FILE", help="also write every run's figures as JSON")
    opts = parser.parse_args()
    try:
        counts = sorted({int(x) for x in opts.spinners.split(",") if x.strip()})
    except ValueError:
        parser.error("--spinners takes comma-separated integers")
    if not counts or min(counts) < 0 or max(counts) > 64:
        parser.error("--spinners: counts from 0 to 64")
    if opts.pages < 1:
        parser.error("--pages must be at least 1")
    if not SPINNER_PRIO < opts.high_prio <= 99:     # Linux's SCHED_FIFO/RR range
        parser.error(f"--high-prio must be above {SPINNER_PRIO} and at most 99")

    profile = load_profile(opts.profile)
    slice_ns = profile.time_slice_ns

    def ns(cycles: int) -> int:
        return profile.nanoseconds(cycles)

    arches = ARCHES if opts.arch == "both" else (opts.arch,)
    results: dict[str, list[tuple[Run, Run]]] = {}
    with tempfile.TemporaryDirectory(prefix="seed-experiment-") as tmp:
        for arch in arches:
            rows = []
            for n in counts:
                pair = []
                for prio in (SPINNER_PRIO, opts.high_prio):
                    run = measure(arch, n, opts.pages, prio, Path(tmp), opts.profile, ns)
                    check(run, slice_ns)
                    pair.append(run)
                rows.append((pair[0], pair[1]))
            results[arch] = rows
            print_table(arch, rows, slice_ns, opts.pages, opts.high_prio)
            busy = [r for r in rows if r[0].spinners > 0]
            if busy:
                print_where(*busy[-1], opts.pages)

    failures = [f"{r.arch} N={r.spinners} prio {r.toucher_prio}: {c}"
                for rows in results.values() for pair in rows for r in pair for c in r.checks]
    if opts.json:
        out = {"profile": opts.profile or "emu/profiles/default.toml", "time_slice_ns": slice_ns,
               "pages": opts.pages, "spinner_prio": SPINNER_PRIO, "high_prio": opts.high_prio,
               "runs": [asdict(r) for rows in results.values() for pair in rows for r in pair],
               "failures": failures}
        Path(opts.json).write_text(json.dumps(out, indent=2) + "\n")
    print()
    if failures:
        print("FAILED: the seed's effect is not reproduced as predicted:")
        for f in failures:
            print(f"  {f}")
        return 1
    print(f"OK: at equal priority each spinner adds 2 time slices (within {TOLERANCE:.0%}); "
          f"at priority {opts.high_prio} the toucher stays under {HIGH_LIMIT_NS / 1e6:g} ms; "
          f"guest and events agree within {AGREE_NS / 1000:g} us.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
