"""The pager: carries out page requests (allocate, fill, map). Policy stays in fault.py.

In the microkernel it runs in the memory-manager server's context; here it is
plain mechanism that either completes a request or reports that it cannot.
"""
from __future__ import annotations

import signal
from dataclasses import dataclass, field

from emu.mm.fault import BUS_OBJERR, Access, FaultCause, PageRequest, initial_perms, resolve_fault
from emu.mm.frames import PAGE_SHIFT, PAGE_SIZE, FrameAllocator, OutOfFrames, PhysicalMemory
from emu.mm.pagetable import Pte
from emu.mm.vmspace import PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE, AddressSpace
from emu.profile import KernelCosts


@dataclass
class Population:
    """What populating a range did: the cause of each page set up, and whether RAM ran out."""

    causes: list[FaultCause] = field(default_factory=list)
    failed: bool = False


@dataclass(slots=True)
class PagerResult:
    """What servicing a request did: `signal` is 0 on success."""

    cause: FaultCause
    signal: int = 0
    si_code: int = 0


def work_cycles(cause: FaultCause, costs: KernelCosts) -> int:
    """Cycles of page work a serviced request costs: zeroing, copying, or none."""
    if cause in (FaultCause.ZERO_FILL, FaultCause.LAZY_ALLOC):
        return costs.zero_page
    if cause is FaultCause.PAGE_IN:
        return costs.copy_page
    return 0


class Pager:
    """Makes pages present: frames from the allocator, contents from the memory object."""

    def __init__(self, ram: PhysicalMemory, frames: FrameAllocator) -> None:
        """A pager over one machine's RAM and frames."""
        self.ram = ram
        self.frames = frames
        self.lazy_allocations = 0
        self.locked_pages = 0           # pages made resident by locking (mlock & co)

    def service(self, space: AddressSpace, request: PageRequest) -> PagerResult:
        """Carry out a request: mark a page written (write tracking), or give it a frame
        (from the mapping's commitment, or a fresh one for lazy and file pages), fill it
        and map it with the permissions `initial_perms` decides."""
        vpn = request.vaddr >> PAGE_SHIFT
        mapping = request.mapping
        if request.cause is FaultCause.WRITE_TRACK:
            pte = space.page_table.lookup(vpn)
            assert pte is not None, f"write tracking an absent page {request.vaddr:#x}"
            space.page_table.map(vpn, pte._replace(perms=mapping.prot, modified=True))
            return PagerResult(request.cause)
        assert space.page_table.lookup(vpn) is None, f"page {request.vaddr:#x} is already present"
        try:
            frame = self.frames.allocate(reserved=mapping.commits)
        except OutOfFrames:
            return PagerResult(FaultCause.SIGBUS, signal=signal.SIGBUS, si_code=BUS_OBJERR)
        if request.cause is FaultCause.LAZY_ALLOC:
            self.lazy_allocations += 1
        self.ram.zero_frame(frame)
        base = frame << PAGE_SHIFT
        mapping.obj.fill(mapping.object_offset(request.vaddr), self.ram.view[base:base + PAGE_SIZE])
        perms, modified = initial_perms(mapping, request.access)
        space.page_table.map(vpn, Pte(frame=frame, perms=perms, modified=modified))
        return PagerResult(request.cause)

    def populate(self, space: AddressSpace, start: int, end: int, final: bool) -> Population:
        """Make every accessible page of [start, end) resident, deciding each page as a first
        read would (`final`: as a first write, with the mapping's own permissions — the
        superlocked set-up, after which no access faults)."""
        done = Population()
        for mapping in space.mappings_in(start, end):
            if mapping.prot == PROT_NONE:
                continue
            writable = final and bool(mapping.prot & PROT_WRITE)
            access = (Access.WRITE if writable or not mapping.prot & (PROT_READ | PROT_EXEC)
                      else Access.READ if mapping.prot & PROT_READ else Access.FETCH)
            for vaddr in range(mapping.start, mapping.end, PAGE_SIZE):
                pte = space.page_table.lookup(vaddr >> PAGE_SHIFT)
                if pte is not None and (not writable or pte.perms & PROT_WRITE):
                    continue
                verdict = resolve_fault(space, vaddr, access)
                assert verdict.request is not None, f"cannot populate {vaddr:#x}: {verdict}"
                result = self.service(space, verdict.request)
                if result.signal:
                    done.failed = True
                    return done
                done.causes.append(result.cause)
        return done
