"""Waiting for a moment on the simulated clock: the one helper every timed wait uses.

A thread blocks in a QNX state (REPLY for the device, NANOSLEEP for a sleep) and a
timer wakes it at the given cycle — unless something else ended the wait first (a
signal, or its process died), which the wait token tells.
"""
from __future__ import annotations

from dataclasses import dataclass

from emu.kernel.process import Thread, ThreadState
from emu.kernel.sched import Scheduler
from emu.kernel.timers import Timer, TimerQueue


@dataclass(frozen=True, slots=True)
class TimedWait:
    """A thread's wait that a timer ends: its token and the timer (to cancel it)."""

    token: object
    timer: Timer


class Waits:
    """Blocking until a clock time, over the scheduler and the timer queue."""

    def __init__(self, sched: Scheduler, timers: TimerQueue) -> None:
        """Waits on this scheduler and timer queue."""
        self.sched = sched
        self.timers = timers

    def block_until(self, thread: Thread, when: int, state: ThreadState,
                    result: int | None = None) -> TimedWait:
        """Block the running `thread` in `state` until the clock reaches `when`; it then
        becomes READY (with `result` as its system call's result, if given), unless the
        wait ended otherwise before."""
        sched = self.sched
        token = sched.block(thread, state)

        def wake() -> None:
            if sched.is_waiting_on(thread, token):
                sched.wake(thread, token, result)
        return TimedWait(token, self.timers.at(when, wake))
