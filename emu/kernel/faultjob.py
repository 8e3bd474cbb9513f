"""A deferred fault, as the kernel's fault entry hands it to the memory manager.

The kernel knows the memory manager only through `FaultServer` (emu/servers/procnto.py
is one), and the memory manager ends a fault through `FaultEnding` (the kernel's fault
entry), so neither package imports the other's modules for it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from emu.kernel.device import Completion
from emu.kernel.process import Thread
from emu.mm.fault import Access, Deliver, PageRequest, Resolved
from emu.mm.vmspace import AddressSpace


@dataclass(eq=False)
class FaultJob:
    """One deferred fault: who faulted where, and how far the server got."""

    fault_id: int
    thread: Thread
    token: object                   # the faulting thread's WAITPAGE wait
    space: AddressSpace
    vaddr: int
    access: Access
    read: Completion | None = field(default=None)   # the backing-store read waited for
    decided: PageRequest | None = None  # the resolver's request, when taken at fault time and
                                        # nothing can change it before the server runs
    held: bool = False                  # the server was held back before serving (mm-delay)


class ServerFaults(Protocol):
    """A fault injector's say on the memory manager's work."""

    def pulse_lost(self, job: FaultJob) -> int:
        """Cycles after which the fault's pulse, lost now, is sent again (0: not lost)."""

    def serve_delay(self, job: FaultJob) -> int:
        """Cycles the server is held back before it serves `job`, just taken (0: none)."""


class FaultEnding(Protocol):
    """How a fault ends: the one place for charge, FaultEnd event, wake or signal."""

    def finish(self, job: FaultJob, outcome: Resolved | Deliver) -> None:
        """Charge the page work, publish FaultEnd, wake the faulting thread or signal it."""


class FaultServer(Protocol):
    """What the fault entry needs of the memory manager."""

    ending: FaultEnding | None

    def submit(self, job: FaultJob) -> None:
        """Send the fault's pulse (the faulting thread is already in WAITPAGE)."""

    def idle(self) -> bool:
        """Whether a fault sent now would be taken at once (a server waits, no pulse queued)."""


class MemoryServer(FaultServer, Protocol):
    """What the kernel needs to boot the memory manager's server threads."""

    def add_server(self, server: Thread) -> None:
        """A server thread, blocked in RECEIVE, joins the pool."""

    def body(self, server: Thread) -> None:
        """The server thread's work each time the scheduler runs it."""
