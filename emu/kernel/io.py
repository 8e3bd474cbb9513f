"""The kernel's side of the backing store: requests submitted with their events.

Every transfer goes through `BackingStore.submit`, which queues it on the device,
publishes a DeviceRequest event and, at the completion time, a DeviceComplete event.
The completion (done_at, ok or errno) is returned for the caller to wait on
(`Waits.block_until`) or to charge in line.
"""
from __future__ import annotations

from typing import Callable

from emu.kernel.device import Completion, Device
from emu.kernel.timers import TimerQueue
from emu.trace.events import DeviceComplete, DeviceRequest, EventBus


class BackingStore:
    """Submits device transfers and reports them as events."""

    def __init__(self, device: Device, bus: EventBus, timers: TimerQueue,
                 now: Callable[[], int]) -> None:
        """A backing store over `device`, stamping events with `now()`."""
        self.device = device
        self.bus = bus
        self.timers = timers
        self.now = now

    def submit(self, pid: int, tid: int, pages: int, write: bool, reason: str,
               file: str = "") -> Completion:
        """Queue a transfer on behalf of (pid, tid); its completion."""
        done = self.device.submit(self.now(), pages, write, reason, file)
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
