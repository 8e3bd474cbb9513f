"""Scheduler: QNX ready-queue rules, the exactly-once wake-up invariant and the events it emits."""
from __future__ import annotations

import pytest

from emu.kernel.process import Process, SchedPolicy, Thread, ThreadState
from emu.kernel.sched import Scheduler
from emu.trace.events import (Event, EventBus, Preempt, PriorityChange, SchedParams,
                              StateChange, ThreadCreate)
from tests.unit.support import dispatch_order

SLICE = 100
R, RUN = ThreadState.READY, ThreadState.RUNNING


class Clock:
    """A settable simulated clock."""

    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> int:
        return self.t


class Recorder:
    """An instrument that keeps every event."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[Event]) -> list[Event]:
        return [e for e in self.events if type(e) is kind]

    def clear(self) -> None:
        self.events.clear()


class World:
    """A scheduler with a clock, an event log and a factory of threads in one process."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.rec = Recorder()
        bus = EventBus()
        bus.subscribe(self.rec)
        self.sched = Scheduler(bus, self.clock, SLICE)
        self.proc = Process(pid=7, arch="x86_64", space=None, mem=None, root=None, exe_path="t")
        self._tid = 100

    def thread(self, priority: int = 10, policy: SchedPolicy = SchedPolicy.RR,
               admit: bool = True) -> Thread:
        self._tid += 1
        t = Thread(tid=self._tid, process=self.proc, priority=priority, base_priority=priority,
                   policy=policy, name=f"t{self._tid}")
        self.proc.threads.append(t)
        if admit:
            self.sched.admit(t)
        return t

    def run_order(self) -> list[Thread]:
        """Dispatch and yield until nothing is ready: the order threads get the CPU (each once)."""
        return dispatch_order(self.sched)


@pytest.fixture
def w() -> World:
    return World()


# ---- choosing who runs ----

def test_nothing_ready_dispatches_none(w):
    assert w.sched.dispatch() is None


def test_highest_priority_runs_first(w):
    low, high, mid = w.thread(5), w.thread(20), w.thread(10)
    assert w.run_order() == [high, mid, low]


def test_equal_priorities_run_in_fifo_order(w):
    a, b, c = w.thread(), w.thread(), w.thread()
    assert w.run_order() == [a, b, c]


def test_dispatch_keeps_the_running_thread(w):
    a = w.thread()
    w.thread()
    assert w.sched.dispatch() is a
    assert w.sched.dispatch() is a
    assert a.state is RUN and w.sched.current is a


def test_admitted_thread_is_ready_with_a_fresh_slice(w):
    t = w.thread()
    assert t.state is R and t.slice_left == SLICE


def test_woken_thread_joins_the_end_of_its_queue(w):
    a = w.thread()
    assert w.sched.dispatch() is a
    token = w.sched.block(a, ThreadState.MUTEX)
    b, c = w.thread(), w.thread()
    w.sched.wake(a, token)
    assert w.run_order() == [b, c, a]


def test_woken_higher_priority_thread_preempts_at_once(w):
    high = w.thread(20)
    assert w.sched.dispatch() is high
    token = w.sched.block(high, ThreadState.NANOSLEEP)
    low = w.thread(10)
    assert w.sched.dispatch() is low
    w.sched.wake(high, token)
    assert w.sched.current is None and low.state is R
    assert w.sched.dispatch() is high


def test_woken_equal_priority_thread_does_not_preempt(w):
    a, b = w.thread(), w.thread()
    assert w.sched.dispatch() is a
    token = w.sched.block(a, ThreadState.NANOSLEEP)
    assert w.sched.dispatch() is b
    w.sched.wake(a, token)
    assert w.sched.current is b and b.state is RUN


# ---- preemption ----

def test_preempted_thread_goes_to_the_head_of_its_queue(w):
    a, b, c = w.thread(), w.thread(), w.thread()
    assert w.sched.dispatch() is a
    high = w.thread(20)                    # admitted while a runs: a is preempted
    assert a.state is R and w.sched.current is None
    assert w.run_order() == [high, a, b, c]


