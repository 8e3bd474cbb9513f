"""Fault entry: what the kernel does with a fault the C fast path could not resolve.

- `user_fault`: the slow path — block the thread in WAITPAGE and pulse procnto's
  memory manager at the thread's priority (emu/servers/procnto.py does the rest);
- `complete_in_place`: the very same steps taken from inside the fill hook, when
  the kernel can prove that no other guest thread would run meanwhile: it saves
  stopping and restarting the CPU and is exactly equivalent — the fill hook knows
  the faulting instruction, so the rest of its block is taken off the clock first,
  as the stopping path does;
- `fault_in`: a fault on the kernel's own behalf (copy-in/out), served at once;
- `finish`: the end of every fault — charge, FaultEnd event, wake or signal.

Every fault gets a `fault_id` that its events share.
"""
from __future__ import annotations

import itertools
import signal
from typing import Callable, Protocol

from emu.cpu.engine import FAULT_DONE, FAULT_DONE_STOP, FAULT_STOP, CpuEngine
from emu.kernel.faultjob import FaultJob, FaultServer
from emu.kernel.io import BackingStore
from emu.kernel.process import Process, Thread, ThreadState
from emu.kernel.sched import Scheduler
from emu.kernel.timers import TimerQueue
from emu.mm.fault import (ACCESS_BY_VALUE, BUS_OBJERR, Access, Deliver, FaultCause, NeedsPage,
                          PageRequest, Resolved, resolve_fault)
from emu.mm.frames import FrameAllocator
from emu.mm.pager import PageIn, Pager, work_cycles
from emu.mm.prefault import Prefaulter
from emu.mm.vmspace import AddressSpace
from emu.profile import KernelCosts
from emu.trace.events import EventBus, FaultBegin, FaultEnd, Prefault

FaultSignal = Callable[[Thread, int, int, int, Access], None]
"""(thread, signal, si_code, vaddr, access): a fault the memory manager could not resolve
becomes this signal for the thread (in WAITPAGE), which then runs its handler or dies."""

_NO_FRAME_NEEDED = (FaultCause.ZERO_FILL, FaultCause.WRITE_TRACK)   # committed, or no frame


class Dispatcher(Protocol):
    """The run loop's steps, which completing a fault in place takes itself."""

    def next_thread(self) -> Thread | None:
        """Fire due timers, dispatch and switch to the next thread."""

    def run_thread(self, thread: Thread) -> None:
        """Run one dispatched thread until it stops."""

    def deadline(self, thread: Thread) -> int:
        """When the running guest thread must stop."""

    def stop_wanted(self) -> bool:
        """Whether the machine's client asked the run to stop as soon as possible."""

    def process_of(self, space: AddressSpace) -> Process | None:
        """The process that owns an address space."""


