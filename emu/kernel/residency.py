"""Residency: making memory present ahead of use — mlock & co, MAP_POPULATE, superlocking.

Pages are set up through the memory manager's own resolver and pager, page by
page, before the call returns; reads from the backing store are charged in
line (the caller waits for the device). A locked page set up by a read stays
read-only, so its first write still faults; superlocking sets pages up as
writes would, with final permissions, so that no access faults.
"""
from __future__ import annotations

from emu.cpu.engine import CpuEngine
from emu.kernel.device import BlockDevice
from emu.kernel.process import Process
from emu.mm.pager import Pager, work_cycles
from emu.profile import KernelCosts


class Residency:
    """The kernel's residency calls, over the pager, the clock and the device."""

    def __init__(self, pager: Pager, engine: CpuEngine, costs: KernelCosts,
                 device: BlockDevice) -> None:
        """Residency over these kernel parts."""
        self.pager = pager
        self.engine = engine
        self.costs = costs
        self.device = device

    def lock(self, proc: Process, start: int, end: int) -> bool:
        """Lock [start, end) of `proc` and make it resident now (superlocked: with final
        permissions). False, with nothing more made resident, if RAM ran out."""
        self.pager.locked_pages += proc.space.set_locked(start, end, True)
        return self.populate(proc, start, end, final=proc.superlocked)

    def populate(self, proc: Process, start: int, end: int, final: bool = False) -> bool:
        """Make [start, end) of `proc` resident before returning (file pages read in, the
        caller waiting for the device); False if RAM ran out."""
        done = self.pager.populate(proc.space, start, end, final)
        for cause in done.causes:
            self.engine.charge(self.costs.procnto_fault + work_cycles(cause, self.costs))
        if done.reads:
            finished = self.device.submit(self.engine.cycles, pages=done.reads, write=False)
            self.engine.charge(finished - self.engine.cycles)
        return not done.failed

    def new_mapping(self, proc: Process, start: int, end: int, locked: bool = False,
                    populate: bool = False) -> bool:
        """Apply the locking rules to a mapping just created: MAP_LOCKED, mlockall(MCL_FUTURE),
        superlock, MAP_POPULATE. False if its pages could not all be made resident."""
        if locked or proc.lock_future or proc.superlocked:
            return self.lock(proc, start, end)
        return self.populate(proc, start, end) if populate else True

    def superlock(self, proc: Process) -> bool:
        """Give `proc` I/O privity: every current and future mapping set up completely."""
        proc.superlocked = proc.lock_future = True
        return all(self.lock(proc, m.start, m.end) for m in proc.space.mappings())