def test_priority_preemption_emits_preempt_with_reason(w):
    a = w.thread()
    w.sched.dispatch()
    w.clock.t = 42
    w.thread(20)
    (ev,) = w.rec.of(Preempt)
    assert ev == Preempt(42, 7, a.tid, "priority")
    assert w.sched.preemptions == 1


def test_preempted_thread_keeps_what_is_left_of_its_slice(w):
    a = w.thread()
    w.sched.dispatch()
    w.sched.slice_used(a, 30)
    w.thread(20)
    assert a.slice_left == SLICE - 30


def test_admitting_a_lower_priority_thread_does_not_preempt(w):
    a = w.thread(20)
    w.sched.dispatch()
    w.thread(10)
    assert w.sched.current is a and not w.rec.of(Preempt)


# ---- round-robin slices ----

def test_rr_slice_expiry_moves_the_thread_behind_its_peers(w):
    a, b, c = w.thread(), w.thread(), w.thread()
    assert w.sched.dispatch() is a
    w.sched.slice_used(a, SLICE)
    assert a.state is R and a.slice_left == SLICE
    assert w.run_order() == [b, c, a]


def test_rr_slice_expiry_emits_preempt_reason_slice(w):
    a = w.thread()
    w.thread()
    w.sched.dispatch()
    w.sched.slice_used(a, SLICE + 5)
    assert [e.reason for e in w.rec.of(Preempt)] == ["slice"]
    assert w.sched.preemptions == 1


def test_rr_slice_expiry_without_a_peer_keeps_running_with_a_fresh_slice(w):
    a = w.thread(10)
    w.thread(5)                            # lower priority: not a peer
    w.sched.dispatch()
    w.sched.slice_used(a, SLICE)
    assert w.sched.current is a and a.state is RUN and a.slice_left == SLICE
    assert not w.rec.of(Preempt)


def test_slice_not_yet_used_up_keeps_the_thread_running(w):
    a = w.thread()
    w.thread()
    w.sched.dispatch()
    w.sched.slice_used(a, SLICE - 1)
    assert w.sched.current is a and a.slice_left == 1


def test_fifo_thread_ignores_slice_expiry(w):
    a = w.thread(policy=SchedPolicy.FIFO)
    b = w.thread()
    w.sched.dispatch()
    w.sched.slice_used(a, 10 * SLICE)
    assert w.sched.current is a and b.state is R
    assert not w.rec.of(Preempt)


def test_sched_other_is_round_robin(w):
    a = w.thread(policy=SchedPolicy.OTHER)
    b = w.thread()
    w.sched.dispatch()
    w.sched.slice_used(a, SLICE)
    assert w.sched.dispatch() is b


def test_slice_charged_to_a_thread_no_longer_running_does_not_requeue_it(w):
    a = w.thread()
    w.thread()
    w.sched.dispatch()
    w.sched.block(a, ThreadState.NANOSLEEP)
    w.sched.slice_used(a, SLICE)
    assert a.state is ThreadState.NANOSLEEP and not w.rec.of(Preempt)


# ---- yield ----

def test_yield_goes_to_the_end_of_the_queue(w):
    a, b, c = w.thread(), w.thread(), w.thread()
    w.sched.dispatch()
    w.sched.yield_cpu(a)
    assert a.state is R and w.sched.current is None
    assert w.run_order() == [b, c, a]


def test_yield_alone_runs_again(w):
    a = w.thread()
    w.thread(5)
    w.sched.dispatch()
    w.sched.yield_cpu(a)
    assert w.sched.dispatch() is a


def test_only_the_running_thread_may_yield(w):
    w.thread()
    b = w.thread()
    w.sched.dispatch()
    with pytest.raises(AssertionError):
        w.sched.yield_cpu(b)


# ---- set_priority ----

def test_raising_a_ready_thread_above_the_running_one_preempts(w):
    a, b = w.thread(), w.thread()
    w.sched.dispatch()
    w.sched.set_priority(b, 20)
    assert b.priority == 20 and w.sched.current is None
    assert w.sched.dispatch() is b
    assert w.rec.of(Preempt)[0].reason == "priority"
    assert a.state is R


