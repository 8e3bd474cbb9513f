"""The pager: carries out page requests (allocate, fill, map). Policy stays in fault.py.

In the microkernel it runs in the memory-manager server's context; here it is
plain mechanism that completes a request (`Resolved`) or reports that it cannot
(`Deliver` SIGBUS: no frame left). `serve` is the one fault step every caller uses:
procnto's servers, kernel copy-in/out and residency (mlock & co).
"""
from __future__ import annotations

import signal
from dataclasses import dataclass, field

from emu.mm.fault import (BUS_OBJERR, Access, Deliver, FaultCause, NeedsPage, PageRequest,
                          Resolved, initial_perms, resolve_fault)
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


@dataclass(frozen=True, slots=True)
class PageIn:
    """The fault needs the backing store first: read, wait for the device, then serve again
    with `after_read`."""

    request: PageRequest


ServeStep = Resolved | Deliver | PageIn
"""One step of serving a fault: done, a signal, or a read to wait for."""


def _no_frame(vaddr: int) -> Deliver:
    return Deliver(signal.SIGBUS, BUS_OBJERR, vaddr, FaultCause.SIGBUS)


def work_cycles(cause: FaultCause, costs: KernelCosts) -> int:
    """Cycles of page work a serviced request costs: zeroing, copying, or none."""
    if cause in (FaultCause.ZERO_FILL, FaultCause.LAZY_ALLOC):
        return costs.zero_page
    if cause in (FaultCause.PAGE_IN, FaultCause.COW):
        return costs.copy_page
    return 0


class Pager:
    """Makes pages present: frames from the allocator, contents from the memory object."""

    def __init__(self, ram: PhysicalMemory, frames: FrameAllocator, page_cache: PageCache) -> None:
        """A pager over one machine's RAM, frames and page cache."""
        self.ram = ram
        self.frames = frames
        self.page_cache = page_cache

    def serve(self, space: AddressSpace, vaddr: int, access: Access,
              after_read: bool = False) -> ServeStep:
        """Resolve the fault at `vaddr` and carry out what it needs, unless that is a read
        from the backing store not yet waited for (`PageIn`: wait, then call again with
        `after_read`; the page or the mapping may have changed meanwhile)."""
        verdict = resolve_fault(space, vaddr, access)
        if isinstance(verdict, NeedsPage):
            if verdict.request.needs_read and not after_read:
                return PageIn(verdict.request)
            return self.service(space, verdict.request)
        return verdict

    def service(self, space: AddressSpace, request: PageRequest) -> Resolved | Deliver:
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
            return Resolved(request.cause)
        if request.cause is FaultCause.COW:
            return self._copy_on_write(space, request)
        assert space.page_table.lookup(vpn) is None, f"page {request.vaddr:#x} is already present"
        if obj.cached:
            return self._map_cached(space, request)
        frame = space.block_frame(mapping, request.vaddr)
        try:
            if frame is None:
                if not mapping.commits:
                    self.frames.check_demand("lazy_alloc", request.vaddr)
                frame = self.frames.allocate(reserved=mapping.commits)
        except OutOfFrames:
            return _no_frame(request.vaddr)
        self.ram.zero_frame(frame)
        base = frame << PAGE_SHIFT
        mapping.obj.fill(mapping.object_offset(request.vaddr), self.ram.view[base:base + PAGE_SIZE])
        perms, modified = initial_perms(mapping, request.access)
        space.page_table.map(vpn, Pte(frame=frame, perms=perms, modified=modified))
        space.try_coalesce(request.vaddr)
        return Resolved(request.cause)

    def _map_cached(self, space: AddressSpace, request: PageRequest) -> Resolved | Deliver:
        """Map the page cache's frame for the page (read from the file if not cached)."""
        mapping = request.mapping
        index = mapping.object_offset(request.vaddr) >> PAGE_SHIFT
        try:
            if not mapping.obj.file.is_cached(index):
                self.frames.check_demand("page_in", request.vaddr)
            frame = self.frames.share(mapping.obj.file.frame(index))
        except OutOfFrames:
            return _no_frame(request.vaddr)
        perms, modified = initial_perms(mapping, request.access)
        if modified:                     # only shared mappings get here by a write
            mapping.obj.file.dirty.add(index)
        space.page_table.map(request.vaddr >> PAGE_SHIFT, Pte(frame=frame, perms=perms,
                                                              modified=modified))
        return Resolved(request.cause)

    def _copy_on_write(self, space: AddressSpace, request: PageRequest) -> Resolved | Deliver:
        """Give a private mapping its own copy of a page it shares with the page cache."""
        mapping = request.mapping
        vpn = request.vaddr >> PAGE_SHIFT
        old = space.page_table.lookup(vpn)
        try:
            source = old.frame if old is not None else mapping.obj.file.frame(
                mapping.object_offset(request.vaddr) >> PAGE_SHIFT)
            self.frames.check_demand("cow", request.vaddr)
            frame = self.frames.allocate()      # copies are not committed: none is reserved
        except OutOfFrames:
            return _no_frame(request.vaddr)
        self.ram.copy_frame(frame, source)
        if old is not None:
            self.frames.release(old.frame)
        space.page_table.map(vpn, Pte(frame=frame, perms=mapping.prot, modified=True))
        if old is not None:
            # the CPU may still hold the old frame for reads: when the kernel took this
            # fault (a system call writing guest memory), nothing else would drop that
            space.translations_changed(vpn << PAGE_SHIFT, (vpn + 1) << PAGE_SHIFT)
        return Resolved(request.cause)

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
                step = self.serve(space, vaddr, access)
                if isinstance(step, PageIn):        # read in line: the caller waits for it
                    done.reads += 1
                    step = self.serve(space, vaddr, access, after_read=True)
                assert not isinstance(step, PageIn)
                if isinstance(step, Deliver):
                    assert step.cause is FaultCause.SIGBUS, f"cannot populate {vaddr:#x}: {step}"
                    done.failed = True
                    return done
                done.causes.append(step.cause)
        return done
