"""procnto's memory manager driven step by step: a real address space and pager, a real scheduler,
a fake cycle clock, and the server body called whenever the scheduler picks the server thread."""
from __future__ import annotations

import os
import signal

import pytest

from emu.kernel.device import BlockDevice, fail_nth
from emu.kernel.faults import FaultEntry
from emu.kernel.io import BackingStore
from emu.kernel.process import Process, Thread, ThreadState
from emu.kernel.sched import Scheduler
from emu.kernel.timers import TimerQueue
from emu.kernel.waits import Waits
from emu.mm.fault import BUS_OBJERR, SEGV_ACCERR, SEGV_MAPERR, Access, FaultCause
from emu.mm.frames import PAGE_SIZE
from emu.mm.objects import FileChunk, FileImage
from emu.mm.vmspace import PROT_READ, PROT_WRITE, Mapping, Share
from emu.profile import KernelCosts
from emu.kernel.faultjob import FaultJob
from emu.servers.procnto import MemoryManager
from emu.trace.events import DeviceRequest, Event, EventBus, FaultEnd, FaultServe, Pulse

from .support import make_memory
from tests.unit.support import dispatch_order

S = ThreadState
P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON, FILE = 0x10_0000, 0x40_0000
SLICE = 1_000_000
READ_LATENCY = 50_000
COSTS = KernelCosts(syscall=150, fault_entry=400, pulse=300, context_switch=600,
                    procnto_fault=2000, zero_page=1000, copy_page=1500, driver_interrupt=3000)


class Clock:
    """The simulated cycle counter: read with now() or .cycles, advanced by charge() (what the
    fault entry needs of the CPU)."""

    def __init__(self) -> None:
        self.cycles = 0

    def now(self) -> int:
        return self.cycles

    def charge(self, cycles: int) -> None:
        assert cycles >= 0
        self.cycles += cycles


