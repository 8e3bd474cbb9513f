"""procnto's memory-manager threads: the slow path of a page fault.

A guest thread whose fault the fast path could not resolve is blocked in
WAITPAGE by the kernel, which sends a pulse at the thread's priority on the
memory-manager channel. A server thread — an ordinary thread, scheduled like
any other — receives the pulse, takes on its priority (QNX priority
inheritance), runs the fault resolver and:

- RESOLVED / done without I/O: fixes the page tables and makes the faulting
  thread READY (end of its queue);
- needs I/O (page_in): submits a read to the block device and blocks in REPLY
  until it completes, letting other threads run; then finishes the page;
- SIGNAL: the faulting thread gets SIGSEGV/SIGBUS.

Each step is charged its cycles from the profile.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from emu.kernel.channel import Channel
from emu.kernel.device import BlockDevice
from emu.kernel.process import Thread, ThreadState
from emu.kernel.sched import Scheduler
from emu.kernel.timers import TimerQueue
from emu.mm.fault import Access, FaultCause, FaultResolution, Outcome, PageRequest, resolve_fault
from emu.mm.pager import Pager, work_cycles
from emu.mm.vmspace import AddressSpace
from emu.profile import KernelCosts
from emu.trace.events import EventBus, EventKind


@dataclass
class FaultJob:
    """One deferred fault: who faulted where, and how far the server got."""

    thread: Thread
    token: object                   # the faulting thread's WAITPAGE wait
    space: AddressSpace
    vaddr: int
    access: Access
    verdict: FaultResolution | None = None  # decided at fault time when nothing can change it


FaultSignal = Callable[[Thread, int, int, int, Access], None]
"""(thread, signal, si_code, vaddr, access): deliver a fault signal to a thread."""


class MemoryManager:
    """The memory-manager channel and the body of its server threads."""

    def __init__(self, sched: Scheduler, bus: EventBus, timers: TimerQueue, device: BlockDevice,
                 pager: Pager, costs: KernelCosts, now: Callable[[], int],
                 charge: Callable[[int], None], count_fault: Callable[[FaultCause], None],
                 signal_fault: FaultSignal) -> None:
        """A memory manager using these kernel facilities."""
        self.channel = Channel()
        self.sched = sched
        self.bus = bus
        self.timers = timers
        self.device = device
        self.pager = pager
        self.costs = costs
        self.now = now
        self.charge = charge
        self.count_fault = count_fault
        self.signal_fault = signal_fault
        self.servers: list[Thread] = []

    def add_server(self, server: Thread) -> None:
        """A memory-manager thread (already blocked in RECEIVE) joins the pool."""
        self.servers.append(server)
        self.channel.receivers.append(server)

    def submit(self, job: FaultJob) -> None:
        """Send the fault pulse at the faulting thread's priority (the thread is already WAITPAGE).

        A server waiting in RECEIVE is woken at that priority. If every server is
        busy, the first one below that priority is raised to it (QNX priority
        inheritance), so that the pulse is not starved by threads in between.
        """
        self.charge(self.costs.pulse)
        prio = job.thread.priority
        receiver = self.channel.send(prio, job)
        server = receiver or next((s for s in self.servers if s.priority < prio), None)
        self.bus.emit(self.now(), EventKind.PULSE, job.thread.process.pid, job.thread.tid,
                      priority=prio, server_pid=server.process.pid if server else None,
                      server_tid=server.tid if server else None)
        if receiver is not None:
            receiver.priority = prio                 # inherit the pulse's priority
            self.sched.wake(receiver, receiver.wait_token)
        elif server is not None:
            self.sched.set_priority(server, prio)

    # ---- the server thread's body: called each time the scheduler runs it ----

    def body(self, server: Thread) -> None:
        """Do the next piece of work, or block in RECEIVE when there is none."""
        job: FaultJob | None = server.job
        if job is None:
            pulse = self.channel.receive()
            if pulse is None:
                server.priority = server.base_priority
                self.channel.receivers.append(server)
                self.sched.block(server, ThreadState.RECEIVE)
                return
            job = pulse.payload
            server.job = job
            if server.priority != pulse.priority:
                self.sched.set_priority(server, pulse.priority)
            if self.sched.is_waiting_on(job.thread, job.token):
                self.charge(self.costs.procnto_fault)
                self._act(server, job, job.verdict or resolve_fault(job.space, job.vaddr, job.access))
            else:
                server.job = None                    # the faulting process died meanwhile
        elif self.sched.is_waiting_on(job.thread, job.token):
            # back from the device: decide again, the page or the mapping may have changed
            verdict = resolve_fault(job.space, job.vaddr, job.access)
            if verdict.outcome is Outcome.NEEDS_PAGER:
                assert verdict.request is not None
                self._service(server, job, verdict.request)
            else:
                self._act(server, job, verdict)
        else:
            server.job = None

    def _act(self, server: Thread, job: FaultJob, verdict: FaultResolution) -> None:
        """Carry out the resolver's verdict: done, signal, wait for the device, or fill now."""
        if verdict.outcome is Outcome.RESOLVED:
            self._done(server, job, verdict.cause)
        elif verdict.outcome is Outcome.SIGNAL:
            self._done(server, job, verdict.cause, verdict.signal, verdict.si_code)
        else:
            assert verdict.request is not None
            if verdict.request.needs_read:
                done_at = self.device.submit(self.now(), pages=1, write=False)
                token = self.sched.block(server, ThreadState.REPLY)
                self.timers.at(done_at, lambda: self.sched.wake(server, token))  # servers never die
            else:
                self._service(server, job, verdict.request)

    def _service(self, server: Thread, job: FaultJob, request: PageRequest) -> None:
        result = self.pager.service(job.space, request)
        if not result.signal:
            self.charge(work_cycles(request.cause, self.costs))
        self._done(server, job, result.cause, result.signal, result.si_code)

    def _done(self, server: Thread, job: FaultJob, cause: FaultCause, signo: int = 0,
              si_code: int = 0) -> None:
        server.job = None
        self.count_fault(cause)
        thread = job.thread
        self.bus.emit(self.now(), EventKind.FAULT_END, thread.process.pid, thread.tid,
                      vaddr=job.vaddr, cause=cause.value, signal=signo)
        if signo:
            self.signal_fault(thread, signo, si_code, job.vaddr, job.access)
        else:
            self.sched.wake(thread, job.token)
