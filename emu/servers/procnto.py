"""procnto's memory-manager threads: the slow path of a page fault.

A guest thread whose fault the fast path could not resolve is blocked in
WAITPAGE by the kernel's fault entry, which submits a `FaultJob` here: a pulse at
the thread's priority on the memory-manager channel. A server thread — an
ordinary thread, scheduled like any other — receives the pulse, takes on its
priority (QNX priority inheritance, through the scheduler) and serves the fault
one `Pager.serve` step at a time:

- `Resolved`: the page work is charged and the faulting thread made READY (end of
  its queue);
- `PageIn`: a read goes to the backing store and the server blocks in REPLY until
  it completes, letting other threads run; then it serves again (an I/O error ends
  the fault with SIGBUS/BUS_OBJERR instead);
- `Deliver`: the faulting thread gets SIGSEGV/SIGBUS.

Service priority is a policy: QNX's servers take each pulse's priority (`fixed_priority`
None, the default); with a fixed priority they run at it whatever the faulting thread's,
which is what a system designer gets by raising procnto's threads (QNX `procnto -P`-style
tuning) and what `emu demo` compares with inheritance.

The end of a fault (charge, FaultEnd event, wake or signal) is `FaultEnding.finish`,
shared with every other path that completes a fault.
"""
from __future__ import annotations

import signal
from typing import Callable

from emu.kernel.channel import Channel
from emu.kernel.faultjob import FaultEnding, FaultJob, ServerFaults
from emu.kernel.io import BackingStore
from emu.kernel.process import Thread, ThreadState
from emu.kernel.sched import Scheduler
from emu.kernel.waits import Waits
from emu.mm.fault import BUS_OBJERR, Deliver, FaultCause, Resolved
from emu.mm.pager import PageIn, Pager
from emu.profile import KernelCosts
from emu.trace.events import EventBus, FaultServe, Pulse


class MemoryManager:
    """The memory-manager channel and the body of its server threads."""

    def __init__(self, sched: Scheduler, bus: EventBus, waits: Waits, store: BackingStore,
                 pager: Pager, costs: KernelCosts, now: Callable[[], int],
                 charge: Callable[[int], None], fixed_priority: int | None = None,
                 io_wait: Callable[[Thread, int, ThreadState], object] | None = None) -> None:
        """A memory manager using these kernel facilities (`ending` is set by the kernel's
        fault entry, which owns the end of a fault); with `fixed_priority` its servers keep
        their own priority instead of inheriting each pulse's; `io_wait(server, done_at,
        state)` blocks a server until a page-in is there (default: until the device's
        completion time; a DeviceDriver's wait_for adds the driver thread's turn)."""
        self.channel = Channel()
        self.sched = sched
        self.bus = bus
        self.waits = waits
        self.store = store
        self.pager = pager
        self.costs = costs
        self.now = now
        self.charge = charge
        self.ending: FaultEnding | None = None
        self.servers: list[Thread] = []
        self.fixed_priority = fixed_priority
        self.io_wait = io_wait or waits.block_until
        self.faults: ServerFaults | None = None     # a fault injector's hooks

    def add_server(self, server: Thread) -> None:
        """A memory-manager thread (already blocked in RECEIVE) joins the pool."""
        self.servers.append(server)
        self.channel.receivers.append(server)

    def idle(self) -> bool:
        """Whether a server waits in RECEIVE and no pulse is queued (a fault sent now is
        taken at once)."""
        return bool(self.channel.receivers) and self.channel.peek_priority() is None

    def submit(self, job: FaultJob) -> None:
        """Send the fault pulse at the faulting thread's priority (the thread is already WAITPAGE).

        A server waiting in RECEIVE is woken at that priority. If every server is
        busy, the first one below that priority is raised to it (QNX priority
        inheritance), so that the pulse is not starved by threads in between.
        """
        self.charge(self.costs.pulse)
        lost_for = self.faults.pulse_lost(job) if self.faults is not None else 0
        if lost_for:                # it never arrives: the fault entry sends it again later
            self.waits.timers.at(self.now() + lost_for, lambda: self._resend(job))
            return
        prio = job.thread.priority
        receiver = self.channel.send(prio, job)
        inherit = self.fixed_priority is None
        server = receiver or (next((s for s in self.servers if s.priority < prio), None)
                              if inherit else None)
        if self.bus.wants(Pulse):
            self.bus.publish(Pulse(self.now(), job.thread.process.pid, job.thread.tid,
                                   job.fault_id, prio,
                                   server.process.pid if server else None,
                                   server.tid if server else None))
        if receiver is not None:
            if inherit:
                self.sched.set_priority(receiver, prio, "inherit")
            self.sched.wake(receiver, receiver.wait_token)
        elif server is not None:
            self.sched.set_priority(server, prio, "inherit")

    def _resend(self, job: FaultJob) -> None:
        """A lost pulse's timeout: send it again, if its thread still waits for it."""
        if self.sched.is_waiting_on(job.thread, job.token):
            self.submit(job)

    # ---- the server thread's body: called each time the scheduler runs it ----

    def body(self, server: Thread) -> None:
        """Do the next piece of work, or block in RECEIVE when there is none."""
        job: FaultJob | None = server.job
        if job is None:
            pulse = self.channel.receive()
            if pulse is None:
                self.channel.receivers.append(server)
                self.sched.block(server, ThreadState.RECEIVE)
                self.sched.set_priority(server, server.base_priority, "restore")
                return
            job = pulse.payload
            if self.fixed_priority is None:
                self.sched.set_priority(server, pulse.priority, "inherit")
            if not self.sched.is_waiting_on(job.thread, job.token):
                return                               # the faulting process died meanwhile
            server.job = job
            if self.bus.wants(FaultServe):
                self.bus.publish(FaultServe(self.now(), server.process.pid, server.tid,
                                            job.fault_id))
            self.charge(self.costs.procnto_fault)
            delay = self.faults.serve_delay(job) if self.faults is not None else 0
            if delay:               # held back: other threads run meanwhile
                job.held = True
                self.waits.block_until(server, self.now() + delay, ThreadState.REPLY)
                return
        elif not self.sched.is_waiting_on(job.thread, job.token):
            server.job = None                        # died while the device worked
            return
        elif job.read is not None and not job.read.ok:
            server.job = None                        # the page-in failed: SIGBUS
            self._finish(job, Deliver(signal.SIGBUS, BUS_OBJERR, job.vaddr, FaultCause.SIGBUS))
            return
        self.serve(server, job)

    def serve(self, server: Thread, job: FaultJob) -> None:
        """One step of serving `job` on `server`: finish it, or wait for the device."""
        if job.decided is not None:         # a fault completed in place: already resolved
            request, job.decided = job.decided, None
            server.job = None
            self._finish(job, self.pager.service(job.space, request))
            return
        step = self.pager.serve(job.space, job.vaddr, job.access, after_read=job.read is not None)
        if isinstance(step, PageIn):
            process = job.thread.process
            job.read = self.store.submit(process.pid, job.thread.tid, 1, False, "page_in",
                                         step.request.mapping.name)
            self.io_wait(server, job.read.done_at, ThreadState.REPLY)
            return
        server.job = None
        self._finish(job, step)

    def _finish(self, job: FaultJob, outcome: Resolved | Deliver) -> None:
        assert self.ending is not None, "the fault entry did not take the end of faults"
        self.ending.finish(job, outcome)
