"""The pager: carries out page requests (allocate, fill, map). Policy stays in fault.py.

In the microkernel it runs in the memory-manager server's context; here it is
plain mechanism that either completes a request or reports that it cannot.
"""
from __future__ import annotations

import signal
from dataclasses import dataclass

from emu.mm.fault import BUS_OBJERR, FaultCause, PageRequest
from emu.mm.frames import PAGE_SHIFT, PAGE_SIZE, FrameAllocator, OutOfFrames, PhysicalMemory
from emu.mm.pagetable import Pte
from emu.mm.vmspace import AddressSpace


@dataclass(slots=True)
class PagerResult:
    """What servicing a request did: `signal` is 0 on success."""

    cause: FaultCause
    signal: int = 0
    si_code: int = 0


class Pager:
    """Makes pages present: frames from the allocator, contents from the memory object."""

    def __init__(self, ram: PhysicalMemory, frames: FrameAllocator) -> None:
        """A pager over one machine's RAM and frames."""
        self.ram = ram
        self.frames = frames

    def service(self, space: AddressSpace, request: PageRequest) -> PagerResult:
        """Allocate and fill a frame for the request and map it with the mapping's permissions."""
        vpn = request.vaddr >> PAGE_SHIFT
        assert space.page_table.lookup(vpn) is None, f"page {request.vaddr:#x} is already present"
        try:
            frame = self.frames.allocate()
        except OutOfFrames:
            return PagerResult(FaultCause.SIGBUS, signal=signal.SIGBUS, si_code=BUS_OBJERR)
        self.ram.zero_frame(frame)
        base = frame << PAGE_SHIFT
        mapping = request.mapping
        mapping.obj.fill(mapping.object_offset(request.vaddr), self.ram.view[base:base + PAGE_SIZE])
        space.page_table.map(vpn, Pte(frame=frame, perms=mapping.prot, modified=False))
        return PagerResult(request.cause)
