"""Run statistics: an instrument that turns kernel events into the `--stats` report.

Everything outside the report's `host` key comes from the simulated machine,
so two runs of the same program with the same inputs give the same report.
"""
from __future__ import annotations

import math
import signal
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from emu.mm.fault import FaultCause
from emu.trace.events import Event, EventKind


@dataclass
class ThreadTimes:
    """Cycles a thread spent in each state."""

    state: str
    since: int
    by_state: Counter[str] = field(default_factory=Counter)


@dataclass
class RunStats:
    """Counters of one run, fed by kernel events (and fault causes from the memory manager)."""

    faults_by_cause: Counter[str] = field(
        default_factory=lambda: Counter({c.value: 0 for c in FaultCause}))
    signals_delivered: Counter[str] = field(default_factory=Counter)
    context_switches: int = 0
    preemptions: int = 0
    fault_latencies: list[int] = field(default_factory=list)
    threads: dict[tuple[int, int], ThreadTimes] = field(default_factory=dict)
    _faulted_at: dict[tuple[int, int], int] = field(default_factory=dict)

    def count_fault(self, cause: FaultCause) -> None:
        """One fault resolved (or turned into a signal), by cause."""
        self.faults_by_cause[cause.value] += 1

    def on_event(self, event: Event) -> None:
        """Instrument hook: account one kernel event."""
        kind = event.kind
        if kind is EventKind.STATE:
            key = (event.pid, event.tid)
            times = self.threads[key]
            ts = event.ts
            times.by_state[times.state] += ts - times.since
            times.state = state = event.data["to"]
            times.since = ts
            if state == "RUNNING" and key in self._faulted_at:
                self.fault_latencies.append(ts - self._faulted_at.pop(key))
            return
        key = (event.pid, event.tid)
        if kind is EventKind.THREAD_CREATE:
            self.threads[key] = ThreadTimes(event.data["state"], event.ts)
        elif kind is EventKind.SWITCH:
            self.context_switches += 1
        elif kind is EventKind.PREEMPT:
            self.preemptions += 1
        elif kind is EventKind.FAULT_BEGIN and event.data.get("origin") == "user":
            self._faulted_at[key] = event.ts
        elif kind is EventKind.SIGNAL:
            self.signals_delivered[signal_name(event.data["signal"])] += 1

    def finish(self, now: int) -> None:
        """Close every thread's current state interval at `now`."""
        for times in self.threads.values():
            times.by_state[times.state] += now - times.since
            times.since = now

    def latency_summary(self) -> dict[str, float | int]:
        """count, mean, p50, p99 and max of fault latencies (cycles from fault to running again)."""
        values = sorted(self.fault_latencies)
        if not values:
            return {"count": 0, "mean": 0, "p50": 0, "p99": 0, "max": 0}

        def pct(p: float) -> int:          # nearest-rank percentile
            return values[max(0, math.ceil(p * len(values)) - 1)]
        return {"count": len(values), "mean": round(sum(values) / len(values), 1),
                "p50": pct(0.50), "p99": pct(0.99), "max": values[-1]}


def signal_name(signo: int) -> str:
    """'SIGSEGV' for 11, and so on."""
    try:
        return signal.Signals(signo).name
    except ValueError:
        return f"SIG{signo}"


def build_report(*, arch: str, program: str, exit_code: int, exit_signal: int,
                 instructions: int, cycles: int, tlb_fills: int, stats: RunStats,
                 mm: dict[str, int], syscalls: dict[str, int],
                 threads: list[dict[str, Any]], host: dict[str, Any]) -> dict[str, Any]:
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
        "fault_latency_cycles": stats.latency_summary(),
        "sched": {"context_switches": stats.context_switches, "preemptions": stats.preemptions},
        "threads": threads,
        "mm": mm,
        "signals": {"delivered": dict(sorted(stats.signals_delivered.items()))},
        "syscalls": dict(sorted(syscalls.items())),
        "host": host,
    }
