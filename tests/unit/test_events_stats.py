"""EventBus fan-out, the JSON-lines writer, and RunStats: the --stats report from events alone."""
from __future__ import annotations

import dataclasses
import io
import json
import signal

import pytest

from emu.kernel.process import Process, Thread, ThreadState
from emu.kernel.sched import Scheduler
from emu.trace.events import (EVENT_KINDS, DeviceRequest, Event, EventBus, FaultBegin, FaultEnd,
                              JsonLinesWriter, LargePage, Lock, Populate, Preempt, Prefault, ProcessExit,
                              Pulse, RunEnd, RunStart, SignalAction, StateChange, Switch,
                              ThreadCreate)
from emu.trace.stats import FAULT_CAUSES, RunStats, signal_name

S = ThreadState


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)


# ---- the event kinds ----

def test_every_kind_is_a_frozen_dataclass_with_a_distinct_name():
    assert len({cls.kind for cls in EVENT_KINDS}) == len(EVENT_KINDS)
    event = Preempt(1, 2, 3, "slice")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.ts = 5  # type: ignore[misc]


# ---- EventBus ----

def test_bus_without_instruments_accepts_events():
    bus = EventBus()
    assert not bus.wants(Pulse)
    bus.publish(Pulse(1, 1, 1, 1, 10, None, None))


def test_every_instrument_sees_every_event_in_order():
    bus = EventBus()
    a, b = Recorder(), Recorder()
    bus.subscribe(a)
    bus.subscribe(b)
    bus.publish(ThreadCreate(1, 2, 3, S.READY, 10, "RR", "t"))
    bus.publish(Switch(5, 2, 3, None, None))
    for rec in (a, b):
        assert [(e.ts, type(e), e.pid, e.tid) for e in rec.events] == [
            (1, ThreadCreate, 2, 3), (5, Switch, 2, 3)]


def test_instruments_subscribe_per_kind():
    bus = EventBus()
    pulses = Recorder()
    bus.subscribe(pulses, (Pulse,))
    assert bus.wants(Pulse) and not bus.wants(Switch)
    bus.publish(Switch(1, 1, 1, None, None))
    bus.publish(Pulse(2, 1, 1, 7, 10, 1, 1))
    assert [type(e) for e in pulses.events] == [Pulse]
    bus.unsubscribe(pulses)
    assert not bus.wants(Pulse)


def test_instruments_subscribed_later_see_only_later_events():
    bus = EventBus()
    late = Recorder()
    bus.publish(Pulse(1, 1, 1, 1, 10, None, None))
    bus.subscribe(late)
    bus.publish(Pulse(2, 1, 1, 2, 10, None, None))
    assert [e.ts for e in late.events] == [2]


# ---- JSON lines ----

def test_json_line_has_ts_kind_pid_tid_then_fields():
    out = io.StringIO()
    bus = EventBus()
    bus.subscribe(JsonLinesWriter(out))
    bus.publish(FaultBegin(1234, 5, 6, 9, 0x1000, "write", "user"))
    line = out.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    record = json.loads(line)
    assert list(record) == ["ts", "kind", "pid", "tid", "fault_id", "vaddr", "access", "origin"]
    assert record == {"ts": 1234, "kind": "fault_begin", "pid": 5, "tid": 6, "fault_id": 9,
                      "vaddr": 4096, "access": "write", "origin": "user"}


def test_json_line_is_compact():
    assert Preempt(1, 2, 3, "slice").to_json() == \
        '{"ts":1,"kind":"preempt","pid":2,"tid":3,"reason":"slice"}'


def test_thread_states_serialize_as_their_names_under_from_and_to():
    record = json.loads(StateChange(7, 1, 2, S.RUNNING, S.WAITPAGE).to_json())
    assert (record["from"], record["to"]) == ("RUNNING", "WAITPAGE")
    for state in ThreadState:
        assert json.loads(StateChange(0, 0, 0, state, state).to_json())["to"] == state.name


