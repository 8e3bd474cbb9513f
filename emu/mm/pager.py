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
from emu.mm.pagecache import PageCache
from emu.mm.vmspace import PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE, AddressSpace, Share
from emu.profile import KernelCosts


@dataclass
class Population:
    """What populating a range did: the cause of each page set up, and whether RAM ran out."""

    causes: list[FaultCause] = field(default_factory=list)
    reads: int = 0                  # pages that had to be read from the backing store
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
    if cause in (FaultCause.PAGE_IN, FaultCause.COW):
        return costs.copy_page
    return 0


class Pager:
    """Makes pages present: frames from the allocator, contents from the memory object."""

    def __init__(self, ram: PhysicalMemory, frames: FrameAllocator) -> None:
        """A pager over one machine's RAM and frames."""
        self.ram = ram
        self.frames = frames
        self.lazy_allocations = 0
        self.cow_copies = 0
        self.page_cache = PageCache(frames, ram)
        self.locked_pages = 0           # pages made resident by locking (mlock & co)

    def service(self, space: AddressSpace, request: PageRequest) -> PagerResult:
        """Carry out a request: mark a page written (write tracking), or give it a frame
        (from the mapping's commitment, or a fresh one for lazy and file pages), fill it
        and map it with the permissions `initial_perms` decides."""
        vpn = request.vaddr >> PAGE_SHIFT
        mapping = request.mapping
        obj = mapping.obj
        if request.cause is FaultCause.WRITE_TRACK:
            pte = space.page_table.lookup(vpn)
            assert pte is not None, f"write tracking an absent page {request.vaddr:#x}"
            space.page_table.map(vpn, pte._replace(perms=mapping.prot, modified=True))
            if obj.cached and mapping.share is Share.SHARED:
                obj.file.dirty.add(mapping.object_offset(request.vaddr) >> PAGE_SHIFT)
            space.try_coalesce(request.vaddr)
            return PagerResult(request.cause)
        if request.cause is FaultCause.COW:
            return self._copy_on_write(space, request)
        assert space.page_table.lookup(vpn) is None, f"page {request.vaddr:#x} is already present"
        if obj.cached:
            return self._map_cached(space, request)
        frame = space.block_frame(mapping, request.vaddr)
        try:
            if frame is None:
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
        space.try_coalesce(request.vaddr)
        return PagerResult(request.cause)

    def _map_cached(self, space: AddressSpace, request: PageRequest) -> PagerResult:
        """Map the page cache's frame for the page (read from the file if not cached)."""
        mapping = request.mapping
        index = mapping.object_offset(request.vaddr) >> PAGE_SHIFT
        try:
            frame = self.frames.share(mapping.obj.file.frame(index))
        except OutOfFrames:
            return PagerResult(FaultCause.SIGBUS, signal=signal.SIGBUS, si_code=BUS_OBJERR)
        perms, modified = initial_perms(mapping, request.access)
        if modified:                     # only shared mappings get here by a write
            mapping.obj.file.dirty.add(index)
        space.page_table.map(request.vaddr >> PAGE_SHIFT, Pte(frame=frame, perms=perms,
                                                              modified=modified))
        return PagerResult(request.cause)

    def _copy_on_write(self, space: AddressSpace, request: PageRequest) -> PagerResult:
        """Give a private mapping its own copy of a page it shares with the page cache."""
        mapping = request.mapping
        vpn = request.vaddr >> PAGE_SHIFT
        old = space.page_table.lookup(vpn)
        try:
            source = old.frame if old is not None else mapping.obj.file.frame(
                mapping.object_offset(request.vaddr) >> PAGE_SHIFT)
            frame = self.frames.allocate()      # copies are not committed: none is reserved
        except OutOfFrames:
            return PagerResult(FaultCause.SIGBUS, signal=signal.SIGBUS, si_code=BUS_OBJERR)
        self.ram.copy_frame(frame, source)
        if old is not None:
            self.frames.release(old.frame)
        space.page_table.map(vpn, Pte(frame=frame, perms=mapping.prot, modified=True))
        self.cow_copies += 1
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
                done.reads += verdict.request.needs_read
                result = self.service(space, verdict.request)
                if result.signal:
                    done.failed = True
                    return done
                done.causes.append(result.cause)
        return done