class Rig:
    """One guest process over real memory, procnto with one memory-manager thread, and logs."""

    def __init__(self, tmp_path, device: BlockDevice | None = None) -> None:
        self.mem = make_memory()
        self.clock = Clock()
        self.events: list[Event] = []
        self.bus = EventBus()
        self.bus.subscribe(self.events.append)
        self.sched = Scheduler(self.bus, self.clock.now, SLICE)
        self.timers = TimerQueue()
        self.device = device or BlockDevice(read_page_cycles=READ_LATENCY,
                                            write_page_cycles=2 * READ_LATENCY)
        self.signals: list[tuple] = []
        store = BackingStore(self.device, self.bus, self.timers, self.clock.now)
        self.mm = MemoryManager(self.sched, self.bus, Waits(self.sched, self.timers), store,
                                self.mem.pager, COSTS, self.clock.now, self.clock.charge)
        self.entry = FaultEntry(self.clock, self.sched, self.mm, self.timers, store,  # type: ignore[arg-type]
                                self.mem.pager, self.mem.frames, COSTS, self.bus)
        self.entry.bind(None, lambda *args: self.signals.append(args))  # type: ignore[arg-type]
        procnto = Process(pid=1, arch="x86_64", space=None, mem=None, root=None,
                          exe_path="procnto")
        self.server = Thread(tid=1, process=procnto, priority=10, base_priority=10,
                             body=self.mm.body, name="procnto-mm0")
        procnto.threads.append(self.server)
        self.sched.admit_blocked(self.server, S.RECEIVE)
        self.mm.add_server(self.server)
        self.proc = Process(pid=2, arch="x86_64", space=self.mem.space, mem=None, root=None,
                            exe_path="guest")
        self.mem.map_anon(ANON, 8, RW)
        self.file_content = bytes((i * 13 + 5) % 251 for i in range(2 * P))
        path = tmp_path / "image.bin"
        path.write_bytes(self.file_content)
        fd = os.open(path, os.O_RDONLY)
        image = FileImage(fd, "image", [FileChunk(0, 0, len(self.file_content))])
        os.close(fd)
        self.mem.space.insert(Mapping(FILE, FILE + 2 * P, PROT_READ, Share.PRIVATE, image, 0,
                                      "image"))
        self._tid = 10

    @property
    def faults(self) -> list[FaultCause]:
        """The causes of the faults that ended, in order (from FaultEnd events)."""
        return [FaultCause(e.cause) for e in self.of(FaultEnd)]

    def of(self, kind: type[Event]) -> list:  # type: ignore[type-arg]
        return [e for e in self.events if type(e) is kind]

    def guest(self, priority: int = 10, name: str = "") -> Thread:
        self._tid += 1
        t = Thread(tid=self._tid, process=self.proc, priority=priority, base_priority=priority,
                   name=name or f"g{self._tid}")
        self.proc.threads.append(t)
        self.sched.admit(t)
        return t

    def run_until(self, thread: Thread) -> None:
        """Dispatch (letting other guests yield) until `thread` is running."""
        for _ in range(20):
            t = self.sched.dispatch()
            if t is thread:
                return
            assert t is not None and t is not self.server, f"dispatched {t}"
            self.sched.yield_cpu(t)
        raise AssertionError(f"{thread.name} never ran")

    def fault(self, thread: Thread, vaddr: int, access: Access = Access.WRITE) -> FaultJob:
        """What the kernel does on a slow-path fault of the running `thread`."""
        assert self.sched.current is thread
        token = self.sched.block(thread, S.WAITPAGE)
        self._fault_id = getattr(self, "_fault_id", 0) + 1
        job = FaultJob(self._fault_id, thread, token, self.mem.space, vaddr, access)
        self.mm.submit(job)
        return job

    def step(self) -> Thread | None:
        """Dispatch once; if the server is chosen, run its body once. Returns who was chosen."""
        t = self.sched.dispatch()
        if t is not None and t.body is not None:
            t.body(t)
        return t

    def serve(self) -> None:
        """Dispatch the server (it must be next) and run its body once."""
        assert self.step() is self.server

    def present(self, vaddr: int) -> bool:
        return self.mem.space.page_table.lookup(vaddr >> 12) is not None

    def page(self, vaddr: int) -> bytes:
        pte = self.mem.space.page_table.lookup(vaddr >> 12)
        return self.mem.ram.read(pte.frame << 12, P)

    def ready_order(self) -> list[Thread]:
        """Who runs from now on, until nothing is ready (the server must not be among them)."""
        return dispatch_order(self.sched)


@pytest.fixture
def rig(tmp_path) -> Rig:
    return Rig(tmp_path)


# ---- the pulse ----

def test_pulse_wakes_the_server_at_the_end_of_the_fault_priority_queue(rig):
    a, b = rig.guest(), rig.guest()
    rig.run_until(a)
    rig.fault(a, ANON)
    assert a.state is S.WAITPAGE and rig.server.state is S.READY
    assert rig.step() is b                     # b was ready first: the server waits its turn
    rig.sched.yield_cpu(b)
    assert rig.step() is rig.server


def test_pulse_event_and_cost(rig):
    a = rig.guest(priority=12)
    rig.run_until(a)
    before = rig.clock.cycles
    rig.fault(a, ANON)
    (pulse,) = rig.of(Pulse)
    assert (pulse.pid, pulse.tid) == (2, a.tid)
    assert pulse.priority == 12 and pulse.server_tid == rig.server.tid
    assert rig.clock.cycles - before == COSTS.pulse
    assert rig.mm.channel.pulses_sent == 1


def test_server_inherits_the_pulse_priority(rig):
    mid = rig.guest(priority=15)
    high = rig.guest(priority=20)
    rig.run_until(high)
    rig.fault(high, ANON)
    assert rig.server.priority == 20
    assert rig.step() is rig.server            # ahead of the priority-15 thread
    assert mid.state is S.READY


def test_server_returns_to_its_base_priority_when_idle(rig):
    high = rig.guest(priority=20)
    rig.run_until(high)
    rig.fault(high, ANON)
    rig.serve()                                # resolves the fault
    rig.server.body(rig.server)                # nothing left: back to RECEIVE
    assert rig.server.state is S.RECEIVE and rig.server.priority == 10
    assert rig.mm.channel.receivers[0] is rig.server


