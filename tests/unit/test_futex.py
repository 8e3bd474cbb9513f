"""FutexTable: FIFO wake-ups, counts, bitsets, requeue, timeouts and forgetting a process."""
from __future__ import annotations

import errno

import pytest

from emu.kernel.futex import FUTEX_BITSET_MATCH_ANY, FutexTable
from emu.kernel.process import Process, Thread, ThreadState
from emu.kernel.sched import Scheduler
from emu.kernel.timers import TimerQueue
from emu.trace.events import EventBus
from tests.unit.support import dispatch_order

ANY = FUTEX_BITSET_MATCH_ANY
WORD, OTHER = 0x1000, 0x2000


class Machine:
    """A scheduler, a futex table and threads of two processes (each with its own space)."""

    def __init__(self) -> None:
        self.sched = Scheduler(EventBus(), lambda: 0, 100)
        self.futex = FutexTable(self.sched)
        self.procs = [Process(pid=p, arch="x86_64", space=object(), mem=None, root=None,
                              exe_path="t") for p in (1, 2)]
        self._tid = 10

    def key(self, addr: int, proc: int = 0) -> tuple[int, int]:
        return FutexTable.key(self.procs[proc], addr)

    def waiter(self, addr: int = WORD, bitset: int = ANY, proc: int = 0,
               state: ThreadState = ThreadState.MUTEX):
        """A new thread that runs and then waits on the futex at `addr`; returns (thread, waiter)."""
        self._tid += 1
        thread = Thread(tid=self._tid, process=self.procs[proc])
        self.sched.admit(thread)
        assert self.sched.dispatch() is thread
        return thread, self.futex.wait(thread, self.key(addr, proc), bitset, state)

    def woken_order(self) -> list[Thread]:
        return dispatch_order(self.sched)


@pytest.fixture
def m() -> Machine:
    return Machine()


def test_wait_blocks_the_thread_in_the_given_state(m):
    t, _ = m.waiter(state=ThreadState.JOIN)
    assert t.state is ThreadState.JOIN and m.sched.current is None


def test_keys_differ_between_address_spaces(m):
    assert m.key(WORD, 0) != m.key(WORD, 1)
    assert m.key(WORD, 0) == FutexTable.key(m.procs[0], WORD)


def test_wake_in_fifo_order(m):
    a, _ = m.waiter()
    b, _ = m.waiter()
    c, _ = m.waiter()
    assert m.futex.wake(m.key(WORD), 3) == 3
    assert m.woken_order() == [a, b, c]


def test_wake_respects_the_count(m):
    a, _ = m.waiter()
    b, _ = m.waiter()
    c, _ = m.waiter()
    assert m.futex.wake(m.key(WORD), 2) == 2
    assert (a.state, b.state, c.state) == (ThreadState.READY, ThreadState.READY, ThreadState.MUTEX)
    assert m.futex.wake(m.key(WORD), 5) == 1
    assert c.state is ThreadState.READY


def test_woken_waiter_gets_result_zero(m):
    a, _ = m.waiter()
    m.futex.wake(m.key(WORD), 1)
    assert a.pending_result == 0


def test_wake_with_no_waiters_wakes_none(m):
    assert m.futex.wake(m.key(WORD), 1) == 0


def test_wake_only_touches_its_own_word_and_space(m):
    a, _ = m.waiter(WORD)
    b, _ = m.waiter(OTHER)
    c, _ = m.waiter(WORD, proc=1)
    assert m.futex.wake(m.key(WORD), 10) == 1
    assert a.state is ThreadState.READY
    assert b.state is ThreadState.MUTEX and c.state is ThreadState.MUTEX


def test_wake_bitset_selects_matching_waiters_in_fifo_order(m):
    a, _ = m.waiter(bitset=0b01)
    b, _ = m.waiter(bitset=0b10)
    c, _ = m.waiter(bitset=0b11)
    assert m.futex.wake(m.key(WORD), 10, bitset=0b10) == 2
    assert m.woken_order() == [b, c]
    assert a.state is ThreadState.MUTEX


def test_wake_bitset_count_takes_the_first_matching(m):
    m.waiter(bitset=0b01)
    b, _ = m.waiter(bitset=0b10)
    c, _ = m.waiter(bitset=0b10)
    assert m.futex.wake(m.key(WORD), 1, bitset=0b10) == 1
    assert b.state is ThreadState.READY and c.state is ThreadState.MUTEX