class FaultEntry:
    """The kernel's fault entry points, and the end of every fault."""

    def __init__(self, engine: CpuEngine, sched: Scheduler, mm: FaultServer,
                 timers: TimerQueue, store: BackingStore, pager: Pager, frames: FrameAllocator,
                 costs: KernelCosts, bus: EventBus, prefault: Prefaulter | None = None) -> None:
        """Fault entry over these kernel parts; `bind` gives it the run loop and signals;
        `prefault` sets up pages around each fault served (the prefault heuristic)."""
        self.engine = engine
        self.sched = sched
        self.mm = mm
        self.timers = timers
        self.store = store
        self.pager = pager
        self.frames = frames
        self.costs = costs
        self.bus = bus
        self.prefault = prefault
        self.dispatcher: Dispatcher | None = None
        self.signal_fault: FaultSignal | None = None
        self._ids = itertools.count(1)
        mm.ending = self
        c = costs
        around = prefault.policy.most if prefault is not None else 0
        self._in_place_cost = (c.fault_entry + c.pulse + 2 * c.context_switch + c.procnto_fault
                               + (1 + around) * max(c.zero_page, c.copy_page))

    def bind(self, dispatcher: Dispatcher, signal_fault: FaultSignal) -> None:
        """Connect the run loop (for faults completed in place) and fault signals."""
        self.dispatcher = dispatcher
        self.signal_fault = signal_fault

    def user_fault(self, thread: Thread, vaddr: int, access: Access,
                   decided: PageRequest | None = None) -> None:
        """The slow path: block the thread in WAITPAGE and pulse the memory manager
        (`decided`: the resolver's request, when nothing can change it before the server
        runs — a fault completed in place)."""
        self.engine.charge(self.costs.fault_entry)
        fault_id = next(self._ids)
        if self.bus.wants(FaultBegin):
            self.bus.publish(FaultBegin(self.engine.cycles, thread.process.pid, thread.tid,
                                        fault_id, vaddr, access.name.lower(), "user"))
        token = self.sched.block(thread, ThreadState.WAITPAGE)
        self.mm.submit(FaultJob(fault_id, thread, token, thread.process.space, vaddr, access,
                                decided=decided))

    def complete_in_place(self, vaddr: int, access_value: int) -> int:
        """Take a fault's whole slow path from inside the fill hook, when that changes nothing.

        Only when no other guest thread could run before the faulting one resumes
        — the fault needs no device (zero-fill, write tracking, or a lazy
        allocation, cached page or copy with a frame free), a memory-manager
        thread is waiting with no pulse queued, no thread of the same or higher
        priority is ready, no timer falls due meanwhile, and the faulting block
        ends where a block started at the faulting instruction would end — are
        the same steps (WAITPAGE, pulse, procnto, READY, dispatch) taken here, at
        the same clock. Returns FAULT_STOP (the CPU stops as usual), FAULT_DONE
        (the access is retried at once) or FAULT_DONE_STOP (done, then the CPU
        stops at the faulting instruction: a deadline or a stop request).
        """
        dispatcher = self.dispatcher
        thread = self.sched.current
        if dispatcher is None or thread is None or thread.body is not None:
            return FAULT_STOP
        access = ACCESS_BY_VALUE[access_value]
        verdict = resolve_fault(thread.process.space, vaddr, access)
        if not isinstance(verdict, NeedsPage) or verdict.request.needs_read:
            return FAULT_STOP   # page-ins wait for the device; signals stop the thread
        if verdict.cause not in _NO_FRAME_NEEDED and self.frames.unreserved <= 0:
            return FAULT_STOP   # a lazy allocation or a copy that would fail: SIGBUS
        engine = self.engine
        if not self.mm.idle() or self.sched.has_ready(thread.priority) \
                or not engine.block_ends_at_branch():
            return FAULT_STOP
        pc = engine.fault_pc()
        taken = engine.take_back_unretired(pc)       # the clock the stopping path would have
        due = self.timers.next_due()
        if due is not None and due <= engine.cycles + self._in_place_cost:
            engine.give_back(taken)
            return FAULT_STOP
        thread.pc = pc
        self.user_fault(thread, vaddr, access, verdict.request)
        while (nxt := dispatcher.next_thread()) is not thread:
            assert nxt is not None and nxt.body is not None, "a guest thread ran during a fault"
            dispatcher.run_thread(nxt)
        deadline = dispatcher.deadline(thread)
        if dispatcher.stop_wanted() or engine.cycles >= deadline:
            engine.stop_after_fault()               # the block's rest runs when it restarts
            return FAULT_DONE_STOP
        engine.give_back(taken)
        engine.fastpath.state.cycle_stop = deadline
        return FAULT_DONE

    def fault_in(self, space: AddressSpace, vaddr: int, access: Access) -> bool:
        """A fault on the kernel's behalf (copy-in/out), served at once, the device waited for
        in line; True if the page is there."""
        thread = self.sched.current
        if thread is not None and thread.process.space is space:
            pid, tid = thread.process.pid, thread.tid
        else:       # building a new process's stack: no thread of it runs yet
            proc = self.dispatcher.process_of(space) if self.dispatcher is not None else None
            pid = tid = proc.pid if proc is not None else 0
        costs, engine = self.costs, self.engine
        engine.charge(costs.fault_entry + costs.procnto_fault)
        fault_id = next(self._ids)
        if self.bus.wants(FaultBegin):
            self.bus.publish(FaultBegin(engine.cycles, pid, tid, fault_id, vaddr,
                                        access.name.lower(), "kernel"))
        step = self.pager.serve(space, vaddr, access)
        if isinstance(step, PageIn):
            read = self.store.submit(pid, tid, 1, False, "page_in", step.request.mapping.name)
            engine.charge(max(0, read.done_at - engine.cycles))
            step = (self.pager.serve(space, vaddr, access, after_read=True) if read.ok else
                    Deliver(signal.SIGBUS, BUS_OBJERR, vaddr, FaultCause.SIGBUS))
        assert not isinstance(step, PageIn)
        if isinstance(step, Resolved):
            engine.charge(work_cycles(step.cause, costs))
        self._fault_end(pid, tid, fault_id, vaddr, step, "kernel")
        return isinstance(step, Resolved)

    def finish(self, job: FaultJob, outcome: Resolved | Deliver) -> None:
        """The end of a deferred fault: charge the page work, publish FaultEnd, then wake the
        faulting thread — or give it the fault's signal."""
        thread = job.thread
        if isinstance(outcome, Resolved):
            self.engine.charge(work_cycles(outcome.cause, self.costs))
            if self.prefault is not None:
                self._prefault(job)
        self._fault_end(thread.process.pid, thread.tid, job.fault_id, job.vaddr, outcome, "user")
        if isinstance(outcome, Deliver):
            assert self.signal_fault is not None
            self.signal_fault(thread, outcome.signal, outcome.code, job.vaddr, job.access)
        else:
            self.sched.wake(thread, job.token)

    def _prefault(self, job: FaultJob) -> None:
        """Set up the pages the prefault policy wants around a served fault, charging their
        work to the server's time (the faulting thread waits for it)."""
        assert self.prefault is not None
        done = self.prefault.around(job.space, job.vaddr, job.access)
        if done:
            self.engine.charge(sum(work_cycles(cause, self.costs) for cause in done))
            if self.bus.wants(Prefault):
                self.bus.publish(Prefault(self.engine.cycles, job.thread.process.pid,
                                          job.thread.tid, job.fault_id, job.vaddr, len(done)))

    def _fault_end(self, pid: int, tid: int, fault_id: int, vaddr: int,
                   outcome: Resolved | Deliver, origin: str) -> None:
        if self.bus.wants(FaultEnd):
            signo = outcome.signal if isinstance(outcome, Deliver) else 0
            self.bus.publish(FaultEnd(self.engine.cycles, pid, tid, fault_id, vaddr,
                                      outcome.cause.value, signo, origin))
