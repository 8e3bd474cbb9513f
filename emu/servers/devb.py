"""The block device's driver thread (`--device-driver PRIO`): the seed's "potentially talk
to a device driver", as a thread instead of a pure latency.

Without it, a memory-manager thread waiting for a page-in becomes READY the moment the
device finishes. With it, the device's completion is an interrupt: it makes the driver
thread READY at its own priority (joining the end of that queue, like any thread), and
only when the driver has run (`kernel.driver_interrupt` cycles of work: the interrupt
handler and the transfer's completion) is the waiting thread made READY. So a page-in
also waits for every thread the scheduler prefers to the driver.

Completions are handled in the order the device finished them, one per turn of the
driver thread.
"""
from __future__ import annotations

from collections import deque
from typing import Callable

from emu.kernel.process import Thread, ThreadState
from emu.kernel.sched import Scheduler
from emu.kernel.timers import TimerQueue


class DeviceDriver:
    """The driver thread's body, and the wait the memory manager uses for a transfer."""

    def __init__(self, sched: Scheduler, timers: TimerQueue, charge: Callable[[int], None],
                 interrupt_cycles: int) -> None:
        """A driver over this scheduler and timer queue, charging `interrupt_cycles` per
        completion it handles."""
        self.sched = sched
        self.timers = timers
        self.charge = charge
        self.interrupt_cycles = interrupt_cycles
        self.thread: Thread | None = None
        self._done: deque[tuple[Thread, object]] = deque()   # completed, not yet handled
        self.handled = 0

    def attach(self, thread: Thread) -> None:
        """`thread` (already blocked in RECEIVE, waiting for interrupts) is the driver."""
        self.thread = thread

    def wait_for(self, waiter: Thread, done_at: int, state: ThreadState) -> None:
        """Block the running `waiter` in `state` until the device finishes at `done_at` and
        the driver thread has handled the completion."""
        token = self.sched.block(waiter, state)
        self.timers.at(done_at, lambda: self._interrupt(waiter, token))

    def _interrupt(self, waiter: Thread, token: object) -> None:
        """The device finished a transfer: queue it and wake the driver if it waits."""
        self._done.append((waiter, token))
        driver = self.thread
        assert driver is not None, "a transfer completed before the driver thread started"
        if driver.state is ThreadState.RECEIVE and driver.wait_token is not None:
            self.sched.wake(driver, driver.wait_token)

    def body(self, driver: Thread) -> None:
        """Handle the next completion (charge its work, wake its waiter), or wait for one."""
        if not self._done:
            self.sched.block(driver, ThreadState.RECEIVE)
            return
        waiter, token = self._done.popleft()
        self.charge(self.interrupt_cycles)
        self.handled += 1
        if self.sched.is_waiting_on(waiter, token):     # unless its wait ended otherwise
            self.sched.wake(waiter, token)
