"""The kernel's run loop: pick a thread, run it, then handle why it stopped.

Guest threads run on the CPU engine until a system call that needs the kernel, a
fault the fast path could not resolve, a CPU exception, or the next deadline
(end of the time slice, the next timer, or a stop point the machine's client
asked for). Kernel threads (procnto's memory-manager servers) run their Python
body when dispatched. The simulated clock is the fast path's cycle counter: guest
blocks, TLB fills and every piece of kernel work are charged to it, and it jumps
forward when every thread is blocked waiting for a timer or the device.

The kernel builds nothing itself: the machine (emu/machine.py) hands it every
collaborator. `step` runs one thread until it stops, so a client can stop and
resume a run between steps.
"""
from __future__ import annotations

import random
import signal
from typing import TYPE_CHECKING, Callable, Protocol

from emu.cpu.engine import NEVER, SYSCALLS_COUNTED, CpuEngine, Stop, StopKind
from emu.errors import EmuError
from emu.kernel.clock import Clock
from emu.kernel.faultjob import MemoryServer
from emu.kernel.faults import FaultEntry
from emu.kernel.futex import FutexTable
from emu.kernel.guestfs import OUTSIDE_ROOT_EXE, GuestRoot
from emu.kernel.io import BackingStore
from emu.kernel.process import Credentials, ExitStatus, Process, Thread, ThreadState
from emu.kernel.sched import Scheduler
from emu.kernel.sigdeliver import exception_info, fault_info
from emu.kernel.signals import SI_KERNEL, SigInfo, deliverable
from emu.kernel.syscalls import Services, SyscallContext, SyscallTable
from emu.kernel.timers import TimerQueue
from emu.kernel.waits import Waits
from emu.loader.elf import ElfImage, map_image
from emu.loader.stack import ProcessIdentity, build_initial_stack
from emu.mm.fault import ACCESS_BY_VALUE, Access
from emu.mm.frames import FrameAllocator, OutOfFrames, PhysicalMemory
from emu.mm.objects import AnonymousMemory
from emu.mm.pagetable import TableFrames
from emu.mm.uaccess import UserMemory
from emu.mm.vmspace import PROT_READ, PROT_WRITE, STACK_SIZE, STACK_TOP, AddressSpace, Mapping, Share
from emu.profile import Profile
from emu.trace.events import (Deadlock, Diagnostic, EventBus, LargePage, LimitReached,
                              ProcessCreate, ProcessExec, ProcessExit, Switch, ThreadExit)

if TYPE_CHECKING:
    from emu.kernel.family import Family
    from emu.kernel.hostio import HostPoller
    from emu.kernel.residency import Residency
    from emu.kernel.sigdeliver import SignalDelivery

_EXCEPTIONS = (StopKind.ILLEGAL, StopKind.BREAKPOINT, StopKind.ARITHMETIC)  # SIGILL/TRAP/FPE
PROCNTO_PID = 1
LARGE_PAGE_SHIFTS = {"x86_64": (21,), "aarch64": (16, 21)}


class Driver(Protocol):
    """A device driver thread's body (emu/servers/devb.py is one)."""

    def attach(self, thread: Thread) -> None:
        """`thread`, blocked in RECEIVE, is the driver's."""

    def body(self, thread: Thread) -> None:
        """The driver thread's work each time the scheduler runs it."""


