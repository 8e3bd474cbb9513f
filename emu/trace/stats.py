"""Run statistics: counters the kernel updates and the JSON report of `--stats`.

Everything outside the `host` key comes from the simulated machine, so two
runs of the same program with the same inputs give the same report.
"""
from __future__ import annotations

import signal
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from emu.mm.fault import FaultCause


@dataclass
class RunStats:
    """Counters of one run."""

    faults_by_cause: Counter[str] = field(
        default_factory=lambda: Counter({c.value: 0 for c in FaultCause}))
    signals_delivered: Counter[str] = field(default_factory=Counter)

    def count_fault(self, cause: FaultCause) -> None:
        """One fault that reached the kernel, by cause."""
        self.faults_by_cause[cause.value] += 1

    def count_signal(self, signo: int) -> None:
        """One signal delivered (or acted on by default)."""
        self.signals_delivered[signal_name(signo)] += 1


def signal_name(signo: int) -> str:
    """'SIGSEGV' for 11, and so on."""
    try:
        return signal.Signals(signo).name
    except ValueError:
        return f"SIG{signo}"


def build_report(*, arch: str, program: str, exit_code: int, exit_signal: int,
                 instructions: int, cycles: int, tlb_fills: int, stats: RunStats,
                 frames_total: int, frames_peak: int, syscalls: dict[str, int],
                 host: dict[str, Any]) -> dict[str, Any]:
    """The `--stats` JSON document."""
    by_cause = dict(sorted(stats.faults_by_cause.items()))
    return {
        "arch": arch,
        "program": program,
        "exit": {"code": exit_code, "signal": signal_name(exit_signal) if exit_signal else None},
        "instructions": instructions,
        "cycles": cycles,
        "tlb": {"fills": tlb_fills},
        "faults": {"total": sum(by_cause.values()), "by_cause": by_cause},
        "mm": {"frames_total": frames_total, "frames_peak": frames_peak},
        "signals": {"delivered": dict(sorted(stats.signals_delivered.items()))},
        "syscalls": dict(sorted(syscalls.items())),
        "host": host,
    }
