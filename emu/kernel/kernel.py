"""The kernel's run loop: pick a thread, run it, then handle why it stopped.

Guest threads run on the CPU engine until a system call, a fault the fast
path could not resolve, a CPU exception, or the next scheduling deadline
(end of the time slice or the next timer). Kernel threads (procnto's
memory-manager servers) run their Python body when dispatched. The simulated
clock is the fast path's cycle counter: guest blocks, TLB fills and every
piece of kernel work are charged to it, and it jumps forward when every
thread is blocked waiting for a timer or the device.
"""
from __future__ import annotations

import random
import signal
import sys

from emu.cpu.engine import CpuEngine, Stop, StopKind
from emu.errors import EmuError
from emu.kernel.device import BlockDevice
from emu.kernel.faults import FaultEntry
from emu.kernel.residency import Residency
from emu.kernel.family import Family
from emu.kernel.futex import FutexTable
from emu.kernel.guestfs import GuestRoot
from emu.kernel.process import ExitStatus, Process, Thread, ThreadState
from emu.kernel.sched import Scheduler
from emu.kernel.sigdeliver import SignalDelivery, exception_info, fault_info
from emu.kernel.signals import SI_KERNEL, SigInfo, deliverable
from emu.kernel.syscalls import SyscallContext, SyscallTable
from emu.kernel.timers import TimerQueue
from emu.loader.elf import ElfImage, map_image
from emu.loader.stack import ProcessIdentity, build_initial_stack
from emu.mm.fault import ACCESS_BY_VALUE, Access
from emu.mm.frames import FrameAllocator, PhysicalMemory
from emu.mm.objects import AnonymousMemory
from emu.mm.pagetable import LargePageCounters
from emu.mm.pager import Pager
from emu.mm.uaccess import UserMemory
from emu.mm.vmspace import PROT_READ, PROT_WRITE, STACK_SIZE, STACK_TOP, AddressSpace, Mapping, Share
from emu.profile import Profile
from emu.servers.procnto import MemoryManager
from emu.trace.events import EventBus, EventKind
from emu.trace.stats import RunStats

_EXCEPTIONS = (StopKind.ILLEGAL, StopKind.BREAKPOINT, StopKind.ARITHMETIC)  # SIGILL/TRAP/FPE
PROCNTO_PID = 1
LARGE_PAGE_SHIFTS = {"x86_64": (21,), "aarch64": (16, 21)}


