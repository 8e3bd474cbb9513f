"""The kernel's side of the backing store: requests submitted with their events.

Every transfer goes through `BackingStore.submit`, which queues it on the device,
publishes a DeviceRequest event and, at the completion time, a DeviceComplete event.
The completion (done_at, ok or errno) is returned for the caller to wait on
(`Waits.block_until`) or to charge in line.

File I/O the device does not time (read(2) of a regular file, fsync) still asks the
store whether it fails (`check`): a fault injector (`faults`) may fail any transfer, and
delay timed ones.
"""
from __future__ import annotations

import os
import stat
from dataclasses import replace
from typing import Callable, Protocol

from emu.kernel.device import Completion, Device
from emu.kernel.timers import TimerQueue
from emu.trace.events import DeviceComplete, DeviceRequest, EventBus


class StoreFaults(Protocol):
    """A fault injector's say on backing-store transfers."""

    def transfer(self, pid: int, tid: int, write: bool, reason: str, file: str,
                 timed: bool) -> tuple[int, int]:
        """(errno the transfer fails with or 0, extra cycles it takes) for a transfer on
        behalf of (pid, tid); `timed` is False for I/O the device does not time."""


class BackingStore:
    """Submits device transfers and reports them as events."""

    def __init__(self, device: Device, bus: EventBus, timers: TimerQueue,
                 now: Callable[[], int]) -> None:
        """A backing store over `device`, stamping events with `now()`."""
        self.device = device
        self.bus = bus
        self.timers = timers
        self.now = now
        self.faults: StoreFaults | None = None

    def check(self, pid: int, tid: int, write: bool, reason: str, file: str,
              host_fd: int) -> int:
        """The errno a transfer the device does not time (`reason` "read" for read(2),
        "fsync") of `file`, open as `host_fd`, fails with; 0 if it does not fail, or the
        file is not a regular one (not on the backing store)."""
        if self.faults is None or not stat.S_ISREG(os.fstat(host_fd).st_mode):
            return 0
        return self.faults.transfer(pid, tid, write, reason, file, False)[0]

    def submit(self, pid: int, tid: int, pages: int, write: bool, reason: str,
               file: str = "") -> Completion:
        """Queue a transfer on behalf of (pid, tid); its completion."""
        error, extra = (self.faults.transfer(pid, tid, write, reason, file, True)
                        if self.faults is not None else (0, 0))
        done = self.device.submit(self.now(), pages, write, reason, file, extra=extra)
        if error:
            done = replace(done, errno=error)
        request = done.request
        bus = self.bus
        if bus.wants(DeviceRequest):
            bus.publish(DeviceRequest(self.now(), pid, tid, request.request_id, write, pages,
                                      reason, done.done_at, done.ok, done.errno))

        def complete() -> None:
            if bus.wants(DeviceComplete):
                bus.publish(DeviceComplete(self.now(), pid, tid, request.request_id, done.done_at,
                                           done.ok))
        self.timers.at(done.done_at, complete)
        return done