def test_server_inherits_a_lower_priority_too(rig):
    low = rig.guest(priority=3)
    rig.run_until(low)
    rig.fault(low, ANON)
    assert rig.server.priority == 3


# ---- zero fill ----

def test_zero_fill_completes_in_one_step(rig):
    a = rig.guest()
    rig.run_until(a)
    rig.fault(a, ANON + 5, Access.WRITE)
    rig.serve()
    assert rig.present(ANON) and rig.page(ANON) == bytes(P)
    assert a.state is S.READY and a.pending_result is None
    assert rig.faults == [FaultCause.ZERO_FILL]
    assert rig.server.state is S.RUNNING and rig.server.job is None


def test_zero_fill_charges_pulse_procnto_and_zeroing(rig):
    a = rig.guest()
    rig.run_until(a)
    rig.fault(a, ANON)
    rig.serve()
    assert rig.clock.cycles == COSTS.pulse + COSTS.procnto_fault + COSTS.zero_page


def test_fault_end_event(rig):
    a = rig.guest()
    rig.run_until(a)
    rig.fault(a, ANON + 0x123)
    rig.serve()
    (end,) = rig.of(FaultEnd)
    assert end == FaultEnd(rig.clock.cycles, 2, a.tid, 1, ANON + 0x123, "zero_fill", 0, "user")


def test_one_fault_id_links_pulse_serve_and_end(rig):
    a = rig.guest()
    rig.run_until(a)
    rig.fault(a, ANON)
    rig.serve()
    ids = [(type(e).__name__, e.fault_id) for e in rig.events
           if isinstance(e, (Pulse, FaultServe, FaultEnd))]
    assert ids == [("Pulse", 1), ("FaultServe", 1), ("FaultEnd", 1)]
    (serve,) = rig.of(FaultServe)
    assert (serve.pid, serve.tid) == (1, rig.server.tid)


def test_resolved_thread_joins_the_end_of_its_queue(rig):
    a, b, c = rig.guest(), rig.guest(), rig.guest()
    rig.run_until(a)
    rig.fault(a, ANON)
    assert rig.step() is b
    rig.sched.yield_cpu(b)                     # queue: c, server, b
    assert rig.step() is c
    rig.sched.yield_cpu(c)                     # queue: server, b, c
    rig.serve()                                # a becomes READY behind b and c
    rig.server.body(rig.server)                # back to RECEIVE
    assert rig.ready_order() == [b, c, a]


def test_a_page_already_present_is_a_spurious_fault(rig):
    a = rig.guest()
    rig.run_until(a)
    rig.mem.fault_in(ANON, Access.WRITE)       # fixed meanwhile (e.g. by a kernel copy-in)
    rig.fault(a, ANON, Access.WRITE)
    rig.serve()
    assert rig.faults == [FaultCause.SPURIOUS] and a.state is S.READY


# ---- page-in from the backing store ----

def test_page_in_blocks_the_server_until_the_device_completes(rig):
    a, b = rig.guest(), rig.guest()
    rig.run_until(a)
    rig.fault(a, FILE + P + 8, Access.READ)
    assert rig.step() is b                     # b runs first, then sleeps
    rig.sched.block(b, S.NANOSLEEP)
    rig.serve()
    assert rig.server.state is S.REPLY and a.state is S.WAITPAGE
    assert not rig.present(FILE + P)
    assert rig.timers.next_due() == rig.clock.cycles + READ_LATENCY
    assert rig.sched.dispatch() is None        # nothing ready: a waits, the server waits


def test_other_threads_run_while_the_device_is_busy(rig):
    a, b = rig.guest(), rig.guest()
    rig.run_until(a)
    rig.fault(a, FILE, Access.READ)
    assert rig.step() is b
    rig.sched.yield_cpu(b)
    rig.serve()
    assert rig.step() is b                     # the server is in REPLY: b keeps the CPU


