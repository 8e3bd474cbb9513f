"""`emu compare`: one program under several paging policies, side by side.

A policy is a name and a string of `emu run` options (`locked=-ml`, `a53="--profile
cortex-a53 --tlb detailed"`, `demand=` for none). Every policy's run is an ordinary,
hermetic `emu run` of the same program and arguments, so its numbers are exactly those of
running it alone; the runs go to a pool of local processes (one per core by default),
with the guest's output thrown away, and the table is printed when all are done.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shlex
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from emu.config import RunConfig
from emu.errors import EmuError

DEFAULT_POLICIES: tuple[tuple[str, str], ...] = (
    ("demand", ""),                     # QNX demand paging: committed at mmap, set up at touch
    ("locked", "-ml"),                  # every process mlockall'd
    ("superlocked", "-mL"),             # everything set up at once: no faults
    ("nolarge", "-m~v"),                # no large pages
    ("prefault", "--prefault all=15"),  # the prefault heuristic at 15 pages for every kind
    ("detailed", "--tlb detailed"),     # the profile's TLBs modelled access by access
)


@dataclass(frozen=True)
class Policy:
    """A named set of `emu run` options."""

    name: str
    options: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Policy:
        """'NAME=OPTIONS' (OPTIONS split as a shell would); EmuError if malformed."""
        name, sep, options = text.partition("=")
        if not sep or not name or not name.replace("-", "").replace("_", "").isalnum():
            raise EmuError(f"--policy expects NAME=OPTIONS (NAME of letters, digits, - or _), "
                           f"got {text!r}")
        try:
            return cls(name, tuple(shlex.split(options)))
        except ValueError as exc:
            raise EmuError(f"--policy {name}: {exc}") from None


@dataclass
class PolicyResult:
    """One policy's run: its --stats report, or why it could not run."""

    policy: Policy
    report: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    stdout: str = ""                # what the guest wrote to its standard output

    def row(self) -> dict[str, Any]:
        """The comparison's columns for this run."""
        if self.error is not None:
            return {"policy": self.policy.name, "error": self.error}
        r = self.report
        threads = r["threads"]
        tlb = r["tlb"]
        model = tlb.get("model", {})
        misses = (model["itlb.misses"] + model["dtlb.misses"] if model else tlb["fills"])
        exit_ = r["exit"]
        return {
            "policy": self.policy.name,
            "options": " ".join(self.policy.options),
            "exit": exit_["signal"] or exit_["code"],
            "cycles": r["cycles"],
            "instructions": r["instructions"],
            "faults": r["faults"]["total"],
            "faults_by_cause": {k: v for k, v in r["faults"]["by_cause"].items() if v},
            "waitpage_cycles": sum(t["cycles_by_state"].get("WAITPAGE", 0) for t in threads),
            "fault_latency_p50": r["fault_latency_cycles"]["p50"],
            "fault_latency_p99": r["fault_latency_cycles"]["p99"],
            "tlb_misses": misses,
            "walk_cycles": tlb["walkCycles"],
            "frames_peak": r["mm"]["frames_peak"],
        }


COLUMNS = ("policy", "exit", "cycles", "instructions", "faults", "waitpage_cycles",
           "fault_latency_p50", "fault_latency_p99", "tlb_misses", "walk_cycles", "frames_peak")
HEADINGS = ("policy", "exit", "cycles", "instructions", "faults", "cycles in WAITPAGE",
            "fault p50", "fault p99", "TLB misses", "walk cycles", "frames peak")


