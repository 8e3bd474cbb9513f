"""Run statistics: an instrument that turns the event stream into the `--stats` report.

The report is a function of the events alone (RunStart and RunEnd carry the machine's
own counters), so two runs with the same events give the same report. Everything
outside its `host` key comes from the simulated machine.
"""
from __future__ import annotations

import math
import signal
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from emu.trace.events import (Deadlock, DeviceRequest, Event, EventBus, FaultBegin, FaultEnd,
                              InjectArmed, InjectFired, LargePage, LimitReached, Lock, Populate,
                              Prefault, Preempt, ProcessCreate, ProcessExit, RunEnd, RunStart,
                              SchedParams, SignalAction, StateChange, Switch, ThreadCreate)

HITS_KEPT = 1000        # injected-fault hits listed in the report (all are counted)
FAULT_CAUSES = ("zero_fill", "lazy_alloc", "page_in", "cached", "write_track", "cow", "sigbus",
                "sigsegv", "spurious")
"""The keys of `faults.by_cause` (emu.mm.fault.FaultCause values)."""


@dataclass
class ThreadRecord:
    """What the report says of one thread."""

    pid: int
    tid: int
    name: str
    priority: int
    policy: str
    state: str
    since: int
    by_state: Counter[str] = field(default_factory=Counter)