def test_page_in_completes_after_the_device_timer(rig):
    a = rig.guest()
    rig.run_until(a)
    rig.fault(a, FILE + P, Access.READ)
    rig.serve()
    due = rig.timers.next_due()
    assert rig.timers.fire_due(due - 1) == 0
    rig.clock.cycles = due
    assert rig.timers.fire_due(due) == 2           # the server's wake-up, the DeviceComplete
    assert rig.server.state is S.READY
    rig.serve()
    assert rig.page(FILE + P) == rig.file_content[P:2 * P]
    assert a.state is S.READY and rig.faults == [FaultCause.PAGE_IN]
    assert rig.device.pages_read == 1


def test_page_in_charges_procnto_and_the_copy(rig):
    a = rig.guest()
    rig.run_until(a)
    rig.fault(a, FILE, Access.READ)
    rig.serve()
    assert rig.clock.cycles == COSTS.pulse + COSTS.procnto_fault
    rig.clock.cycles = rig.timers.next_due()
    rig.timers.fire_due(rig.clock.cycles)
    start = rig.clock.cycles
    rig.serve()
    assert rig.clock.cycles - start == COSTS.copy_page


def test_pulse_arriving_during_a_page_in_waits_for_it(rig):
    a, b = rig.guest(), rig.guest()
    rig.run_until(a)
    rig.fault(a, FILE, Access.READ)
    rig.run_until(b)
    rig.fault(b, ANON)                         # the only server is busy: the pulse is queued
    rig.serve()                                # starts a's page-in, blocks in REPLY
    assert rig.server.state is S.REPLY and b.state is S.WAITPAGE
    rig.clock.cycles = rig.timers.next_due()
    rig.timers.fire_due(rig.clock.cycles)
    rig.serve()                                # finishes a's page
    assert a.state is S.READY and b.state is S.WAITPAGE
    rig.server.body(rig.server)                # next pulse: b's zero fill
    assert b.state is S.READY
    assert rig.faults == [FaultCause.PAGE_IN, FaultCause.ZERO_FILL]


def test_page_made_present_during_the_device_wait_is_not_paged_in_twice(rig):
    a = rig.guest()
    rig.run_until(a)
    rig.fault(a, FILE, Access.READ)
    rig.serve()                                # server in REPLY
    rig.mem.fault_in(FILE, Access.READ)        # a kernel copy-out touches the same page meanwhile
    rig.clock.cycles = rig.timers.next_due()
    rig.timers.fire_due(rig.clock.cycles)
    rig.serve()
    assert a.state is S.READY and rig.page(FILE) == rig.file_content[:P]


def test_range_unmapped_during_the_device_wait_is_not_mapped(rig):
    a = rig.guest()
    rig.run_until(a)
    rig.fault(a, FILE, Access.READ)
    rig.serve()                                # server in REPLY
    rig.mem.space.remove(FILE, FILE + 2 * P)   # another thread munmaps it meanwhile
    rig.clock.cycles = rig.timers.next_due()
    rig.timers.fire_due(rig.clock.cycles)
    rig.serve()
    assert not rig.present(FILE)
    assert [s[1:3] for s in rig.signals] == [(signal.SIGSEGV, SEGV_MAPERR)]


# ---- signals ----

def test_a_page_in_the_device_fails_is_sigbus_objerr(tmp_path):
    rig = Rig(tmp_path, BlockDevice(READ_LATENCY, 2 * READ_LATENCY, fails=fail_nth(1)))
    a = rig.guest()
    rig.run_until(a)
    rig.fault(a, FILE, Access.READ)
    rig.serve()                                # the read goes out; the server waits
    (request,) = rig.of(DeviceRequest)
    assert (request.reason, request.ok, request.errno) == ("page_in", False, 5)
    rig.clock.cycles = rig.timers.next_due()
    rig.timers.fire_due(rig.clock.cycles)
    rig.serve()                                # the completion says EIO: no page, SIGBUS
    assert not rig.present(FILE)
    assert rig.signals == [(a, signal.SIGBUS, BUS_OBJERR, FILE, Access.READ)]
    assert rig.faults == [FaultCause.SIGBUS]