def test_wake_bitset_without_a_match_wakes_none(m):
    a, _ = m.waiter(bitset=0b01)
    assert m.futex.wake(m.key(WORD), 1, bitset=0b10) == 0
    assert a.state is ThreadState.MUTEX


def test_requeue_wakes_then_moves(m):
    a, _ = m.waiter()
    b, _ = m.waiter()
    c, _ = m.waiter()
    d, _ = m.waiter()
    assert m.futex.requeue(m.key(WORD), m.key(OTHER), wake=1, move=2) == 3
    assert a.state is ThreadState.READY
    assert m.futex.wake(m.key(WORD), 10) == 1          # d stayed
    assert d.state is ThreadState.READY
    assert (b.state, c.state) == (ThreadState.MUTEX, ThreadState.MUTEX)
    assert m.futex.wake(m.key(OTHER), 10) == 2
    assert m.woken_order() == [a, d, b, c]


def test_requeued_waiters_join_the_end_of_the_target_queue(m):
    x, _ = m.waiter(OTHER)
    a, _ = m.waiter(WORD)
    m.futex.requeue(m.key(WORD), m.key(OTHER), wake=0, move=1)
    assert m.futex.wake(m.key(OTHER), 2) == 2
    assert m.woken_order() == [x, a]


def test_time_out_gives_etimedout(m):
    a, w = m.waiter()
    m.futex.time_out(w)
    assert a.state is ThreadState.READY and a.pending_result == -errno.ETIMEDOUT


def test_timed_out_waiter_is_not_woken_again(m):
    a, w = m.waiter()
    b, _ = m.waiter()
    m.futex.time_out(w)
    assert m.futex.wake(m.key(WORD), 10) == 1
    assert b.pending_result == 0 and a.pending_result == -errno.ETIMEDOUT


def test_time_out_after_a_wake_does_nothing(m):
    a, w = m.waiter()
    m.futex.wake(m.key(WORD), 1)
    m.futex.time_out(w)                                # the timer raced the wake: no second wake
    assert a.state is ThreadState.READY and a.pending_result == 0


def test_timed_out_requeued_waiter_leaves_the_target_queue(m):
    a, wa = m.waiter()
    b, _ = m.waiter()
    m.futex.requeue(m.key(WORD), m.key(OTHER), wake=0, move=2)
    m.futex.time_out(wa)
    assert a.pending_result == -errno.ETIMEDOUT
    assert m.futex.wake(m.key(OTHER), 10) == 1
    assert b.state is ThreadState.READY


def test_wake_cancels_the_waiters_timer(m):
    timers = TimerQueue()
    a, w = m.waiter()
    w.timer = timers.at(50, lambda: m.futex.time_out(w))
    m.futex.wake(m.key(WORD), 1)
    assert timers.next_due() is None
    assert timers.fire_due(100) == 0 and a.pending_result == 0


def test_a_timer_firing_after_time_out_is_harmless(m):
    timers = TimerQueue()
    a, w = m.waiter()
    w.timer = timers.at(50, lambda: m.futex.time_out(w))
    assert timers.fire_due(50) == 1
    assert a.pending_result == -errno.ETIMEDOUT


def test_forget_drops_only_that_process_waiters(m):
    a, _ = m.waiter(WORD, proc=0)
    b, _ = m.waiter(WORD, proc=1)
    c, _ = m.waiter(OTHER, proc=0)
    m.futex.forget(m.procs[0])
    assert m.futex.wake(m.key(WORD, 0), 10) == 0
    assert m.futex.wake(m.key(OTHER, 0), 10) == 0
    assert m.futex.wake(m.key(WORD, 1), 10) == 1
    assert b.state is ThreadState.READY
    assert a.state is ThreadState.MUTEX and c.state is ThreadState.MUTEX


def test_forget_keeps_other_processes_waiters_on_a_shared_key(m):
    key = m.key(WORD)
    m.waiter(WORD, proc=0)
    # a thread of process 2 waiting on process 1's key (a shared futex word)
    t1 = Thread(tid=99, process=m.procs[1])
    m.sched.admit(t1)
    m.sched.dispatch()
    m.futex.wait(t1, key, ANY, ThreadState.MUTEX)
    m.futex.forget(m.procs[0])
    assert m.futex.wake(key, 10) == 1 and t1.state is ThreadState.READY
