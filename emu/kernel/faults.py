"""Fault entry: what the kernel does with a fault the C fast path could not resolve.

- `user_fault`: the slow path — block the thread in WAITPAGE and pulse procnto's
  memory manager at the thread's priority (emu/servers/procnto.py does the rest);
- `complete_in_place`: the same steps taken from inside the fill hook, when the
  kernel can prove no other guest thread would run meanwhile (saves stopping
  and restarting Unicorn; identical events, states and cycles);
- `fault_in`: a fault on the kernel's own behalf (copy-in/out), served at once.
"""
from __future__ import annotations

from typing import Protocol

from emu.cpu.engine import CpuEngine
from emu.kernel.device import BlockDevice
from emu.kernel.process import Process, Thread, ThreadState
from emu.kernel.sched import Scheduler
from emu.kernel.timers import TimerQueue
from emu.mm.fault import ACCESS_BY_VALUE, Access, FaultCause, FaultResolution, Outcome, resolve_fault
from emu.mm.frames import FrameAllocator
from emu.mm.pager import Pager, work_cycles
from emu.mm.vmspace import AddressSpace
from emu.profile import KernelCosts
from emu.servers.procnto import FaultJob, MemoryManager
from emu.trace.events import EventBus, EventKind
from emu.trace.stats import RunStats


class Dispatcher(Protocol):
    """The run loop's steps, which completing a fault in place takes itself."""

    def next_thread(self) -> Thread | None:
        """Fire due timers, dispatch and switch to the next thread."""

    def run_thread(self, thread: Thread) -> None:
        """Run one dispatched thread until it stops."""

    def deadline(self, thread: Thread) -> int:
        """When the running guest thread must stop."""

    def process_of(self, space: AddressSpace) -> Process | None:
        """The process that owns an address space."""


class FaultEntry:
    """The kernel's fault entry points."""

    def __init__(self, dispatcher: Dispatcher, engine: CpuEngine, sched: Scheduler,
                 mm: MemoryManager, timers: TimerQueue, device: BlockDevice, pager: Pager,
                 frames: FrameAllocator, costs: KernelCosts, bus: EventBus,
                 stats: RunStats) -> None:
        """Fault entry over these kernel parts."""
        self.dispatcher = dispatcher
        self.engine = engine
        self.sched = sched
        self.mm = mm
        self.timers = timers
        self.device = device
        self.pager = pager
        self.frames = frames
        self.costs = costs
        self.bus = bus
        self.stats = stats
        c = costs
        self._in_place_cost = (c.fault_entry + c.pulse + 2 * c.context_switch + c.procnto_fault
                               + max(c.zero_page, c.copy_page))

    def user_fault(self, thread: Thread, vaddr: int, access: Access,
                   verdict: FaultResolution | None = None) -> None:
        """The slow path: block the thread in WAITPAGE and pulse the memory manager.

        `verdict` is the resolver's decision when it was already taken and nothing
        can change it before the memory manager runs (a fault completed in place).
        """
        self.engine.charge(self.costs.fault_entry)
        self.bus.emit(self.engine.cycles, EventKind.FAULT_BEGIN, thread.process.pid, thread.tid,
                      vaddr=vaddr, access=access.name.lower(), origin="user")
        token = self.sched.block(thread, ThreadState.WAITPAGE)
        self.mm.submit(FaultJob(thread, token, thread.process.space, vaddr, access,
                                verdict=verdict))

    def complete_in_place(self, vaddr: int, access_value: int) -> bool:
        """Take a fault's whole slow path from inside the fill hook, when that changes nothing.

        Only when no other guest thread could run before the faulting one
        resumes — the fault needs no device (zero-fill, write tracking, or a lazy
        allocation, cached page or copy with a frame free), a memory-manager
        thread is waiting with no pulse queued, no thread of the same or higher
        priority is ready, and no timer falls due in the meantime — are the same
        steps (WAITPAGE, pulse, procnto, READY, dispatch) taken here. Otherwise
        the CPU stops as usual (returns False).
        """
        thread = self.sched.current
        if thread is None or thread.body is not None:
            return False
        access = ACCESS_BY_VALUE[access_value]
        verdict = resolve_fault(thread.process.space, vaddr, access)
        cause, request = verdict.cause, verdict.request
        if request is None or request.needs_read:
            return False        # page-ins wait for the device; signals stop the thread
        if cause not in (FaultCause.ZERO_FILL, FaultCause.WRITE_TRACK) and self.frames.unreserved <= 0:
            return False        # a lazy allocation or a copy that would fail: SIGBUS
        channel = self.mm.channel
        if not channel.receivers or channel.peek_priority() is not None \
                or self.sched.has_ready(thread.priority):
            return False
        due = self.timers.next_due()
        if due is not None and due <= self.engine.cycles + self._in_place_cost:
            return False
        self.user_fault(thread, vaddr, access, verdict)
        while (nxt := self.dispatcher.next_thread()) is not thread:
            assert nxt is not None and nxt.body is not None, "a guest thread ran during a fault"
            self.dispatcher.run_thread(nxt)
        self.engine.fastpath.state.cycle_stop = self.dispatcher.deadline(thread)
        return True

    def fault_in(self, space: AddressSpace, vaddr: int, access: Access) -> bool:
        """A fault on the kernel's behalf (copy-in/out), served at once; True if the page is there."""
        thread = self.sched.current
        if thread is not None and thread.process.space is space:
            pid, tid = thread.process.pid, thread.tid
        else:       # building a new process's stack: no thread of it runs yet
            proc = self.dispatcher.process_of(space)
            pid = tid = proc.pid if proc is not None else 0
        costs = self.costs
        self.engine.charge(costs.fault_entry + costs.procnto_fault)
        self.bus.emit(self.engine.cycles, EventKind.FAULT_BEGIN, pid, tid, vaddr=vaddr,
                      access=access.name.lower(), origin="kernel")
        verdict = resolve_fault(space, vaddr, access)
        cause, signo = verdict.cause, verdict.signal
        if verdict.outcome is Outcome.NEEDS_PAGER:
            assert verdict.request is not None
            if verdict.request.needs_read:        # wait for the device in line
                done = self.device.submit(self.engine.cycles, pages=1, write=False)
                self.engine.charge(done - self.engine.cycles)
            result = self.pager.service(space, verdict.request)
            cause, signo = result.cause, result.signal
            if not signo:
                self.engine.charge(work_cycles(cause, costs))
        self.stats.count_fault(cause)
        self.bus.emit(self.engine.cycles, EventKind.FAULT_END, pid, tid, vaddr=vaddr,
                      cause=cause.value, signal=signo)
        return signo == 0
