"""`emu demo`: the flagship experiment — the seed's story told with numbers and pictures.

Four experiments, each on both architectures, each an ordinary set of hermetic `emu run`s
of firmware programs (run in parallel by emu.compare), written to an output folder as PNG
plots and a markdown report:

  (a) fault latency against the number of CPU-bound threads READY at the faulting
      thread's priority: demand paging, locked (-ml), superlocked (-mL), and procnto at a
      fixed high priority (--mm-priority) instead of inheriting the pulse's;
  (b) where a multi-threaded program's threads spend their time in STATE_WAITPAGE, under
      each policy;
  (c) the large-page effect: TLB misses and cycles of a sweep over a large array with
      variable page sizes on and off (-m~v), in the detailed TLB model, on two profiles;
  (d) the prefault heuristic's trade-off: faults saved against pages set up that were
      never used (read from the page tables' accessed bits).
"""
from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from emu.compare import Policy, PolicyResult, compare, progress_bar
from emu.errors import EmuError

ARCHES = ("x86_64", "aarch64")
PROFILES = {"x86_64": ("skylake", "zen2"), "aarch64": ("cortex-a53", "cortex-a72")}
SPINNERS = (0, 1, 2, 4)
LATENCY_POLICIES = (("demand", ""), ("locked", "-ml"), ("superlocked", "-mL"),
                    ("procnto fixed 50", "--mm-priority 50"))
WAITPAGE_POLICIES = (("demand", ""), ("prefault 15", "--prefault anon=15"),
                     ("locked", "-ml"), ("superlocked", "-mL"))
PREFAULT_PAGES = (0, 1, 3, 7, 15, 31)
SWEEP = ("32", "4096", "64")                # 32 MiB, one access per 4 KiB page, 64 passes
THREADS = ("4", "128")


@dataclass(frozen=True)
class Run:
    """One run of the demo: which experiment and point it is, and its emu run options."""

    experiment: str
    arch: str
    label: str
    x: float
    options: str
    program: str
    args: tuple[str, ...]


def plan(firmware: Path, arches: Sequence[str]) -> list[Run]:
    """Every run of the four experiments."""
    runs: list[Run] = []
    for arch in arches:
        prog = lambda name: str(firmware / arch / name)          # noqa: E731
        for label, options in LATENCY_POLICIES:
            for n in SPINNERS:
                runs.append(Run("a", arch, label, n, options, prog("fault_latency"),
                                (str(n), "2", "10", "10")))
        for label, options in WAITPAGE_POLICIES:
            runs.append(Run("b", arch, label, 0, options, prog("thread_touch"), THREADS))
        for profile in PROFILES[arch]:
            for large in (True, False):
                runs.append(Run("c", arch, f"{profile} {'v' if large else '~v'}",
                                float(large), f"--profile {profile} --tlb detailed"
                                + ("" if large else " -m~v"), prog("sweep"), SWEEP))
        for stride, what in ((4, "one page in 4"), (1, "every page")):
            for pages in PREFAULT_PAGES:
                runs.append(Run("d", arch, what, pages, f"-m~v --prefault anon={pages}",
                                prog("sweep"), ("16", str(stride * 4096), "1")))
    return runs


def run_all(runs: Sequence[Run], jobs: int) -> list[PolicyResult]:
    """Run them all in `jobs` processes (a progress bar on stderr); results in run order."""
    from emu.cli import policy_config

    configs = []
    for i, run in enumerate(runs):
        policy = Policy(f"r{i}", tuple(run.options.split()))
        configs.append((policy, policy_config(policy, ["--root", "/"], run.program,
                                              list(run.args), {})))
    advance, close = progress_bar(len(configs))
    try:
        results = compare(configs, jobs, advance)
    finally:
        close()
    for run, result in zip(runs, results):
        if result.error is not None:
            raise EmuError(f"demo run {run.label} ({run.arch}) failed: {result.error}")
    return results


def _touch_ms(result: PolicyResult) -> float:
    match = re.search(r"touch_ns mean=(\d+)", result.stdout)
    if match is None:
        raise EmuError(f"fault_latency printed no latency: {result.stdout!r}")
    return int(match.group(1)) / 1e6


def _misses(report: dict[str, Any]) -> int:
    model = report["tlb"]["model"]
    return model["dtlb.misses"] + model["itlb.misses"]