@dataclass
class RunStats:
    """Counters of one run, fed by kernel events only."""

    faults_by_cause: Counter[str] = field(default_factory=lambda: Counter(
        {c: 0 for c in FAULT_CAUSES}))
    signals_delivered: Counter[str] = field(default_factory=Counter)
    signals_handled: Counter[str] = field(default_factory=Counter)
    armed: list[InjectArmed] = field(default_factory=list)
    hits: list[InjectFired] = field(default_factory=list)
    fired_by_kind: Counter[str] = field(default_factory=Counter)
    ended_by: str | None = None             # "deadlock", "cycle_limit", "instruction_limit"
    context_switches: int = 0
    preemptions: int = 0
    fault_latencies: list[int] = field(default_factory=list)
    threads: dict[tuple[int, int], ThreadRecord] = field(default_factory=dict)
    mm: Counter[str] = field(default_factory=Counter)
    start: RunStart | None = None
    end: RunEnd | None = None
    exits: dict[int, ProcessExit] = field(default_factory=dict)
    _faulted_at: dict[tuple[int, int], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._dispatch = {
            StateChange: self._state, ThreadCreate: self._thread_create, Switch: self._switch,
            Preempt: self._preempt, FaultBegin: self._fault_begin, FaultEnd: self._fault_end,
            SignalAction: self._signal, SchedParams: self._sched_params,
            DeviceRequest: self._device, Lock: self._lock, Populate: self._populate,
            LargePage: self._large_page, Prefault: self._prefault, ProcessExit: self._process_exit,
            RunStart: self._run_start, RunEnd: self._run_end, ProcessCreate: lambda e: None,
            InjectArmed: self.armed.append, InjectFired: self._fired, Deadlock: self._deadlock,
            LimitReached: self._limit}

    @property
    def kinds(self) -> tuple[type[Event], ...]:
        """The event kinds this instrument reads."""
        return tuple(self._dispatch)

    def subscribe_to(self, bus: EventBus) -> None:
        """Subscribe one handler per kind (cheaper than dispatching every event here)."""
        for kind, handler in self._dispatch.items():
            bus.subscribe(handler, (kind,))

    def __call__(self, event: Event) -> None:
        """Instrument hook: account one kernel event."""
        self._dispatch[type(event)](event)

    def _state(self, event: StateChange) -> None:
        key = (event.pid, event.tid)
        record = self.threads[key]
        ts = event.ts
        record.by_state[record.state] += ts - record.since
        record.state = state = event.new
        record.since = ts
        if state == "RUNNING" and key in self._faulted_at:
            self.fault_latencies.append(ts - self._faulted_at.pop(key))

    def _thread_create(self, event: ThreadCreate) -> None:
        self.threads[(event.pid, event.tid)] = ThreadRecord(
            event.pid, event.tid, event.name, event.priority, event.policy, event.state,
            event.ts)

    def _sched_params(self, event: SchedParams) -> None:
        record = self.threads[(event.pid, event.tid)]
        record.priority, record.policy = event.priority, event.policy

    def _switch(self, event: Switch) -> None:
        self.context_switches += 1

    def _preempt(self, event: Preempt) -> None:
        self.preemptions += 1

    def _fault_begin(self, event: FaultBegin) -> None:
        if event.origin == "user":
            self._faulted_at[(event.pid, event.tid)] = event.ts

    def _fault_end(self, event: FaultEnd) -> None:
        self.faults_by_cause[event.cause] += 1
        self._count_work(event.cause, 1)

    def _count_work(self, cause: str, pages: int) -> None:
        if cause == "lazy_alloc":
            self.mm["lazy_allocations"] += pages
        elif cause == "cow":
            self.mm["cow_copies"] += pages

    def _populate(self, event: Populate) -> None:
        for cause, pages in event.causes:
            self._count_work(cause, pages)

    def _lock(self, event: Lock) -> None:
        self.mm["locked_pages"] += event.pages

    def _device(self, event: DeviceRequest) -> None:
        if not event.ok:
            return                  # a failed transfer wrote nothing
        if event.reason == "msync":
            self.mm["msync_pages_written"] += event.pages
        elif event.reason == "write_back":
            self.mm["pages_written_back"] += event.pages

    def _prefault(self, event: Prefault) -> None:
        self.mm["prefaulted_pages"] += event.pages

    def _large_page(self, event: LargePage) -> None:
        self.mm["large_pages_formed" if event.formed else "large_pages_split"] += 1

    def _signal(self, event: SignalAction) -> None:
        self.signals_delivered[signal_name(event.signal)] += 1
        if event.action == "handler":
            self.signals_handled[signal_name(event.signal)] += 1

    def _fired(self, event: InjectFired) -> None:
        self.fired_by_kind[event.fault_kind] += 1
        if len(self.hits) < HITS_KEPT:
            self.hits.append(event)

    def _deadlock(self, event: Deadlock) -> None:
        self.ended_by = self.ended_by or "deadlock"

    def _limit(self, event: LimitReached) -> None:
        self.ended_by = self.ended_by or f"{event.limit.rstrip('s')}_limit"

    def _process_exit(self, event: ProcessExit) -> None:
        self.exits[event.pid] = event

    def _run_start(self, event: RunStart) -> None:
        self.start = event

    def _run_end(self, event: RunEnd) -> None:
        self.end = event
        for record in self.threads.values():       # close every thread's current interval
            record.by_state[record.state] += event.ts - record.since
            record.since = event.ts

    def latency_summary(self) -> dict[str, float | int]:
        """count, mean, p50, p99 and max of fault latencies (cycles from fault to running again)."""
        values = sorted(self.fault_latencies)
        if not values:
            return {"count": 0, "mean": 0, "p50": 0, "p99": 0, "max": 0}

        def pct(p: float) -> int:          # nearest-rank percentile
            return values[max(0, math.ceil(p * len(values)) - 1)]
        return {"count": len(values), "mean": round(sum(values) / len(values), 1),
                "p50": pct(0.50), "p99": pct(0.99), "max": values[-1]}

    def report(self, host: dict[str, Any]) -> dict[str, Any]:
        """The `--stats` JSON document (after RunEnd); `host` holds the host-side figures."""
        start, end = self.start, self.end
        assert start is not None and end is not None, "the run has not ended"
        status = self.exits.get(start.pid)
        code, signo = (status.code, status.signal) if status is not None else (0, 0)
        by_cause = dict(sorted(self.faults_by_cause.items()))
        mm_keys = ("lazy_allocations", "locked_pages", "cow_copies", "msync_pages_written",
                   "pages_written_back", "large_pages_formed", "large_pages_split")
        return {
            "arch": start.arch,
            "program": start.program,
            "exit": {"code": code, "signal": signal_name(signo) if signo else None,
                     "reason": self.ended_by or ("signal" if signo else "exit")},
            "instructions": end.instructions,
            "cycles": end.cycles,
            "tlb": {"fills": end.tlb_fills, "flushes": end.tlb_flushes,
                    "page_flushes": end.tlb_page_flushes, "walks": end.walks,
                    "walkCycles": end.walk_cycles,
                    "walksByLevels": dict(zip(("1", "2", "3", "4"), end.walks_by_levels)),
                    "pageSizes": dict(zip(("4K", "64K", "2M"), end.fills_by_size)),
                    **({"model": dict(end.tlb_model)} if end.tlb_model else {})},
            "faults": {"total": sum(by_cause.values()), "by_cause": by_cause},
            "fault_latency_cycles": self.latency_summary(),
            "sched": {"context_switches": self.context_switches, "preemptions": self.preemptions},
            "threads": [{"pid": r.pid, "tid": r.tid, "name": r.name, "priority": r.priority,
                         "policy": r.policy, "cycles_by_state": dict(sorted(r.by_state.items()))}
                        for r in self.threads.values()],
            "mm": {"frames_total": start.frames_total, "frames_peak": end.frames_peak,
                   "page_table_frames": end.page_table_frames_peak,
                   "page_table_frames_at_exit": end.page_table_frames_end,
                   "prefaulted_pages": self.mm["prefaulted_pages"],
                   "prefaulted_unused": end.prefault_unused,
                   "bad_page_states": end.bad_page_states,
                   **{k: self.mm[k] for k in mm_keys}},
            "signals": {"delivered": dict(sorted(self.signals_delivered.items())),
                        "handled": dict(sorted(self.signals_handled.items()))},
            "inject": {"armed": len(self.armed),
                       "faults": [{"fault": a.fault, "kind": a.fault_kind, "spec": a.spec}
                                  for a in self.armed],
                       "fired": dict(sorted(self.fired_by_kind.items())),
                       "hits": [{"cycle": h.ts, "pid": h.pid, "tid": h.tid, "pc": h.pc,
                                 "fault": h.fault, "kind": h.fault_kind, "detail": h.detail}
                                for h in self.hits]},
            "syscalls": dict(sorted(end.syscalls)),
            "host": host,
        }


def signal_name(signo: int) -> str:
    """'SIGSEGV' for 11, and so on."""
    try:
        return signal.Signals(signo).name
    except ValueError:
        return f"SIG{signo}"
