"""EventBus fan-out, the JSON-lines writer, and RunStats (cycles per state, fault latency, counters)."""
from __future__ import annotations

import io
import json
import signal


from emu.kernel.process import Process, Thread, ThreadState
from emu.kernel.sched import Scheduler
from emu.mm.fault import FaultCause
from emu.trace.events import Event, EventBus, EventKind, JsonLinesWriter
from emu.trace.stats import RunStats, build_report, signal_name

S = ThreadState


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def on_event(self, event: Event) -> None:
        self.events.append(event)


# ---- EventBus ----

def test_bus_without_instruments_accepts_events():
    EventBus().emit(1, EventKind.PULSE, 1, 1, priority=10)


def test_every_instrument_sees_every_event_in_order():
    bus = EventBus()
    a, b = Recorder(), Recorder()
    bus.subscribe(a)
    bus.subscribe(b)
    bus.emit(1, EventKind.THREAD_CREATE, 2, 3, state=S.READY)
    bus.emit(5, EventKind.SWITCH, 2, 3, from_pid=None, from_tid=None)
    for rec in (a, b):
        assert [(e.ts, e.kind, e.pid, e.tid) for e in rec.events] == [
            (1, EventKind.THREAD_CREATE, 2, 3), (5, EventKind.SWITCH, 2, 3)]
    assert a.events[0].data == {"state": S.READY}


def test_instruments_subscribed_later_see_only_later_events():
    bus = EventBus()
    late = Recorder()
    bus.emit(1, EventKind.PULSE, 1, 1)
    bus.subscribe(late)
    bus.emit(2, EventKind.PULSE, 1, 1)
    assert [e.ts for e in late.events] == [2]


# ---- JSON lines ----

def test_json_line_has_ts_kind_pid_tid_then_data():
    out = io.StringIO()
    bus = EventBus()
    bus.subscribe(JsonLinesWriter(out))
    bus.emit(1234, EventKind.FAULT_BEGIN, 5, 6, vaddr=0x1000, access="write", origin="user")
    line = out.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    record = json.loads(line)
    assert list(record) == ["ts", "kind", "pid", "tid", "vaddr", "access", "origin"]
    assert record == {"ts": 1234, "kind": "fault_begin", "pid": 5, "tid": 6, "vaddr": 4096,
                      "access": "write", "origin": "user"}


def test_json_line_is_compact():
    event = Event(1, EventKind.PREEMPT, 2, 3, {"reason": "slice"})
    assert event.to_json() == '{"ts":1,"kind":"preempt","pid":2,"tid":3,"reason":"slice"}'


def test_thread_states_serialize_as_their_names():
    event = Event(7, EventKind.STATE, 1, 2, {"from": S.RUNNING, "to": S.WAITPAGE})
    assert json.loads(event.to_json())["from"] == "RUNNING"
    assert json.loads(event.to_json())["to"] == "WAITPAGE"
    for state in ThreadState:
        assert json.loads(Event(0, EventKind.STATE, 0, 0, {"to": state}).to_json())["to"] \
            == state.name


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
         "priority": 10, "name": "main"},
        {"ts": 99, "kind": "state", "pid": 4, "tid": 4, "from": "READY", "to": "RUNNING"},
    ]


# ---- RunStats ----

def feed(stats: RunStats, *events: tuple) -> None:
    for ts, kind, tid, data in events:
        stats.on_event(Event(ts, kind, 1, tid, data))


def create(ts: int, tid: int, state: ThreadState = S.READY) -> tuple:
    return (ts, EventKind.THREAD_CREATE, tid, {"state": state, "priority": 10, "name": ""})


def state(ts: int, tid: int, old: ThreadState, new: ThreadState) -> tuple:
    return (ts, EventKind.STATE, tid, {"from": old, "to": new})


def fault(ts: int, tid: int, origin: str = "user") -> tuple:
    return (ts, EventKind.FAULT_BEGIN, tid, {"vaddr": 0x1000, "access": "read", "origin": origin})