def _waitpage(report: dict[str, Any]) -> dict[str, int]:
    return {t["name"]: t["cycles_by_state"].get("WAITPAGE", 0) for t in report["threads"]
            if t["name"].startswith(("main", "thread"))}


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_latency(points: dict[str, dict[str, list[tuple[float, float]]]], path: Path) -> None:
    """(a): latency (ms) against same-priority spinners, a line per policy, a panel per arch."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(points), figsize=(6 * len(points), 4), squeeze=False)
    for ax, (arch, lines) in zip(axes[0], points.items()):
        for (label, xy), style, marker in zip(lines.items(), ("-", "--", ":", "-."), "osD^"):
            ax.plot([x for x, _ in xy], [y for _, y in xy], marker=marker, linestyle=style,
                    label=label)  # demand and locked coincide: told apart by the line style
        ax.set_title(f"{arch}: first-touch fault latency")
        ax.set_xlabel("CPU-bound threads READY at the toucher's priority")
        ax.set_ylabel("latency per fault (ms, simulated)")
        ax.set_xticks(list(SPINNERS))
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_grouped(data: dict[str, dict[str, dict[str, float]]], path: Path, title: str,
                 ylabel: str) -> None:
    """Grouped bars: a panel per arch, a group per key, a bar per series."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(data), figsize=(6 * len(data), 4), squeeze=False)
    for ax, (arch, series) in zip(axes[0], data.items()):
        groups = list(next(iter(series.values())))
        width = 0.8 / len(series)
        for i, (name, values) in enumerate(series.items()):
            ax.bar([g + i * width for g in range(len(groups))], [values[k] for k in groups],
                   width, label=name)
        ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups)
        ax.set_title(f"{arch}: {title}")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 4))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_prefault(data: dict[str, dict[str, list[tuple[int, int, int]]]], path: Path) -> None:
    """(d): faults saved and pages never used against prefault pages, per access pattern."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(data), figsize=(6 * len(data), 4), squeeze=False)
    for ax, (arch, series) in zip(axes[0], data.items()):
        for what, rows in series.items():
            xs = [n for n, _, _ in rows]
            ax.plot(xs, [s for _, s, _ in rows], marker="o", label=f"{what}: faults saved")
            ax.plot(xs, [u for _, _, u in rows], marker="x", linestyle="--",
                    label=f"{what}: pages never used")
        ax.set_xscale("symlog", base=2)
        ax.set_xticks(list(PREFAULT_PAGES), [str(n) for n in PREFAULT_PAGES])
        ax.set_title(f"{arch}: prefault heuristic (16 MiB anonymous)")
        ax.set_xlabel("pages set up after each fault")
        ax.set_ylabel("pages")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def analyse(runs: Sequence[Run], results: Sequence[PolicyResult], out: Path,
            seconds: float) -> str:
    """Draw the four plots into `out` and return the markdown report."""
    by = lambda exp: [(r, res) for r, res in zip(runs, results) if r.experiment == exp]  # noqa
    arches = list(dict.fromkeys(r.arch for r in runs))
    latency: dict[str, dict[str, list[tuple[float, float]]]] = {a: {} for a in arches}
    for run, res in by("a"):
        latency[run.arch].setdefault(run.label, []).append((run.x, _touch_ms(res)))
    waitpage = {a: {} for a in arches}      # type: dict[str, dict[str, dict[str, float]]]
    for run, res in by("b"):
        waitpage[run.arch][run.label] = {k: v / 1e6 for k, v in _waitpage(res.report).items()}
    large = {a: {"TLB misses": {}, "cycles": {}} for a in arches}  # type: dict[str, Any]
    large_rows = []
    for run, res in by("c"):
        profile, v = run.label.split()
        large[run.arch]["TLB misses"][run.label] = _misses(res.report)
        large[run.arch]["cycles"][run.label] = res.report["cycles"]
        large_rows.append((run.arch, profile, v, _misses(res.report), res.report["cycles"],
                           res.report["tlb"]["walkCycles"]))
    prefault: dict[str, dict[str, list[tuple[int, int, int]]]] = {a: {} for a in arches}
    for run, res in by("d"):
        rows = prefault[run.arch].setdefault(run.label, [])
        faults = res.report["faults"]["by_cause"]["zero_fill"]
        base = faults if run.x == 0 else rows[0][3]
        rows.append((int(run.x), base - faults, res.report["mm"]["prefaulted_unused"], base))
    prefault_xy = {a: {w: [(n, s, u) for n, s, u, _ in rows] for w, rows in series.items()}
                   for a, series in prefault.items()}
    plot_latency(latency, out / "fault_latency.png")
    plot_grouped(waitpage, out / "waitpage.png", "cycles in WAITPAGE per thread (thread_touch "
                 f"{' '.join(THREADS)})", "Mcycles")
    plot_grouped({a: {"TLB misses (L1 I+D)": {k: float(v) for k, v in
                                              large[a]["TLB misses"].items()}} for a in arches},
                 out / "large_pages.png", "sweep 32 MiB, detailed TLB", "TLB misses")
    plot_prefault(prefault_xy, out / "prefault.png")
    return report_text(latency, waitpage, large_rows, prefault, seconds)


def report_text(latency, waitpage, large_rows, prefault, seconds: float) -> str:  # type: ignore[no-untyped-def]
    """The markdown report."""
    lines = ["# emu demo: no fault of your own", "",
             f"Made by `emu demo` in {seconds:.0f} s. Every number is simulated (the default "
             "profile's 1 GHz clock and 4 ms time slice unless a profile is named) and the "
             "same on any machine.", "",
             "## (a) Fault latency and same-priority threads", "",
             "`fault_latency N 2 10 10`: the toucher and N spinners at priority 10; the mean "
             "time of a first touch (ms). QNX's procnto takes the pulse's priority and joins "
             "the end of its ready queue, and the faulting thread joins it again when the page "
             "is ready: 2N time slices. Locked memory (-ml) is resident, but its first write "
             "still faults (write tracking), so it pays the same; superlocked memory (-mL) "
             "never faults. A fixed high procnto priority removes the first N slices only: "
             "the faulting thread still rejoins the end of its queue.", "",
             "![fault latency](fault_latency.png)", ""]
    for arch, series in latency.items():
        lines += [f"| {arch} | " + " | ".join(f"N={n}" for n in SPINNERS) + " |",
                  "|---|" + "---|" * len(SPINNERS)]
        lines += [f"| {label} | " + " | ".join(f"{ms:.3f}" for _, ms in xy) + " |"
                  for label, xy in series.items()]
        lines.append("")
    lines += ["## (b) Time in STATE_WAITPAGE per thread", "",
              f"`thread_touch {' '.join(THREADS)}`: four threads first-touch their own 128 "
              "pages at once; their faults queue on one memory-manager thread. Mcycles in "
              "WAITPAGE:", "", "![waitpage](waitpage.png)", ""]
    for arch, series in waitpage.items():
        threads = list(next(iter(series.values())))
        lines += [f"| {arch} | " + " | ".join(threads) + " |", "|---|" + "---|" * len(threads)]
        lines += [f"| {p} | " + " | ".join(f"{v[t]:.2f}" for t in threads) + " |"
                  for p, v in series.items()]
        lines.append("")
    lines += ["## (c) Large pages in the detailed TLB model", "",
              f"`sweep {' '.join(SWEEP)}` under `--tlb detailed`: one access per 4 KiB page of "
              "32 MiB, 64 passes; `v` lets committed memory coalesce into 2 MiB pages once a "
              "range is set up (so the first pass misses either way), `~v` keeps 4 KiB pages. "
              "Walks mostly hit the page-walk cache, so a miss costs the L2 TLB lookup and "
              "the last level's read.", "", "![large pages](large_pages.png)", "",
              "| arch | profile | pages | TLB misses (L1 I+D) | cycles | walk cycles |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {a} | {p} | {'2 MiB (v)' if v == 'v' else '4 KiB (~v)'} | {m:,} | {c:,} | "
              f"{w:,} |" for a, p, v, m, c, w in large_rows]
    lines += ["", "## (d) The prefault heuristic's trade-off", "",
              "`sweep 16 STRIDE 1` with `--prefault anon=N`, small pages (a large page has "
              "one accessed bit). Touching one page in four, pages set up ahead are mostly "
              "never used; touching every page, they all are.", "",
              "![prefault](prefault.png)", "",
              "| arch | pattern | N | zero-fill faults | saved | set up, never used |",
              "|---|---|---|---|---|---|"]
    for arch, series in prefault.items():
        for what, rows in series.items():
            lines += [f"| {arch} | {what} | {n} | {base - s:,} | {s:,} | {u:,} |"
                      for n, s, u, base in rows]
    return "\n".join(lines) + "\n"


def run_demo(firmware: Path, out: Path, arches: Sequence[str], jobs: int,
             say: Callable[[str], None] = print) -> Path:
    """Run the flagship experiment into `out`; the report's path."""
    missing = [a for a in arches for p in ("fault_latency", "thread_touch", "sweep")
               if not (firmware / a / p).is_file()]
    if missing:
        raise EmuError(f"the demo needs the firmware built in {firmware} (make -C firmware)")
    out.mkdir(parents=True, exist_ok=True)
    runs = plan(firmware, arches)
    say(f"emu demo: {len(runs)} runs on {jobs} worker(s) ...")
    start = time.perf_counter()
    results = run_all(runs, jobs)
    seconds = time.perf_counter() - start
    report = analyse(runs, results, out, seconds)
    (out / "REPORT.md").write_text(report)
    say(report)
    say(f"emu demo: report and plots in {out} ({seconds:.0f} s; "
        f"median run {statistics.median(r.report['host']['wall_seconds'] for r in results):.2f} s)")
    return out / "REPORT.md"