def test_one_line_per_event_from_a_real_scheduler():
    out = io.StringIO()
    bus = EventBus()
    bus.subscribe(JsonLinesWriter(out))
    sched = Scheduler(bus, lambda: 99, 100)
    proc = Process(pid=4, arch="aarch64", space=None, mem=None, root=None, exe_path="t")
    sched.admit(Thread(tid=4, process=proc, name="main"))
    sched.dispatch()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert records == [
        {"ts": 99, "kind": "thread_create", "pid": 4, "tid": 4, "state": "READY",
         "priority": 10, "policy": "RR", "name": "main"},
        {"ts": 99, "kind": "state", "pid": 4, "tid": 4, "from": "READY", "to": "RUNNING"},
    ]


# ---- RunStats ----

def feed(stats: RunStats, *events: Event) -> None:
    for event in events:
        stats(event)


def create(ts: int, tid: int, state: ThreadState = S.READY) -> Event:
    return ThreadCreate(ts, 1, tid, state, 10, "RR", "")


def state(ts: int, tid: int, old: ThreadState, new: ThreadState) -> Event:
    return StateChange(ts, 1, tid, old, new)


def fault(ts: int, tid: int, origin: str = "user") -> Event:
    return FaultBegin(ts, 1, tid, ts, 0x1000, "read", origin)


def end(ts: int, **counters: int) -> RunEnd:
    values = {"instructions": 0, "cycles": ts, "tlb_fills": 0, "tlb_flushes": 0,
              "tlb_page_flushes": 0, "frames_peak": 0, **counters}
    return RunEnd(ts, 1, 0, **values)


def test_cycles_by_state_accumulate_from_state_events_and_finish():
    stats = RunStats()
    feed(stats, create(0, 1),
         state(10, 1, S.READY, S.RUNNING),
         state(50, 1, S.RUNNING, S.WAITPAGE),
         state(80, 1, S.WAITPAGE, S.READY),
         state(90, 1, S.READY, S.RUNNING))
    stats(end(200))
    assert dict(stats.threads[(1, 1)].by_state) == {"READY": 20, "RUNNING": 150, "WAITPAGE": 30}


def test_cycles_by_state_add_up_to_the_thread_lifetime():
    stats = RunStats()
    feed(stats, create(100, 1), state(150, 1, S.READY, S.RUNNING),
         state(170, 1, S.RUNNING, S.DEAD))
    stats(end(1000))
    times = stats.threads[(1, 1)].by_state
    assert sum(times.values()) == 900 and times["DEAD"] == 830


def test_the_end_closes_every_interval_once():
    stats = RunStats()
    feed(stats, create(0, 1), end(100))
    assert stats.threads[(1, 1)].by_state["READY"] == 100


def test_threads_created_blocked_start_in_that_state():
    stats = RunStats()
    feed(stats, create(0, 1, S.RECEIVE), state(40, 1, S.RECEIVE, S.READY))
    stats(end(50))
    assert dict(stats.threads[(1, 1)].by_state) == {"RECEIVE": 40, "READY": 10}


def test_threads_are_kept_apart():
    stats = RunStats()
    feed(stats, create(0, 1), create(0, 2), state(10, 2, S.READY, S.RUNNING))
    stats(end(30))
    assert dict(stats.threads[(1, 1)].by_state) == {"READY": 30}
    assert dict(stats.threads[(1, 2)].by_state) == {"READY": 10, "RUNNING": 20}


def test_fault_latency_runs_from_user_fault_to_running_again():
    stats = RunStats()
    feed(stats, create(0, 1), state(0, 1, S.READY, S.RUNNING),
         fault(100, 1),
         state(100, 1, S.RUNNING, S.WAITPAGE),
         state(300, 1, S.WAITPAGE, S.READY),
         state(450, 1, S.READY, S.RUNNING))
    assert stats.fault_latencies == [350]