class Kernel:
    """Processes, threads, the scheduler and the loop that runs them on one CPU."""

    def __init__(self, engine: CpuEngine, ram: PhysicalMemory, frames: FrameAllocator,
                 root: GuestRoot, profile: Profile, bus: EventBus, stats: RunStats,
                 insn_limit: int = 0, mm_threads: int = 1, faults_in_place: bool = True,
                 large_pages: bool = True, seed: int = 0) -> None:
        """A kernel with procnto (pid 1) and its memory-manager threads, and no guest yet."""
        self.engine = engine
        self.ram = ram
        self.frames = frames
        self.root = root
        self.profile = profile
        self.costs = profile.kernel
        self.bus = bus
        self.stats = stats
        self.insn_limit = insn_limit
        self.pager = Pager(ram, frames)
        self.timers = TimerQueue()
        self.device = BlockDevice(profile.cycles(profile.read_page_ns),
                                  profile.cycles(profile.write_page_ns))
        self.sched = Scheduler(bus, engine.now, profile.time_slice)
        self.futexes = FutexTable(self.sched)
        # procnto's "v": variable page sizes (2 MiB on x86-64; 64 KiB and 2 MiB on AArch64)
        self.large_shifts = LARGE_PAGE_SHIFTS[engine.spec.name] if large_pages else ()
        self.large_counters = LargePageCounters()
        for k, shift in enumerate(self.large_shifts):
            engine.fastpath.state.large_shift[k] = shift
        self.family = Family(self)
        self.syscalls = SyscallTable.for_arch(engine.spec.name)
        self.processes: list[Process] = []
        self._next_id = PROCNTO_PID
        self._random = random.Random(seed)
        self._loaded: Thread | None = None      # guest thread whose registers are in the engine
        self._last_run: Thread | None = None
        self._run_start = 0
        self._live_guests = 0
        self._in_guest = False                  # inside engine.run (a fault completed in place)
        self.mm = MemoryManager(self.sched, bus, self.timers, self.device, self.pager, self.costs,
                                engine.now, engine.charge, stats.count_fault,
                                self._fault_signal)
        self.residency = Residency(self.pager, engine, self.costs, self.device)
        self.faults = FaultEntry(self, engine, self.sched, self.mm, self.timers, self.device,
                                 self.pager, frames, self.costs, bus, stats)
        if faults_in_place:
            engine.fastpath.complete_faults_with(self.faults.complete_in_place)
        self.procnto = self.new_process(engine.spec.name, "procnto", guest=False)
        for i in range(mm_threads):
            server = Thread(tid=self._allocate_id() if i else PROCNTO_PID, process=self.procnto,
                            priority=profile.default_priority,
                            base_priority=profile.default_priority, body=self.mm.body,
                            name=f"procnto-mm{i}")
            self.procnto.threads.append(server)
            self.sched.admit_blocked(server, ThreadState.RECEIVE)
            self.mm.add_server(server)
        self.signals = SignalDelivery(engine, self.sched, bus, self.processes, self._end_process,
                                      self.procnto)

    # ---- processes and threads ----

    def _allocate_id(self) -> int:
        ident, self._next_id = self._next_id, self._next_id + 1
        return ident

    def new_process(self, arch: str, exe: str, uid: int = 0, guest: bool = True) -> Process:
        """A process with an empty address space (a guest one counts until it exits)."""
        self._live_guests += guest
        space = AddressSpace(self.frames, self._on_translations_removed, self._on_write_back,
                             self.large_shifts, self.large_counters)
        mem = UserMemory(space, self.ram, lambda va, acc, s=space: self.faults.fault_in(s, va, acc))
        proc = Process(pid=self._allocate_id(), arch=arch, space=space, mem=mem, root=self.root,
                       exe_path=exe, uid=uid, gid=uid)
        self.processes.append(proc)
        return proc

    @property
    def live_guests(self) -> int:
        """Number of guest processes that have not exited."""
        return self._live_guests

    def spawn(self, image: ElfImage, argv: list[str], envp: list[str], uid: int,
              lock: bool = False, superlock: bool = False) -> Process:
        """Create a process running `image` with one thread at its entry point; `lock` and
        `superlock` apply procnto's -ml / -mL to it before it starts."""
        exe = self.root.guest_path_of(image.path) or image.path
        proc = self.new_process(image.arch, exe, uid)
        if superlock:
            proc.superlocked = proc.lock_future = True
        elif lock:
            proc.lock_future = True
        sp = self.load_image(proc, image, argv, envp)
        if sp is None:
            raise EmuError("not enough RAM to lock the program in memory: use a larger --ram")
        prio = self.profile.default_priority
        thread = Thread(tid=proc.pid, process=proc, pc=image.entry, priority=prio,
                        base_priority=prio, context=self.fresh_context(sp), name="main")
        self.add_thread(thread)
        return proc

    def load_image(self, proc: Process, image: ElfImage, argv: list[str],
                   envp: list[str]) -> int | None:
        """Map `image` and a fresh stack into `proc`'s (empty) address space, applying its
        locking state, and build the initial stack; returns the initial SP, or None if the
        locked image did not fit in RAM."""
        map_image(proc.space, image)
        # the main stack is lazy, as QNX stacks are by default (PTHREAD_STACK_LAZY)
        proc.space.insert(Mapping(STACK_TOP - STACK_SIZE, STACK_TOP, PROT_READ | PROT_WRITE,
                                  Share.PRIVATE, AnonymousMemory(), 0, "[stack]", lazy=True))
        if proc.lock_future and not all(self.residency.lock(proc, m.start, m.end)
                                        for m in proc.space.mappings()):
            return None
        who = ProcessIdentity(uid=proc.uid, gid=proc.gid, hwcap=self.engine.spec.hwcap,
                              platform=self.engine.spec.platform)
        return build_initial_stack(proc.mem, STACK_TOP, image, argv, envp, proc.exe_path, who)

    def add_thread(self, thread: Thread) -> None:
        """Register a new guest thread and make it READY."""
        thread.process.threads.append(thread)
        self.sched.admit(thread)

    def clone_thread(self, parent: Thread, stack: int, tls: int | None) -> Thread:
        """A new thread of `parent`'s process continuing from the same syscall with result 0."""
        engine = self.engine
        saved = engine.save_context()
        engine.set_syscall_result(0)
        if stack:
            engine.reg_write(engine.spec.sp, stack)
        if tls is not None:
            engine.reg_write(engine.spec.tls, tls)
        context = engine.save_context()
        engine.restore_context(saved)
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

    def futex_wake(self, proc: Process, addr: int, count: int) -> int:
        """Wake up to `count` threads waiting on `proc`'s futex word at `addr`."""
        return self.futexes.wake(FutexTable.key(proc, addr), count)

    def sleep_until(self, thread: Thread, when: int, rem: int = 0) -> None:
        """Block the running `thread` in NANOSLEEP until the clock reaches `when` (result 0); a
        signal ends it early with EINTR, the time left stored at `rem` if given."""
        token = self.sched.block(thread, ThreadState.NANOSLEEP)

        def wake() -> None:
            if self.sched.is_waiting_on(thread, token):     # not killed or interrupted meanwhile
                self.sched.wake(thread, token, 0)
        timer = self.timers.at(when, wake)
        self.signals.waiting(thread, token, lambda: self.signals.end_sleep(
            thread, token, timer, rem, self.profile.nanoseconds(max(0, when - self.engine.cycles))))

    def fresh_context(self, sp: int) -> object:
        """Registers of a fresh program: all zero but the stack pointer."""
        engine = self.engine
        saved = engine.save_context()
        for reg in (*engine.spec.syscall_args, engine.spec.syscall_nr, engine.spec.tls):
            engine.reg_write(reg, 0)
        engine.reg_write(engine.spec.sp, sp)
        context = engine.save_context()
        engine.restore_context(saved)
        return context

    # ---- the loop ----

    def run(self) -> None:
        """Run until every guest process has ended."""
        while self.live_guests:
            thread = self.next_thread()
            if thread is None:
                if not self.live_guests:        # the last one died of a signal just now
                    break
                due = self.timers.next_due()
                if due is None:
                    self._deadlock()
                    break
                self.engine.charge(max(0, due - self.engine.cycles))    # idle until then
                continue
            self.run_thread(thread)

    def next_thread(self) -> Thread | None:
        """Fire due timers, then dispatch and switch to the thread that runs next; a guest
        thread about to return to user mode acts on its pending signals first."""
        self.timers.fire_due(self.engine.cycles)
        while (thread := self.sched.dispatch()) is not None:
            self._switch_to(thread)
            if thread.body is None:
                if self._in_guest:      # a fault completed in place: no signal arrived meanwhile
                    assert not deliverable(thread.sig, thread.process.sig.shared)
                else:
                    self.signals.deliver(thread)
                    if thread.state is ThreadState.DEAD:
                        continue
            self._run_start = self.engine.cycles
            return thread
        return None

    def run_thread(self, thread: Thread) -> None:
        if thread.body is not None:
            thread.body(thread)
        else:
            self._in_guest = True
            stop = self.engine.run(thread.pc, insn_limit=self.insn_limit,
                                   deadline=self.deadline(thread))
            self._in_guest = False
            thread.pc = stop.pc
            self._handle_stop(thread, stop)
        self.sched.slice_used(thread, self.engine.cycles - self._run_start)

    def deadline(self, thread: Thread) -> int:
        """When the running guest thread must stop: end of its slice or the next timer."""
        now = self.engine.cycles
        deadline = now + max(thread.slice_left, 1)
        due = self.timers.next_due()
        return deadline if due is None else min(deadline, max(due, now + 1))

    def _switch_to(self, thread: Thread) -> None:
        """Load `thread`'s registers and address space, charging a context switch."""
        if thread is not self._last_run:
            prev = self._last_run
            self.engine.charge(self.costs.context_switch)
            self.bus.emit(self.engine.cycles, EventKind.SWITCH, thread.process.pid, thread.tid,
                          from_pid=prev.process.pid if prev else None,
                          from_tid=prev.tid if prev else None)
            self._last_run = thread
        if thread.body is not None:
            return
        loaded = self._loaded
        if loaded is not thread:
            if loaded is not None and loaded.state is not ThreadState.DEAD:
                loaded.context = self.engine.save_context()
            self.engine.restore_context(thread.context)
            if loaded is None or loaded.process is not thread.process:
                self.engine.fastpath.set_page_table(thread.process.space.page_table.handle)
                self.engine.flush_tlb()
            self._loaded = thread
        if thread.pending_result is not None:
            self.engine.set_syscall_result(thread.pending_result)
            thread.pending_result = None

    def _handle_stop(self, thread: Thread, stop: Stop) -> None:
        if stop.kind is StopKind.SYSCALL:
            self._syscall(thread)
        elif stop.kind is StopKind.FAULT:
            self.faults.user_fault(thread, stop.fault_vaddr, ACCESS_BY_VALUE[stop.fault_access])
        elif stop.kind is StopKind.INSN_LIMIT:
            print(f"emu: instruction limit ({self.insn_limit}) reached at pc {stop.pc:#x}",
                  file=sys.stderr)
            self.kill(thread.process, signal.SIGXCPU)
        elif stop.kind in _EXCEPTIONS:
            self.signals.force(thread, exception_info(stop.kind, thread.process.arch, stop.pc),
                               f"emu: {stop.kind.value} at pc {stop.pc:#x} ({stop.detail})")
        elif stop.kind is StopKind.CPU_ERROR:
            print(f"emu: {stop.kind.value} at pc {stop.pc:#x} ({stop.detail})", file=sys.stderr)
            self.kill(thread.process, signal.SIGSEGV)

    def _syscall(self, thread: Thread) -> None:
        self.engine.charge(self.costs.syscall)
        nr, args = self.engine.syscall_number_and_args()
        thread.sig.syscall = (nr, args[0])      # to restart it after a signal handler
        ctx = SyscallContext(proc=thread.process, thread=thread, kernel=self)
        result = self.syscalls.dispatch(ctx, nr, args)
        if result is not None and thread.state is not ThreadState.DEAD:
            self.engine.set_syscall_result(result)

    def _deadlock(self) -> None:
        blocked = [f"tid {t.tid} {t.state.value}" for p in self.processes if p is not self.procnto
                   for t in p.live_threads()]
        print(f"emu: deadlock: every guest thread is blocked ({', '.join(blocked)}); killing",
              file=sys.stderr)
        for proc in self.processes:
            if proc is not self.procnto and proc.alive:
                self.kill(proc, signal.SIGKILL)

    # ---- faults ----

    def _fault_signal(self, thread: Thread, signo: int, si_code: int, vaddr: int,
                      access: Access) -> None:
        """A fault the memory manager could not resolve: SIGSEGV/SIGBUS for the faulting thread
        (in WAITPAGE), which then runs its handler, or dies with it if it has none."""
        info = fault_info(signo, si_code, vaddr, access)
        if self.signals.force(thread, info, self.signals.fault_line(thread, info, access)):
            self.sched.wake(thread, thread.wait_token)

    def _on_write_back(self, pages: int) -> None:
        """File pages written back at munmap or exit: the device is busy with them (the
        caller does not wait: the writes are queued)."""
        self.pager.page_cache.pages_written_back += pages
        self.device.submit(self.engine.cycles, pages=pages, write=True)

    def memory_counters(self) -> dict[str, int]:
        """The `mm` section of the stats: frames and the memory manager's counters."""
        return {"frames_total": self.frames.total, "frames_peak": self.frames.peak,
                "lazy_allocations": self.pager.lazy_allocations,
                "locked_pages": self.pager.locked_pages, "cow_copies": self.pager.cow_copies,
                "msync_pages_written": self.pager.page_cache.msync_pages_written,
                "pages_written_back": self.pager.page_cache.pages_written_back,
                "large_pages_formed": self.large_counters.formed,
                "large_pages_split": self.large_counters.split}

    def process_of(self, space: AddressSpace) -> Process | None:
        """The process that owns an address space."""
        return next((p for p in self.processes if p.space is space), None)

    def _on_translations_removed(self, code_changed: bool) -> None:
        if code_changed:
            self.engine.flush_code()
        self.engine.flush_tlb()

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
                self.futex_wake(thread.process, thread.clear_child_tid, 1)
            except Exception:  # an unmapped clear-child-tid word is ignored, as Linux does
                pass
        self.bus.emit(self.engine.cycles, EventKind.THREAD_EXIT, thread.process.pid, thread.tid,
                      code=code)
        self.sched.kill(thread)
        if not thread.process.live_threads():
            self._end_process(thread.process, ExitStatus(code=code))

    def exit_group(self, proc: Process, code: int) -> None:
        """End every thread of `proc`."""
        self._end_process(proc, ExitStatus(code=code))

    def _end_process(self, proc: Process, status: ExitStatus) -> None:
        if not proc.alive:
            return
        proc.exit = status
        self._live_guests -= 1
        for thread in proc.threads:
            self.sched.kill(thread)
        self.futexes.forget(proc)
        proc.space.release_all()
        proc.fds.close_all()
        self.family.on_exit(proc)

    # ---- services for system calls ----

    def set_tls(self, value: int) -> None:
        """Set the running thread's TLS register."""
        self.engine.reg_write(self.engine.spec.tls, value)

    def get_tls(self) -> int:
        """The running thread's TLS register."""
        return self.engine.reg_read(self.engine.spec.tls)

    def now_ns(self) -> int:
        """Simulated nanoseconds since boot."""
        return self.profile.nanoseconds(self.engine.cycles)

    def random_bytes(self, n: int) -> bytes:
        """Reproducible pseudo-random bytes."""
        return self._random.randbytes(n)