def test_a_reprioritised_ready_thread_joins_the_end_of_its_new_queue(w):
    x = w.thread(5)
    a, b = w.thread(8), w.thread(8)
    w.sched.set_priority(x, 8)
    assert w.run_order() == [a, b, x]


def test_lowering_a_ready_thread_moves_it_behind_higher_ones(w):
    a, b = w.thread(10), w.thread(10)
    w.sched.set_priority(a, 3)
    assert w.run_order() == [b, a]


def test_lowering_the_running_thread_below_a_ready_one_preempts(w):
    a = w.thread(20)
    b = w.thread(10)
    w.sched.dispatch()
    w.sched.set_priority(a, 5)
    assert w.sched.current is None
    assert w.run_order() == [b, a]


def test_lowering_the_running_thread_to_a_peer_priority_does_not_preempt(w):
    a = w.thread(20)
    w.thread(10)
    w.sched.dispatch()
    w.sched.set_priority(a, 10)
    assert w.sched.current is a


def test_reprioritising_a_blocked_thread_only_changes_its_priority(w):
    a = w.thread()
    w.sched.dispatch()
    token = w.sched.block(a, ThreadState.MUTEX)
    w.sched.set_priority(a, 30)
    assert a.state is ThreadState.MUTEX and a.priority == 30
    b = w.thread(20)
    w.sched.dispatch()
    w.sched.wake(a, token)                 # now at 30: preempts b
    assert w.sched.dispatch() is a and b.state is R


def test_priority_out_of_range_is_rejected(w):
    a = w.thread()
    for bad in (0, 256):
        with pytest.raises(AssertionError):
            w.sched.set_priority(a, bad)


# ---- block and wake: exactly once ----

def test_block_only_from_the_running_thread(w):
    w.thread()
    b = w.thread()
    w.sched.dispatch()
    with pytest.raises(AssertionError):
        w.sched.block(b, ThreadState.MUTEX)


def test_block_rejects_a_non_blocked_state(w):
    a = w.thread()
    w.sched.dispatch()
    with pytest.raises(AssertionError):
        w.sched.block(a, ThreadState.READY)


def test_block_leaves_the_cpu_free(w):
    a = w.thread()
    w.sched.dispatch()
    token = w.sched.block(a, ThreadState.JOIN)
    assert w.sched.current is None and a.state is ThreadState.JOIN
    assert w.sched.is_waiting_on(a, token)


def test_wake_sets_the_pending_result_and_a_fresh_slice(w):
    a = w.thread()
    w.sched.dispatch()
    w.sched.slice_used(a, 60)
    token = w.sched.block(a, ThreadState.NANOSLEEP)
    w.sched.wake(a, token, 0)
    assert a.state is R and a.pending_result == 0 and a.slice_left == SLICE
    assert not w.sched.is_waiting_on(a, token)


def test_wake_without_result_leaves_pending_result_alone(w):
    a = w.thread()
    w.sched.dispatch()
    token = w.sched.block(a, ThreadState.WAITPAGE)
    w.sched.wake(a, token)
    assert a.pending_result is None


def test_second_wake_with_the_same_token_is_an_error(w):
    a = w.thread()
    w.sched.dispatch()
    token = w.sched.block(a, ThreadState.MUTEX)
    w.sched.wake(a, token)
    with pytest.raises(AssertionError):
        w.sched.wake(a, token)


def test_second_wake_after_the_thread_blocked_again_is_an_error(w):
    a = w.thread()
    w.sched.dispatch()
    old = w.sched.block(a, ThreadState.MUTEX)
    w.sched.wake(a, old)
    w.sched.dispatch()
    new = w.sched.block(a, ThreadState.MUTEX)
    with pytest.raises(AssertionError):
        w.sched.wake(a, old)               # a stale waker
    assert w.sched.is_waiting_on(a, new)
    w.sched.wake(a, new)


def test_wake_with_a_foreign_token_is_an_error(w):
    a = w.thread()
    w.sched.dispatch()
    w.sched.block(a, ThreadState.MUTEX)
    with pytest.raises(AssertionError):
        w.sched.wake(a, object())