def test_fault_latency_ignores_kernel_origin_faults():
    stats = RunStats()
    feed(stats, create(0, 1), fault(5, 1, origin="kernel"), state(20, 1, S.READY, S.RUNNING))
    assert stats.fault_latencies == []


def test_fault_latency_ends_only_when_that_thread_runs():
    stats = RunStats()
    feed(stats, create(0, 1), create(0, 2), state(0, 1, S.READY, S.RUNNING),
         fault(10, 1), state(10, 1, S.RUNNING, S.WAITPAGE),
         state(20, 2, S.READY, S.RUNNING),           # another thread runs meanwhile
         state(30, 2, S.RUNNING, S.NANOSLEEP),
         state(40, 1, S.WAITPAGE, S.READY),
         state(60, 1, S.READY, S.RUNNING))
    assert stats.fault_latencies == [50]


def test_each_fault_is_measured_once():
    stats = RunStats()
    feed(stats, create(0, 1), fault(0, 1), state(0, 1, S.READY, S.WAITPAGE),
         state(5, 1, S.WAITPAGE, S.READY), state(7, 1, S.READY, S.RUNNING),
         state(9, 1, S.RUNNING, S.READY), state(11, 1, S.READY, S.RUNNING))
    assert stats.fault_latencies == [7]


def test_latency_summary_of_nothing():
    assert RunStats().latency_summary() == {"count": 0, "mean": 0, "p50": 0, "p99": 0, "max": 0}


def test_latency_summary_statistics():
    stats = RunStats(fault_latencies=[30, 10, 20])
    assert stats.latency_summary() == {"count": 3, "mean": 20.0, "p50": 20, "p99": 30, "max": 30}


def test_latency_summary_mean_is_rounded_to_one_decimal():
    stats = RunStats(fault_latencies=[1, 2, 2])
    assert stats.latency_summary()["mean"] == 1.7


def test_latency_summary_p99_of_many_samples():
    stats = RunStats(fault_latencies=list(range(1, 1001)))       # 1..1000
    summary = stats.latency_summary()
    assert summary["max"] == 1000 and summary["count"] == 1000
    assert 990 <= summary["p99"] <= 991
    assert 500 <= summary["p50"] <= 501


def test_latency_summary_uses_nearest_rank_percentiles():
    assert RunStats(fault_latencies=list(range(1, 101))).latency_summary()["p99"] == 99
    assert RunStats(fault_latencies=[10, 20]).latency_summary()["p50"] == 10


def test_context_switches_and_preemptions_are_counted():
    stats = RunStats()
    feed(stats, Switch(1, 1, 1, None, None), Switch(2, 1, 2, 1, 1), Preempt(3, 1, 2, "slice"),
         Switch(4, 1, 1, 1, 2))
    assert (stats.context_switches, stats.preemptions) == (3, 1)


def test_signals_are_counted_by_name():
    stats = RunStats()
    feed(stats, SignalAction(1, 1, 1, signal.SIGSEGV, 1, 0, "handler"),
         SignalAction(2, 1, 1, signal.SIGSEGV, 1, 0, "default"),
         SignalAction(3, 1, 1, signal.SIGBUS, 3, 0, "handler"))
    assert dict(stats.signals_delivered) == {"SIGSEGV": 2, "SIGBUS": 1}


def test_faults_by_cause_counts_fault_ends_and_starts_with_every_cause_at_zero():
    stats = RunStats()
    feed(stats, FaultEnd(1, 1, 1, 1, 0, "zero_fill", 0, "user"),
         FaultEnd(2, 1, 1, 2, 0, "zero_fill", 0, "kernel"))
    assert tuple(stats.faults_by_cause) == FAULT_CAUSES
    assert dict(stats.faults_by_cause) == {"zero_fill": 2, "lazy_alloc": 0, "page_in": 0,
                                           "cached": 0, "write_track": 0, "cow": 0,
                                           "sigbus": 0, "sigsegv": 0, "spurious": 0}


def test_signal_name():
    assert signal_name(11) == "SIGSEGV" and signal_name(7) == "SIGBUS"
    assert signal_name(200) == "SIG200"