def test_cycles_by_state_accumulate_from_state_events_and_finish():
    stats = RunStats()
    feed(stats, create(0, 1),
         state(10, 1, S.READY, S.RUNNING),
         state(50, 1, S.RUNNING, S.WAITPAGE),
         state(80, 1, S.WAITPAGE, S.READY),
         state(90, 1, S.READY, S.RUNNING))
    stats.finish(200)
    assert dict(stats.threads[(1, 1)].by_state) == {"READY": 20, "RUNNING": 150, "WAITPAGE": 30}


def test_cycles_by_state_add_up_to_the_thread_lifetime():
    stats = RunStats()
    feed(stats, create(100, 1), state(150, 1, S.READY, S.RUNNING),
         state(170, 1, S.RUNNING, S.DEAD))
    stats.finish(1000)
    times = stats.threads[(1, 1)].by_state
    assert sum(times.values()) == 900 and times["DEAD"] == 830


def test_finish_twice_does_not_double_count():
    stats = RunStats()
    feed(stats, create(0, 1))
    stats.finish(100)
    stats.finish(100)
    assert stats.threads[(1, 1)].by_state["READY"] == 100


def test_threads_created_blocked_start_in_that_state():
    stats = RunStats()
    feed(stats, create(0, 1, S.RECEIVE), state(40, 1, S.RECEIVE, S.READY))
    stats.finish(50)
    assert dict(stats.threads[(1, 1)].by_state) == {"RECEIVE": 40, "READY": 10}


def test_threads_are_kept_apart():
    stats = RunStats()
    feed(stats, create(0, 1), create(0, 2), state(10, 2, S.READY, S.RUNNING))
    stats.finish(30)
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
    feed(stats,
         (1, EventKind.SWITCH, 1, {"from_pid": None, "from_tid": None}),
         (2, EventKind.SWITCH, 2, {"from_pid": 1, "from_tid": 1}),
         (3, EventKind.PREEMPT, 2, {"reason": "slice"}),
         (4, EventKind.SWITCH, 1, {"from_pid": 1, "from_tid": 2}))
    assert (stats.context_switches, stats.preemptions) == (3, 1)


def test_signals_are_counted_by_name():
    stats = RunStats()
    feed(stats, (1, EventKind.SIGNAL, 1, {"signal": signal.SIGSEGV, "code": 1, "vaddr": 0}),
         (2, EventKind.SIGNAL, 1, {"signal": signal.SIGSEGV, "code": 1, "vaddr": 0}),
         (3, EventKind.SIGNAL, 1, {"signal": signal.SIGBUS, "code": 3, "vaddr": 0}))
    assert dict(stats.signals_delivered) == {"SIGSEGV": 2, "SIGBUS": 1}


def test_faults_by_cause_starts_with_every_cause_at_zero():
    stats = RunStats()
    stats.count_fault(FaultCause.ZERO_FILL)
    stats.count_fault(FaultCause.ZERO_FILL)
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
    bus.subscribe(stats)
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
    stats.finish(200)
    assert dict(stats.threads[(1, 1)].by_state) == {"RUNNING": 150, "READY": 50}
    assert dict(stats.threads[(1, 2)].by_state) == {"READY": 100, "RUNNING": 50, "DEAD": 50}
    assert stats.preemptions == 1


def test_build_report_shapes_the_stats():
    stats = RunStats(fault_latencies=[5], context_switches=2, preemptions=1)
    stats.count_fault(FaultCause.PAGE_IN)
    report = build_report(arch="x86_64", program="/bin/p", exit_code=0, exit_signal=11,
                          instructions=10, cycles=20, tlb_fills=3, stats=stats,
                          mm={"frames_total": 64, "frames_peak": 4}, syscalls={"write": 1},
                          threads=[], host={"x": 1})
    assert report["exit"] == {"code": 0, "signal": "SIGSEGV"}
    assert report["faults"]["total"] == 1 and report["faults"]["by_cause"]["page_in"] == 1
    assert report["sched"] == {"context_switches": 2, "preemptions": 1}
    assert report["fault_latency_cycles"]["count"] == 1
    assert list(report)[-1] == "host"
