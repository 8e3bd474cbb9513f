"""Wait queues: threads blocked until a kernel object changes, each retrying its system call.

A thread that must wait for a pipe's data or room, a descriptor to become ready
(poll, select, epoll) or a record lock blocks in a QNX state and joins the wait
queue of every object it waits for. Whoever changes an object wakes its whole
queue; each woken thread runs its system call again from the start (its PC is put
back on the system-call instruction before it blocks, as Linux's -ERESTARTSYS
would), and either completes or waits again. What a call has done already (bytes
of a long pipe write, a poll's deadline) it keeps in `Thread.resume`, which the
kernel clears once the call returns.

A signal ends such a wait with EINTR, or with the progress made so far; Linux's
restart rules then apply (sigdeliver.py).

An exclusive waiter (epoll's EPOLLEXCLUSIVE) is woken alone: a wake rouses every
ordinary waiter and one exclusive waiter that is still waiting; the other exclusive
waiters stay queued. Every wake counts in the queue's `generation`, waiters or not,
which is how an edge-triggered epoll entry tells that something happened.

Invariants: a thread is woken once per wait (the scheduler's token); stale queue
entries of a thread woken elsewhere are skipped and dropped.
"""
from __future__ import annotations

import errno
from typing import Callable

from emu.kernel.process import Thread, ThreadState
from emu.kernel.sched import Scheduler
from emu.kernel.signals import Restart
from emu.kernel.timers import Timer, TimerQueue


class WaitQueue:
    """The threads waiting for one object to change."""

    __slots__ = ("_waiters", "_exclusive", "generation")

    def __init__(self) -> None:
        """An empty queue."""
        self._waiters: list[tuple[Thread, object]] = []
        self._exclusive: list[tuple[Thread, object]] = []
        self.generation = 0                 # wakes so far

    def add(self, thread: Thread, token: object, exclusive: bool = False) -> None:
        """`thread`, blocked with `token`, waits here (`exclusive`: woken alone)."""
        (self._exclusive if exclusive else self._waiters).append((thread, token))

    def take(self) -> list[tuple[Thread, object]]:
        """Every ordinary entry, leaving them off the queue."""
        waiters, self._waiters = self._waiters, []
        return waiters

    def take_exclusive(self) -> tuple[Thread, object] | None:
        """The oldest exclusive entry, taken off the queue (None if there is none)."""
        return self._exclusive.pop(0) if self._exclusive else None

    def __bool__(self) -> bool:
        return bool(self._waiters) or bool(self._exclusive)


Interrupted = Callable[[], tuple[int, Restart | None]]
"""A signal ends the wait: (the call's result, how it counts as interrupted)."""


def eintr() -> tuple[int, Restart | None]:
    """The usual end of an interrupted wait: EINTR, restarted under SA_RESTART."""
    return -errno.EINTR, Restart.RESTARTSYS


class Blocking:
    """Blocking a system call on wait queues, and waking them."""

    def __init__(self, sched: Scheduler, timers: TimerQueue, syscall_insn_size: int,
                 waiting: Callable[[Thread, object, Callable[[], Restart | None]], None]) -> None:
        """Blocking over this scheduler and timer queue; `waiting` registers an interruptible
        wait with signal delivery (SignalDelivery.waiting)."""
        self.sched = sched
        self.timers = timers
        self.insn_size = syscall_insn_size
        self._waiting = waiting

    def wait(self, thread: Thread, queues: list[WaitQueue], state: ThreadState,
             deadline: int | None = None, interrupted: Interrupted = eintr,
             exclusive: frozenset[int] = frozenset()) -> None:
        """Block the running `thread` (inside a system call) on `queues` until one is woken or
        the clock reaches `deadline`; it then runs the call again. A signal ends the wait with
        `interrupted()`'s result. It waits exclusively on the queues whose id() is in
        `exclusive`."""
        thread.pc -= self.insn_size                 # retry the call when woken
        token = self.sched.block(thread, state)
        for queue in queues:
            queue.add(thread, token, id(queue) in exclusive)
        timer: Timer | None = None
        if deadline is not None:
            timer = self.timers.at(deadline, lambda: self._wake(thread, token))

        def cancel() -> Restart | None:
            if timer is not None:
                timer.cancel()
            thread.pc += self.insn_size             # the call returns instead
            result, restart = interrupted()
            thread.resume = None
            self.sched.wake(thread, token, result)
            return restart
        self._waiting(thread, token, cancel)

    def wake(self, queue: WaitQueue) -> None:
        """Wake every ordinary thread still waiting on `queue` and one exclusive waiter (each
        retries its call)."""
        queue.generation += 1
        if queue:
            for thread, token in queue.take():
                self._wake(thread, token)
            while (entry := queue.take_exclusive()) is not None:
                if self.sched.is_waiting_on(*entry):
                    self._wake(*entry)
                    break

    def _wake(self, thread: Thread, token: object) -> None:
        if self.sched.is_waiting_on(thread, token):
            self.sched.wake(thread, token)
