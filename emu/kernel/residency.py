"""Residency: making memory present ahead of use — mlock & co, MAP_POPULATE, superlocking.

Pages are set up through the memory manager's own serve step (`Pager.serve`), page
by page, before the call returns; reads from the backing store are charged in line
(the caller waits for the device). A locked page set up by a read stays read-only,
so its first write still faults; superlocking sets pages up as writes would, with
final permissions, so that no access faults. Each call reports what it did as
events: Lock (pages newly locked) and Populate (pages set up, by cause).
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

from emu.kernel.io import BackingStore
from emu.kernel.process import Process
from emu.mm.pager import Pager, work_cycles
from emu.profile import KernelCosts
from emu.trace.events import EventBus, Lock, Populate


class Residency:
    """The kernel's residency calls, over the pager, the clock and the backing store."""

    def __init__(self, pager: Pager, now: Callable[[], int], charge: Callable[[int], None],
                 costs: KernelCosts, store: BackingStore, bus: EventBus) -> None:
        """Residency over these kernel parts."""
        self.pager = pager
        self.now = now
        self.charge = charge
        self.costs = costs
        self.store = store
        self.bus = bus

    def mark_locked(self, proc: Process, tid: int, start: int, end: int) -> None:
        """Mark [start, end) of `proc` locked (mlock2 MLOCK_ONFAULT: pages come at first touch)."""
        pages = proc.space.set_locked(start, end, True)
        if pages and self.bus.wants(Lock):
            self.bus.publish(Lock(self.now(), proc.pid, tid, start, end, pages))

    def lock(self, proc: Process, start: int, end: int, tid: int = 0) -> bool:
        """Lock [start, end) of `proc` and make it resident now (superlocked: with final
        permissions). False, with nothing more made resident, if RAM ran out."""
        self.mark_locked(proc, tid, start, end)
        return self.populate(proc, start, end, final=proc.superlocked, tid=tid)

    def populate(self, proc: Process, start: int, end: int, final: bool = False,
                 tid: int = 0) -> bool:
        """Make [start, end) of `proc` resident before returning (file pages read in, the
        caller waiting for the device); False if RAM ran out or the device failed."""
        done = self.pager.populate(proc.space, start, end, final)
        for cause in done.causes:
            self.charge(self.costs.procnto_fault + work_cycles(cause, self.costs))
        ok = not done.failed
        if done.reads:
            file = next((m.name for m in proc.space.mappings_in(start, end) if m.obj.cached), "")
            read = self.store.submit(proc.pid, tid, done.reads, False, "populate", file)
            self.charge(max(0, read.done_at - self.now()))
            ok = ok and read.ok
        if done.causes and self.bus.wants(Populate):
            counted = Counter(cause.value for cause in done.causes)
            self.bus.publish(Populate(self.now(), proc.pid, tid, start, end,
                                      tuple(sorted(counted.items())), done.reads))
        return ok

    def new_mapping(self, proc: Process, start: int, end: int, locked: bool = False,
                    populate: bool = False, tid: int = 0) -> bool:
        """Apply the locking rules to a mapping just created: MAP_LOCKED, mlockall(MCL_FUTURE),
        superlock, MAP_POPULATE. False if its pages could not all be made resident."""
        if locked or proc.lock_future or proc.superlocked:
            return self.lock(proc, start, end, tid)
        return self.populate(proc, start, end, tid=tid) if populate else True

    def superlock(self, proc: Process, tid: int = 0) -> bool:
        """Give `proc` I/O privity: every current and future mapping set up completely."""
        proc.superlocked = proc.lock_future = True
        return all(self.lock(proc, m.start, m.end, tid) for m in proc.space.mappings())