def test_admit_blocked_returns_the_token_that_wakes_it(w):
    server = w.thread(admit=False)
    token = w.sched.admit_blocked(server, ThreadState.RECEIVE)
    assert server.state is ThreadState.RECEIVE and w.sched.dispatch() is None
    w.sched.wake(server, token)
    assert w.sched.dispatch() is server


def test_admit_blocked_requires_a_blocked_state(w):
    with pytest.raises(AssertionError):
        w.sched.admit_blocked(w.thread(admit=False), ThreadState.READY)


# ---- kill ----

def test_kill_removes_a_ready_thread_from_its_queue(w):
    a, b, c = w.thread(), w.thread(), w.thread()
    w.sched.kill(b)
    assert b.state is ThreadState.DEAD
    assert w.run_order() == [a, c]


def test_kill_of_the_running_thread_frees_the_cpu(w):
    a, b = w.thread(), w.thread()
    w.sched.dispatch()
    w.sched.kill(a)
    assert w.sched.current is None and w.sched.dispatch() is b


def test_a_killed_blocked_thread_can_no_longer_be_woken(w):
    a = w.thread()
    w.sched.dispatch()
    token = w.sched.block(a, ThreadState.NANOSLEEP)
    w.sched.kill(a)
    assert not w.sched.is_waiting_on(a, token)
    with pytest.raises(AssertionError):
        w.sched.wake(a, token)


def test_kill_twice_is_harmless(w):
    a = w.thread()
    w.sched.kill(a)
    w.rec.clear()
    w.sched.kill(a)
    assert w.rec.events == []


# ---- events ----

def test_admit_emits_thread_create_not_state(w):
    w.clock.t = 5
    a = w.thread(12)
    (ev,) = w.rec.events
    assert ev == ThreadCreate(5, 7, a.tid, R, 12, "RR", a.name)


def test_admit_blocked_emits_thread_create_with_its_state(w):
    s = w.thread(admit=False)
    w.sched.admit_blocked(s, ThreadState.RECEIVE)
    (ev,) = w.rec.events
    assert isinstance(ev, ThreadCreate) and ev.state is ThreadState.RECEIVE


def test_every_transition_emits_one_state_event_with_the_clock(w):
    a = w.thread()
    w.rec.clear()
    w.clock.t = 10
    w.sched.dispatch()
    w.clock.t = 20
    token = w.sched.block(a, ThreadState.MUTEX)
    w.clock.t = 30
    w.sched.wake(a, token)
    w.clock.t = 40
    w.sched.dispatch()
    w.clock.t = 50
    w.sched.kill(a)
    got = [(e.ts, e.old, e.new) for e in w.rec.events]
    assert all(type(e) is StateChange and (e.pid, e.tid) == (7, a.tid) for e in w.rec.events)
    assert got == [(10, R, RUN), (20, RUN, ThreadState.MUTEX), (30, ThreadState.MUTEX, R),
                   (40, R, RUN), (50, RUN, ThreadState.DEAD)]


def test_preemption_emits_preempt_then_running_to_ready(w):
    a = w.thread()
    w.sched.dispatch()
    w.rec.clear()
    high = w.thread(30)
    kinds = [(type(e), e.tid, getattr(e, "new", None)) for e in w.rec.events]
    assert kinds == [(ThreadCreate, high.tid, None),
                     (Preempt, a.tid, None),
                     (StateChange, a.tid, R)]


def test_priority_changes_go_through_the_scheduler_as_events(w):
    a = w.thread(10)
    w.rec.clear()
    w.clock.t = 7
    w.sched.set_priority(a, 15, "inherit")
    w.sched.set_priority(a, 15, "inherit")          # no change: no event
    w.sched.set_params(a, SchedPolicy.FIFO, 20)
    assert w.rec.of(PriorityChange) == [PriorityChange(7, 7, a.tid, 10, 15, "inherit"),
                                         PriorityChange(7, 7, a.tid, 15, 20, "set")]
    assert w.rec.of(SchedParams) == [SchedParams(7, 7, a.tid, "FIFO", 20)]
    assert (a.policy, a.base_priority, a.priority) == (SchedPolicy.FIFO, 20, 20)