def run_one(config: RunConfig) -> tuple[dict[str, Any], str]:
    """Run `config` with the guest's stdin and stderr on /dev/null and its stdout in a
    temporary file; its report and that output."""
    from emu.machine import run_program

    devnull = os.open(os.devnull, os.O_RDWR)
    with tempfile.TemporaryFile() as out:
        saved = [os.dup(fd) for fd in (0, 1, 2)]
        try:
            for fd, target in ((0, devnull), (1, out.fileno()), (2, devnull)):
                os.dup2(target, fd)
            report = run_program(config).report
        finally:
            for fd, copy in zip((0, 1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)
            os.close(devnull)
        out.seek(0)
        return report, out.read().decode(errors="replace")


def _run_safely(config: RunConfig) -> tuple[dict[str, Any], str | None, str]:
    try:
        report, stdout = run_one(config)
        return report, None, stdout
    except EmuError as exc:
        return {}, str(exc), ""


def compare(configs: Sequence[tuple[Policy, RunConfig]], jobs: int,
            progress: Callable[[PolicyResult], None] = lambda result: None) -> list[PolicyResult]:
    """Run every policy's config (in `jobs` worker processes; 1: in this one) and return
    their results in the policies' order; `progress` hears of each as it ends."""
    results = {policy.name: PolicyResult(policy) for policy, _ in configs}
    if jobs <= 1 or len(configs) == 1:
        for policy, config in configs:
            result = results[policy.name]
            result.report, result.error, result.stdout = _run_safely(config)
            progress(result)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(_run_safely, config): policy for policy, config in configs}
            for future in as_completed(futures):
                result = results[futures[future].name]
                result.report, result.error, result.stdout = future.result()
                progress(result)
    return [results[policy.name] for policy, _ in configs]


def table_text(results: Sequence[PolicyResult], program: str) -> str:
    """The comparison as a rich table rendered to text."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"emu compare: {program}", title_justify="left")
    for heading in HEADINGS:
        table.add_column(heading, justify="left" if heading == "policy" else "right")
    for result in results:
        row = result.row()
        if "error" in row:
            table.add_row(row["policy"], f"[red]{row['error']}[/red]")
            continue
        table.add_row(*(f"{row[c]:,}" if isinstance(row[c], int) else str(row[c])
                        for c in COLUMNS))
    causes = [f"{r.policy.name}: " + (", ".join(f"{k} {v}" for k, v in
                                               r.row()["faults_by_cause"].items()) or "none")
              for r in results if r.error is None]
    out = io.StringIO()
    Console(file=out, width=160, force_terminal=False, color_system=None).print(table)
    return out.getvalue() + "deferred faults by cause: " + "; ".join(causes) + "\n"


def write_csv(results: Sequence[PolicyResult], path: str) -> None:
    """One row per policy, the table's columns plus options and faults by cause."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["policy", "options", *COLUMNS[1:], "faults_by_cause"])
        for result in results:
            row = result.row()
            if "error" in row:
                writer.writerow([row["policy"], "", "error: " + row["error"]])
                continue
            writer.writerow([row["policy"], row["options"], *(row[c] for c in COLUMNS[1:]),
                             json.dumps(row["faults_by_cause"], sort_keys=True)])


def write_json(results: Sequence[PolicyResult], path: str) -> None:
    """Every policy's row and whole --stats report."""
    doc = [{"policy": r.policy.name, "options": list(r.policy.options), "error": r.error,
            "row": r.row(), "report": r.report} for r in results]
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")


def write_plot(results: Sequence[PolicyResult], path: str, program: str) -> None:
    """Bar charts of cycles, deferred faults, cycles in WAITPAGE and TLB misses per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r.row() for r in results if r.error is None]
    names = [row["policy"] for row in rows]
    panels = (("cycles", "cycles"), ("faults", "deferred faults"),
              ("waitpage_cycles", "cycles in WAITPAGE"), ("tlb_misses", "TLB misses"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6))
    for ax, (key, title) in zip(axes, panels):
        ax.bar(names, [row[key] for row in rows], color="#4C72B0")
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=45)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 4))
    fig.suptitle(f"emu compare: {Path(program).name}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def progress_bar(total: int) -> tuple[Callable[[PolicyResult], None], Callable[[], None]]:
    """A rich progress bar on stderr: (advance, close)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=Console(file=sys.stderr),
                   transient=True)
    task = bar.add_task("policies", total=total)
    bar.start()

    def advance(result: PolicyResult) -> None:
        bar.update(task, advance=1, description=result.policy.name)

    return advance, bar.stop