class Kernel:
    """Processes, threads, the scheduler and the loop that runs them on one CPU."""

    def __init__(self, *, engine: CpuEngine, ram: PhysicalMemory, frames: FrameAllocator,
                 root: GuestRoot, profile: Profile, clock: Clock, bus: EventBus,
                 sched: Scheduler, timers: TimerQueue, waits: Waits, futexes: FutexTable,
                 store: BackingStore, faults: FaultEntry, mm: MemoryServer,
                 syscalls: SyscallTable, tables: TableFrames, insn_limit: int = 0, large_pages: bool = True,
                 seed: int = 0, cycle_limit: int = 0) -> None:
        """A kernel over these collaborators, with no process yet (`start` boots procnto)."""
        self.engine = engine
        self.ram = ram
        self.frames = frames
        self.root = root
        self.profile = profile
        self.costs = profile.kernel
        self.clock = clock
        self.bus = bus
        self.sched = sched
        self.timers = timers
        self.waits = waits
        self.futexes = futexes
        self.store = store
        self.faults = faults
        self.mm = mm
        self.syscalls = syscalls
        self.tables = tables
        self.insn_limit = insn_limit or NEVER
        self.cycle_limit = cycle_limit or NEVER
        # procnto's "v": variable page sizes (2 MiB on x86-64; 64 KiB and 2 MiB on AArch64)
        self.large_shifts = LARGE_PAGE_SHIFTS[engine.spec.name] if large_pages else ()
        self.processes: list[Process] = []
        self.services: Services | None = None
        self.procnto: Process | None = None
        self._next_id = PROCNTO_PID
        self._random = random.Random(seed)
        self._loaded: Thread | None = None      # guest thread whose registers are in the engine
        self._last_run: Thread | None = None
        self._run_start = 0
        self._live_guests = 0
        self._stop_wanted = False
        self._running_guest = False             # inside engine.run (a fault completed in place)
        self.until_cycle = NEVER                # a stop point of the machine's client
        self.until_instructions = NEVER
        self.last_stop: Stop | None = None       # the engine stop that ended the last step
        self.steps = 0                          # steps begun so far
        self.step_started = 0                   # the clock when the current step began

    def connect(self, services: Services, signals: SignalDelivery, family: Family,
                residency: Residency, host_io: HostPoller) -> None:
        """Hand in the parts that need the kernel themselves (built after it)."""
        self.services = services
        self.host_io = host_io
        self.signals = signals
        self.family = family
        self.residency = residency
        self.faults.bind(self, self._fault_signal)

    def start(self, mm_threads: int, mm_priority: int | None = None,
              driver: Driver | None = None, driver_priority: int = 0) -> None:
        """Boot procnto (pid 1) with `mm_threads` memory-manager threads waiting in RECEIVE,
        at `mm_priority` when they serve at a fixed priority (None: they take each pulse's),
        and the block device's `driver` thread at `driver_priority`, if there is one."""
        self.procnto = self.new_process(self.engine.spec.name, "procnto", guest=False)
        prio = mm_priority if mm_priority is not None else self.profile.default_priority
        for i in range(mm_threads):
            server = Thread(tid=self._allocate_id() if i else PROCNTO_PID, process=self.procnto,
                            priority=prio, base_priority=prio, body=self.mm.body,
                            name=f"procnto-mm{i}")
            self.procnto.threads.append(server)
            self.sched.admit_blocked(server, ThreadState.RECEIVE)
            self.mm.add_server(server)
        if driver is not None:
            thread = Thread(tid=self._allocate_id(), process=self.procnto,
                            priority=driver_priority, base_priority=driver_priority,
                            body=driver.body, name="devb")
            self.procnto.threads.append(thread)
            self.sched.admit_blocked(thread, ThreadState.RECEIVE)
            driver.attach(thread)

    def start_kernel_thread(self, name: str, priority: int,
                            body: Callable[[Thread], None]) -> Thread:
        """A new READY kernel thread (a process of its own, which does not keep the run
        alive) running `body` each time it is dispatched."""
        proc = self.new_process(self.engine.spec.name, name, guest=False)
        thread = Thread(tid=proc.pid, process=proc, priority=priority, base_priority=priority,
                        body=body, name=name)
        proc.threads.append(thread)
        self.sched.admit(thread)
        return thread

    # ---- processes and threads ----

    def _allocate_id(self) -> int:
        ident, self._next_id = self._next_id, self._next_id + 1
        return ident

    def new_process(self, arch: str, exe: str, uid: int = 0, guest: bool = True,
                    parent: Process | None = None) -> Process:
        """A process with an empty address space (a guest one counts until it exits)."""
        self._live_guests += guest
        space, mem = self.new_space()
        pid = self._allocate_id()
        # the first process is in the group and session of the one that started it (procnto)
        proc = Process(pid=pid, arch=arch, space=space, mem=mem, root=self.root, exe_path=exe,
                       creds=parent.creds.copy() if parent else Credentials.of(uid),
                       pgid=parent.pgid if parent else PROCNTO_PID,
                       sid=parent.sid if parent else PROCNTO_PID, parent=parent)
        space.owner = proc.pid
        self.processes.append(proc)
        if self.bus.wants(ProcessCreate):
            self.bus.publish(ProcessCreate(self.engine.cycles, proc.pid, 0,
                                           parent.pid if parent else None, exe))
        return proc

    def new_space(self) -> tuple[AddressSpace, UserMemory]:
        """An empty address space and the kernel's access to it."""
        space = AddressSpace(self.frames, self.tables, self._translations_removed, self._written_back,
                             self.large_shifts, self._large_page)
        mem = UserMemory(space, self.ram, lambda va, acc, s=space: self.faults.fault_in(s, va, acc),
                         self.frames, self.engine.invalidate_code)
        return space, mem

    @property
    def live_guests(self) -> int:
        """Number of guest processes that have not exited."""
        return self._live_guests

    def spawn(self, image: ElfImage, argv: list[str], envp: list[str], uid: int,
              lock: bool = False, superlock: bool = False) -> Process:
        """Create a process running `image` with one thread at its entry point; argv[0]
        becomes the program's guest path; `lock` and `superlock` apply procnto's -ml / -mL
        to it before it starts."""
        exe = self.root.guest_path_of(image.path) or OUTSIDE_ROOT_EXE
        proc = self.new_process(image.arch, exe, uid)
        argv = [exe, *argv[1:]]             # argv[0] is the guest's name of the program
        if superlock:
            proc.superlocked = proc.lock_future = True
        elif lock:
            proc.lock_future = True
        sp = self.load_image(proc, image, argv, envp)
        if sp is None:
            raise EmuError("not enough RAM for the program's text and data"
                           + (" locked in memory" if lock or superlock else "")
                           + ": use a larger --ram")
        prio = self.profile.default_priority
        thread = Thread(tid=proc.pid, process=proc, pc=image.entry, priority=prio,
                        base_priority=prio, context=self.fresh_context(sp), name="main")
        self.add_thread(thread)
        return proc

    def load_image(self, proc: Process, image: ElfImage, argv: list[str],
                   envp: list[str]) -> int | None:
        """Map `image` and a fresh stack into `proc`'s (empty) address space, applying its
        locking state, and build the initial stack; returns the initial SP, or None if the
        image (or, locked, all of it) did not fit in RAM."""
        proc.argv = list(argv)
        try:            # text and data are committed (QNX allocates non-lazy mappings at once)
            map_image(proc.space, image, proc.exe_path)
        except OutOfFrames:
            proc.space.release_all()
            return None
        # the main stack is lazy, as QNX stacks are by default (PTHREAD_STACK_LAZY)
        proc.space.insert(Mapping(STACK_TOP - STACK_SIZE, STACK_TOP, PROT_READ | PROT_WRITE,
                                  Share.PRIVATE, AnonymousMemory(), 0, "[stack]", lazy=True))
        if proc.lock_future and not all(self.residency.lock(proc, m.start, m.end)
                                        for m in proc.space.mappings()):
            return None
        who = ProcessIdentity(uid=proc.uid, gid=proc.gid, hwcap=self.engine.spec.hwcap,
                              platform=self.engine.spec.platform)
        return build_initial_stack(proc.mem, STACK_TOP, image, argv, envp, proc.exe_path, who,
                                   self.random_bytes(16))

    def note_exec(self, proc: Process) -> None:
        """`proc` replaced its image (execve)."""
        if self.bus.wants(ProcessExec):
            self.bus.publish(ProcessExec(self.engine.cycles, proc.pid, 0, proc.exe_path))

    def add_thread(self, thread: Thread) -> None:
        """Register a new guest thread and make it READY."""
        thread.process.threads.append(thread)
        self.sched.admit(thread)

    def clone_thread(self, parent: Thread, stack: int, tls: int | None) -> Thread:
        """A new thread of `parent`'s process continuing from the same syscall with result 0."""
        engine, spec = self.engine, self.engine.spec
        changes = {spec.syscall_ret: 0}
        if stack:
            changes[spec.sp] = stack
        if tls is not None:
            changes[spec.tls] = tls
        context = engine.derived_context(changes)
        child = Thread(tid=self._allocate_id(), process=parent.process, pc=engine.pc,
                       context=context, priority=parent.base_priority,
                       base_priority=parent.base_priority, policy=parent.policy,
                       name=f"thread{len(parent.process.threads)}", sig=parent.sig.for_new_thread())
        self.add_thread(child)
        return child

    def find_thread(self, tid: int) -> Thread | None:
        """The live guest thread with id `tid`."""
        for proc in self.processes:
            for thread in proc.threads:
                if thread.tid == tid and thread.state is not ThreadState.DEAD:
                    return thread
        return None

    def sleep_until(self, thread: Thread, when: int, rem: int = 0) -> None:
        """Block the running `thread` in NANOSLEEP until the clock reaches `when` (result 0); a
        signal ends it early with EINTR, the time left stored at `rem` if given."""
        wait = self.waits.block_until(thread, when, ThreadState.NANOSLEEP, 0)
        self.signals.waiting(thread, wait.token, lambda: self.signals.end_sleep(
            thread, wait.token, wait.timer, rem,
            self.clock.nanoseconds(max(0, when - self.engine.cycles))))

    def fresh_context(self, sp: int) -> object:
        """Registers of a fresh program, as Linux's exec leaves them: zero but the stack
        pointer, and the floating-point control state Linux gives a new image."""
        spec = self.engine.spec
        return self.engine.derived_context(
            {**{reg: 0 for reg in (*spec.syscall_args, spec.syscall_nr, spec.tls)},
             **dict(spec.exec_registers), spec.sp: sp})

    def load_space(self, space: AddressSpace) -> None:
        """Point the CPU at `space`'s page tables (the running thread's, after a switch or an
        exec that gave its process a new space)."""
        # Unicorn's TLB has no address-space tag: another space means a full flush
        self.engine.fastpath.set_page_table(space.page_table.handle)
        self.engine.flush_tlb()

    def loaded_thread(self) -> Thread | None:
        """The guest thread whose registers are in the CPU now."""
        return self._loaded

    # ---- the loop ----

    def run(self) -> None:
        """Run until every guest process has ended."""
        while self.step():
            pass

    def step(self) -> bool:
        """Run the next thread until it stops (or idle until the next timer); False once every
        guest process has ended."""
        if not self.live_guests:
            return False
        self.steps += 1
        self.step_started = self.engine.cycles
        if self.engine.cycles >= self.cycle_limit:
            self._cycle_limit_reached()
            return bool(self.live_guests)
        if self.host_io:
            self.host_io.poll(0)            # host descriptors guest threads wait for
        thread = self.next_thread()
        if thread is None:
            if not self.live_guests:        # the last one died of a signal just now
                return False
            due = self.timers.next_due()
            if due is None:
                if self.host_io:
                    self.host_io.poll(None)     # only the host can wake a thread now
                    return True
                self._deadlock()
                return bool(self.live_guests)
            stop_at = min(self.until_cycle, self.cycle_limit)
            if stop_at <= due:              # a stop point comes first
                self.engine.charge(max(0, stop_at - self.engine.cycles))
                self._stop_wanted = self.until_cycle <= self.engine.cycles
                return True
            self.engine.charge(max(0, due - self.engine.cycles))    # idle until then
            return True
        self.run_thread(thread)
        return bool(self.live_guests)

    def _cycle_limit_reached(self) -> None:
        """The clock reached the run's cycle limit: every guest process dies of SIGXCPU."""
        thread = self.loaded_thread()
        self.diagnose(thread, f"cycle limit ({self.cycle_limit}) reached"
                      + (f" at pc {thread.pc:#x}" if thread is not None else ""))
        if self.bus.wants(LimitReached):
            self.bus.publish(LimitReached(self.engine.cycles, 0, 0, "cycles", self.cycle_limit))
        for proc in self.processes:
            if proc is not self.procnto and proc.alive:
                self.kill(proc, signal.SIGXCPU)

    def next_thread(self) -> Thread | None:
        """Fire due timers, then dispatch and switch to the thread that runs next; a guest
        thread about to return to user mode acts on its pending signals first."""
        self.timers.fire_due(self.engine.cycles)
        while (thread := self.sched.dispatch()) is not None:
            self._switch_to(thread)
            if thread.body is None:
                if self._running_guest:     # a fault completed in place: no signal came meanwhile
                    assert not deliverable(thread.sig, thread.process.sig.shared)
                else:
                    self.signals.deliver(thread)
                    if thread.state is ThreadState.DEAD:
                        continue
            self._run_start = self.engine.cycles
            return thread
        return None

    def run_thread(self, thread: Thread) -> None:
        """Run one dispatched thread until it stops, and handle why it stopped."""
        if thread.body is not None:
            thread.body(thread)
        else:
            self._running_guest = True
            try:
                step_over, thread.step_over = thread.step_over, None
                stop = self.engine.run(thread.pc, insn_stop=min(self.insn_limit,
                                                                self.until_instructions),
                                       deadline=self.deadline(thread), step_over=step_over)
            finally:
                self._running_guest = False
            thread.pc = stop.pc
            self.last_stop = stop
            self._handle_stop(thread, stop)
        self.sched.slice_used(thread, self.engine.cycles - self._run_start)

    def deadline(self, thread: Thread) -> int:
        """When the running guest thread must stop: end of its slice, the next timer, or the
        client's stop point."""
        now = self.engine.cycles
        deadline = min(now + max(thread.slice_left, 1), self.until_cycle, self.cycle_limit)
        due = self.timers.next_due()
        return deadline if due is None else min(deadline, max(due, now + 1))

    def request_stop(self) -> None:
        """Ask the run to stop as soon as possible (between steps, or right after a fault
        completed in place); `step` returns and the client decides."""
        self._stop_wanted = True

    def stop_wanted(self) -> bool:
        """Whether a stop was requested and not yet taken (see `take_stop_request`)."""
        return self._stop_wanted

    def take_stop_request(self) -> bool:
        """Whether a stop was requested; clears the request."""
        wanted, self._stop_wanted = self._stop_wanted, False
        return wanted

    def _switch_to(self, thread: Thread) -> None:
        """Load `thread`'s registers and address space, charging a context switch."""
        if thread is not self._last_run:
            prev = self._last_run
            self.engine.charge(self.costs.context_switch)
            if self.bus.wants(Switch):
                self.bus.publish(Switch(self.engine.cycles, thread.process.pid, thread.tid,
                                        prev.process.pid if prev else None,
                                        prev.tid if prev else None))
            self._last_run = thread
        if thread.body is not None:
            return
        loaded = self._loaded
        if loaded is not thread:
            if loaded is not None and loaded.state is not ThreadState.DEAD:
                loaded.context = self.engine.save_context()
            self.engine.restore_context(thread.context)
            if loaded is None or loaded.process.space is not thread.process.space:
                self.load_space(thread.process.space)
            self._loaded = thread
        if thread.pending_result is not None:
            self.engine.set_syscall_result(thread.pending_result)
            thread.pending_result = None

    def _handle_stop(self, thread: Thread, stop: Stop) -> None:
        kind = stop.kind
        if kind is StopKind.SYSCALL:
            self._syscall(thread)
        elif kind is StopKind.FAULT:
            self.faults.user_fault(thread, stop.fault_vaddr, ACCESS_BY_VALUE[stop.fault_access])
        elif kind is StopKind.INSN_LIMIT:
            if self.engine.instructions >= self.insn_limit:
                self.diagnose(thread, f"instruction limit ({self.insn_limit}) reached at pc "
                                      f"{stop.pc:#x}")
                if self.bus.wants(LimitReached):
                    self.bus.publish(LimitReached(self.engine.cycles, thread.process.pid,
                                                  thread.tid, "instructions", self.insn_limit))
                self.kill(thread.process, signal.SIGXCPU)
            else:
                self._stop_wanted = True        # the client's instruction count
        elif kind is StopKind.BREAKPOINT_PC:
            self._stop_wanted = True
        elif kind.is_exception:         # the signal Linux sends; a handler may catch it
            self.signals.force(thread, exception_info(stop, thread.process.arch),
                               f"{kind.value} at pc {stop.pc:#x} ({stop.detail})")

    def _syscall(self, thread: Thread) -> None:
        nr, args = self.engine.syscall_number_and_args()
        thread.sig.syscall = (nr, args[0])      # to restart it after a signal handler
        assert self.services is not None
        ctx = SyscallContext(thread.process, thread, self.services)
        result = self.syscalls.dispatch(ctx, nr, args, counted=nr < SYSCALLS_COUNTED)
        if result is not None:
            thread.resume = None                # a retried call is over
            if thread.state is not ThreadState.DEAD:
                self.engine.set_syscall_result(result)

    def inline_syscall(self) -> int | None:
        """A system call the CPU offers from inside its hook (one marked inline): its result,
        or None when it needs the kernel outside the CPU after all."""
        thread = self.sched.current
        if thread is None or thread.body is not None or self.services is None:
            return None
        nr, args = self.engine.syscall_number_and_args()
        thread.sig.syscall = (nr, args[0])
        return self.syscalls.dispatch_inline(SyscallContext(thread.process, thread,
                                                            self.services), nr, args)

    def _deadlock(self) -> None:
        blocked = [f"tid {t.tid} {t.state.value}" for p in self.processes if p is not self.procnto
                   for t in p.live_threads()]
        self.diagnose(None, f"deadlock: every guest thread is blocked ({', '.join(blocked)}); "
                            "killing")
        if self.bus.wants(Deadlock):
            self.bus.publish(Deadlock(self.engine.cycles, 0, 0, tuple(blocked)))
        for proc in self.processes:
            if proc is not self.procnto and proc.alive:
                self.kill(proc, signal.SIGKILL)

    def diagnose(self, thread: Thread | None, message: str) -> None:
        """A line for the user (the CLI shows it on stderr)."""
        if self.bus.wants(Diagnostic):
            pid, tid = (thread.process.pid, thread.tid) if thread is not None else (0, 0)
            self.bus.publish(Diagnostic(self.engine.cycles, pid, tid, message))

    # ---- memory ----

    def _fault_signal(self, thread: Thread, signo: int, si_code: int, vaddr: int,
                      access: Access) -> None:
        """A fault the memory manager could not resolve: SIGSEGV/SIGBUS for the faulting thread
        (in WAITPAGE), which then runs its handler, or dies with it if it has none."""
        info = fault_info(signo, si_code, vaddr, access)
        if self.signals.force(thread, info, self.signals.fault_line(thread, info, access)):
            self.sched.wake(thread, thread.wait_token)

    def _written_back(self, space: AddressSpace, file: str, pages: int) -> bool:
        """Modified pages of `file` are written back at munmap or exit: the device is busy
        with them (the caller does not wait: the writes are queued); False if it fails them."""
        return self.store.submit(space.owner, 0, pages, True, "write_back", file).ok

    def _large_page(self, space: AddressSpace, vaddr: int, size: int, formed: bool) -> None:
        """A large page formed or split: the TLB model's entries of the old page size go,
        as the kernel's TLB invalidation after a collapse or split drops them on hardware
        (Unicorn's 4 KiB entries stay right: the frames did not change)."""
        self.engine.invalidate_tlb_of(space.page_table.handle, vaddr, vaddr + size)
        if self.bus.wants(LargePage):
            self.bus.publish(LargePage(self.engine.cycles, space.owner, 0, vaddr, size, formed))

    def process_of(self, space: AddressSpace) -> Process | None:
        """The process that owns an address space."""
        return next((p for p in self.processes if p.space is space), None)

    def _translations_removed(self, space: AddressSpace, start: int, end: int) -> None:
        """Translations of [start, end) in `space` were removed or lowered: drop what the
        CPU caches of them (only the loaded space has any there)."""
        loaded = self._loaded
        if loaded is not None and loaded.process.space is space:
            self.engine.invalidate_tlb(start, end)
        else:
            self.engine.invalidate_tlb_of(space.page_table.handle, start, end)

    # ---- ending ----

    def kill(self, proc: Process, signo: int) -> None:
        """Terminate `proc` by signal `signo` whatever its disposition (instruction limit,
        deadlock)."""
        thread = self.sched.current if self.sched.current in proc.threads else proc.threads[0]
        self.signals.terminate(proc, SigInfo(signo, SI_KERNEL), thread)

    def exit_thread(self, thread: Thread, code: int) -> None:
        """End one thread (waking a joiner through its clear-child-tid word); the last ends the process."""
        if thread.clear_child_tid:
            try:
                thread.process.mem.write(thread.clear_child_tid, b"\0\0\0\0")
                keys = {FutexTable.key(thread.process, thread.clear_child_tid, private)
                        for private in (True, False)}   # whichever way the joiner waits
                for key in keys:
                    self.futexes.wake(key, 1)
            except Exception:  # an unmapped clear-child-tid word is ignored, as Linux does
                pass
        if self.bus.wants(ThreadExit):
            self.bus.publish(ThreadExit(self.engine.cycles, thread.process.pid, thread.tid, code))
        self.sched.kill(thread)
        if not thread.process.live_threads():
            self.end_process(thread.process, ExitStatus(code=code))

    def exit_group(self, proc: Process, code: int) -> None:
        """End every thread of `proc`."""
        self.end_process(proc, ExitStatus(code=code))

    def end_process(self, proc: Process, status: ExitStatus) -> None:
        """`proc` ends with `status`: its threads die, its memory and descriptors go."""
        if not proc.alive:
            return
        proc.exit = status
        self._live_guests -= 1
        for thread in proc.threads:
            self.sched.kill(thread)
        self.futexes.forget(proc)
        if not proc.borrows_space:          # a vfork child's memory is its parent's
            proc.space.release_all()
        proc.fds.close_all()
        if self.bus.wants(ProcessExit):
            self.bus.publish(ProcessExit(self.engine.cycles, proc.pid, 0, status.shell_code,
                                         status.signal))
        self.family.on_exit(proc)

    # ---- services for system calls ----

    def set_tls(self, value: int) -> None:
        """Set the running thread's TLS register."""
        self.engine.reg_write(self.engine.spec.tls, value)

    def get_tls(self) -> int:
        """The running thread's TLS register."""
        return self.engine.reg_read(self.engine.spec.tls)

    @property
    def default_priority(self) -> int:
        """The priority of a new process's first thread (the profile's)."""
        return self.profile.default_priority

    def random_bytes(self, n: int) -> bytes:
        """Reproducible pseudo-random bytes (from the run's seed)."""
        return self._random.randbytes(n)