def test_unmapped_address_signals_sigsegv_maperr(rig):
    a = rig.guest()
    rig.run_until(a)
    job = rig.fault(a, 0xDEAD_0000, Access.READ)
    rig.serve()
    assert rig.signals == [(a, signal.SIGSEGV, SEGV_MAPERR, 0xDEAD_0000, Access.READ)]
    assert rig.faults == [FaultCause.SIGSEGV]
    assert a.state is S.WAITPAGE and rig.sched.is_waiting_on(a, job.token)   # not woken
    (end,) = rig.of(FaultEnd)
    assert end.signal == signal.SIGSEGV and end.cause == "sigsegv"


def test_write_to_a_read_only_mapping_signals_segv_accerr(rig):
    a = rig.guest()
    rig.run_until(a)
    rig.fault(a, FILE, Access.WRITE)
    rig.serve()
    assert [s[1:3] for s in rig.signals] == [(signal.SIGSEGV, SEGV_ACCERR)]
    assert rig.device.pages_read == 0


# ---- priorities ----

def test_pulses_from_a_higher_priority_thread_are_served_first(rig):
    low = rig.guest(priority=10)
    rig.run_until(low)
    rig.fault(low, ANON)                       # wakes the server at 10
    high = rig.guest(priority=20)
    assert rig.step() is high
    rig.fault(high, ANON + P)                  # server busy (READY): the pulse is queued
    rig.serve()
    assert high.state is S.READY and low.state is S.WAITPAGE
    assert rig.present(ANON + P) and not rig.present(ANON)
    assert rig.server.priority == 20           # took on the served pulse's priority
    # the next pulse is low's: the server drops to 10 and gives way to high
    rig.server.body(rig.server)
    assert rig.server.priority == 10
    assert low.state is S.READY
    assert [e.vaddr for e in rig.of(FaultEnd)] == [ANON + P, ANON]


def test_higher_pulse_boosts_a_server_that_has_not_received_yet(rig):
    # QNX System Architecture, "Priority inheritance and messages": when a higher-priority
    # sender sends while the server is still at a lower priority, the server's priority
    # changes at the send, so a medium-priority thread cannot delay the high one's request.
    low = rig.guest(priority=10)
    rig.run_until(low)
    rig.fault(low, ANON)                       # wakes the server at 10
    mid = rig.guest(priority=15)
    high = rig.guest(priority=20)
    assert rig.step() is high
    rig.fault(high, ANON + P)                  # the server is READY at 10: the pulse is queued
    assert rig.server.priority == 20
    assert rig.step() is rig.server and mid.state is S.READY


def test_server_lowered_to_a_queued_pulse_priority_gives_way(rig):
    low = rig.guest(priority=10)
    rig.run_until(low)
    rig.fault(low, ANON)
    high = rig.guest(priority=20)
    assert rig.step() is high
    rig.fault(high, ANON + P)
    rig.serve()                                # high's fault; high READY at 20
    rig.server.body(rig.server)                # takes low's pulse at 10: high preempts it
    assert rig.sched.current is None and rig.server.state is S.READY
    assert rig.sched.dispatch() is high


# ---- the faulting thread went away ----

def test_job_of_a_killed_thread_is_dropped(rig):
    a = rig.guest()
    rig.run_until(a)
    rig.fault(a, ANON)
    rig.sched.kill(a)                          # its process died before the server ran
    rig.serve()
    assert rig.faults == [] and not rig.present(ANON)
    assert rig.server.job is None and rig.clock.cycles == COSTS.pulse


def test_page_in_for_a_thread_killed_during_the_device_wait_is_dropped(rig):
    a = rig.guest()
    rig.run_until(a)
    rig.fault(a, FILE, Access.READ)
    rig.serve()
    rig.sched.kill(a)
    rig.clock.cycles = rig.timers.next_due()
    rig.timers.fire_due(rig.clock.cycles)
    rig.serve()
    assert rig.faults == [] and not rig.present(FILE) and rig.server.job is None