def test_stats_from_a_real_scheduler_run():
    """The scheduler's own events drive RunStats: time per state, preemptions."""
    clock = [0]
    bus = EventBus()
    stats = RunStats()
    bus.subscribe(stats, stats.kinds)
    sched = Scheduler(bus, lambda: clock[0], 100)
    proc = Process(pid=1, arch="x86_64", space=None, mem=None, root=None, exe_path="t")
    a, b = Thread(tid=1, process=proc), Thread(tid=2, process=proc)
    sched.admit(a)
    sched.admit(b)
    sched.dispatch()                      # a runs 0..100
    clock[0] = 100
    sched.slice_used(a, 100)              # a to the end, b next
    sched.dispatch()
    clock[0] = 150
    sched.kill(b)
    sched.dispatch()
    stats(end(200))
    assert dict(stats.threads[(1, 1)].by_state) == {"RUNNING": 150, "READY": 50}
    assert dict(stats.threads[(1, 2)].by_state) == {"READY": 100, "RUNNING": 50, "DEAD": 50}
    assert stats.preemptions == 1


def test_the_report_comes_from_events_alone():
    stats = RunStats()
    feed(stats, create(0, 2), RunStart(0, 2, 0, "x86_64", "/bin/p", 64),
         FaultBegin(10, 1, 2, 1, 0x5000, "write", "user"),
         FaultEnd(20, 1, 2, 1, 0x5000, "lazy_alloc", 0, "user"),
         FaultEnd(21, 1, 2, 2, 0x6000, "cow", 0, "user"),
         Populate(22, 2, 2, 0, 0x3000, (("lazy_alloc", 2), ("zero_fill", 1)), 0),
         Lock(23, 2, 2, 0, 0x3000, 3),
         DeviceRequest(24, 2, 2, 1, True, 4, "msync", 90, True, 0),
         DeviceRequest(25, 2, 0, 2, True, 5, "write_back", 95, True, 0),
         DeviceRequest(26, 2, 2, 3, False, 1, "page_in", 99, True, 0),
         LargePage(27, 2, 0, 0x200000, 1 << 21, True),
         LargePage(28, 2, 0, 0x200000, 1 << 21, False),
         SignalAction(29, 2, 2, signal.SIGSEGV, 1, 0, "default"),
         ProcessExit(30, 2, 0, 128 + 11, 11),
         Prefault(31, 2, 2, 9, 0x1000, 3),
         end(40, instructions=10, tlb_fills=3, frames_peak=4, syscalls=(("write", 1),),
             page_table_frames_peak=6, prefault_unused=2))
    report = stats.report({"x": 1})
    assert report["arch"] == "x86_64" and report["program"] == "/bin/p"
    assert report["exit"] == {"code": 139, "signal": "SIGSEGV", "reason": "signal"}
    assert (report["instructions"], report["cycles"], report["tlb"]["fills"]) == (10, 40, 3)
    assert report["faults"]["total"] == 2 and report["faults"]["by_cause"]["cow"] == 1
    assert report["mm"] == {"frames_total": 64, "frames_peak": 4, "lazy_allocations": 3,
                            "locked_pages": 3, "cow_copies": 1, "msync_pages_written": 4,
                            "pages_written_back": 5, "large_pages_formed": 1,
                            "large_pages_split": 1, "page_table_frames": 6,
                            "page_table_frames_at_exit": 0, "prefaulted_pages": 3,
                            "prefaulted_unused": 2, "bad_page_states": 0}
    assert report["fault_latency_cycles"]["count"] == 0        # it never ran again
    assert report["syscalls"] == {"write": 1}
    assert report["signals"]["delivered"] == {"SIGSEGV": 1}
    assert report["threads"] == [{"pid": 1, "tid": 2, "name": "", "priority": 10,
                                  "policy": "RR", "cycles_by_state": {"READY": 40}}]
    assert list(report)[-1] == "host"
