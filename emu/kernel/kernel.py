"""The kernel's run loop: run a thread on the CPU, then handle why it stopped.

A stop is a system call, a fault the fast path could not resolve, a CPU
exception or a limit. Faults go through `resolve_fault` (decision) and the
pager (work); for now the pager runs synchronously on the faulting thread's
behalf — the procnto server thread replaces that with a deferred path.
"""
from __future__ import annotations

import random
import signal
import sys

from emu.cpu.engine import CpuEngine, Stop, StopKind
from emu.kernel.guestfs import GuestRoot
from emu.kernel.process import ExitStatus, Process, Thread, ThreadState
from emu.kernel.syscalls import SyscallContext, SyscallTable
from emu.loader.elf import ElfImage, map_image
from emu.loader.stack import ProcessIdentity, build_initial_stack
from emu.mm.fault import SI_CODE_NAMES, Access, Outcome, resolve_fault
from emu.mm.frames import FrameAllocator, PhysicalMemory
from emu.mm.objects import AnonymousMemory
from emu.mm.pager import Pager
from emu.mm.uaccess import UserMemory
from emu.mm.vmspace import PROT_READ, PROT_WRITE, STACK_SIZE, STACK_TOP, AddressSpace, Mapping, Share
from emu.trace.stats import RunStats, signal_name

_STOP_SIGNALS = {StopKind.ILLEGAL: signal.SIGILL, StopKind.BREAKPOINT: signal.SIGTRAP,
                 StopKind.ARITHMETIC: signal.SIGFPE, StopKind.CPU_ERROR: signal.SIGSEGV}


class Kernel:
    """Processes, threads and the loop that runs them on one CPU."""

    def __init__(self, engine: CpuEngine, ram: PhysicalMemory, frames: FrameAllocator,
                 root: GuestRoot, stats: RunStats, insn_limit: int = 0, seed: int = 0) -> None:
        """A kernel with no processes yet."""
        self.engine = engine
        self.ram = ram
        self.frames = frames
        self.pager = Pager(ram, frames)
        self.root = root
        self.stats = stats
        self.insn_limit = insn_limit
        self.syscalls = SyscallTable.for_arch(engine.spec.name)
        self.processes: list[Process] = []
        self.current: Thread | None = None
        self._next_id = 1
        self._random = random.Random(seed)

    # ---- process creation ----

    def spawn(self, image: ElfImage, argv: list[str], envp: list[str], uid: int) -> Process:
        """Create a process running `image` with one thread at its entry point."""
        pid = self._allocate_id()
        space = AddressSpace(self.frames, self._on_translations_removed)
        mem = UserMemory(space, self.ram, lambda va, acc, s=space: self.fault_in(s, va, acc))
        exe = self.root.guest_path_of(image.path) or image.path
        proc = Process(pid=pid, arch=image.arch, space=space, mem=mem, root=self.root,
                       exe_path=exe, uid=uid, gid=uid)
        map_image(space, image)
        space.insert(Mapping(STACK_TOP - STACK_SIZE, STACK_TOP, PROT_READ | PROT_WRITE,
                             Share.PRIVATE, AnonymousMemory(), 0, "[stack]"))
        who = ProcessIdentity(uid=uid, gid=uid, hwcap=self.engine.spec.hwcap,
                              platform=self.engine.spec.platform)
        sp = build_initial_stack(mem, STACK_TOP, image, argv, envp, exe, who)
        thread = Thread(tid=pid, process=proc, pc=image.entry)
        thread.context = self._initial_context(sp)
        proc.threads.append(thread)
        self.processes.append(proc)
        return proc

    def _allocate_id(self) -> int:
        ident, self._next_id = self._next_id, self._next_id + 1
        return ident

    def _initial_context(self, sp: int) -> object:
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
        """Run until no thread is left."""
        while (thread := self._pick()) is not None:
            self._switch_to(thread)
            stop = self.engine.run(thread.pc, insn_limit=self.insn_limit)
            thread.pc = stop.pc
            self._handle_stop(thread, stop)

    def _pick(self) -> Thread | None:
        for proc in self.processes:
            for thread in proc.threads:
                if thread.state in (ThreadState.READY, ThreadState.RUNNING):
                    return thread
        return None

    def _switch_to(self, thread: Thread) -> None:
        previous = self.current
        if previous is thread:
            return
        if previous is not None and previous.state is not ThreadState.DEAD:
            previous.context = self.engine.save_context()
            previous.set_state(ThreadState.READY)
        self.engine.restore_context(thread.context)
        if previous is None or previous.process is not thread.process:
            self.engine.fastpath.set_page_table(thread.process.space.page_table.handle)
            self.engine.flush_tlb()
        thread.set_state(ThreadState.RUNNING)
        self.current = thread

    def _handle_stop(self, thread: Thread, stop: Stop) -> None:
        if stop.kind is StopKind.SYSCALL:
            self._syscall(thread)
        elif stop.kind is StopKind.FAULT:
            self._user_fault(thread, stop.fault_vaddr, Access(stop.fault_access))
        elif stop.kind is StopKind.INSN_LIMIT:
            print(f"emu: instruction limit ({self.insn_limit}) reached at pc {stop.pc:#x}",
                  file=sys.stderr)
            self.kill(thread.process, signal.SIGXCPU)
        elif stop.kind in _STOP_SIGNALS:
            print(f"emu: {stop.kind.value} at pc {stop.pc:#x} ({stop.detail})", file=sys.stderr)
            self.kill(thread.process, _STOP_SIGNALS[stop.kind])

    def _syscall(self, thread: Thread) -> None:
        nr, args = self.engine.syscall_number_and_args()
        ctx = SyscallContext(proc=thread.process, thread=thread, kernel=self)
        result = self.syscalls.dispatch(ctx, nr, args)
        if result is not None and thread.state is not ThreadState.DEAD:
            self.engine.set_syscall_result(result)

    # ---- faults ----

    def _user_fault(self, thread: Thread, vaddr: int, access: Access) -> None:
        """A fault taken by guest code: resolve it, or signal the thread."""
        proc = thread.process
        signo, code = self._resolve(proc.space, vaddr, access)
        if signo:
            print(f"emu: pid {proc.pid} tid {thread.tid}: {signal_name(signo)} "
                  f"({SI_CODE_NAMES.get((signo, code), code)}: {access.name.lower()} at "
                  f"{vaddr:#x}, pc {thread.pc:#x})", file=sys.stderr)
            self.kill(proc, signo)

    def fault_in(self, space: AddressSpace, vaddr: int, access: Access) -> bool:
        """A fault taken on the kernel's behalf (copy-in/out): True if the page is now there."""
        signo, _ = self._resolve(space, vaddr, access)
        return signo == 0

    def _resolve(self, space: AddressSpace, vaddr: int, access: Access) -> tuple[int, int]:
        """Resolve one fault; returns (signal, si_code), (0, 0) when the access can be retried."""
        verdict = resolve_fault(space, vaddr, access)
        if verdict.outcome is Outcome.NEEDS_PAGER:
            assert verdict.request is not None
            result = self.pager.service(space, verdict.request)
            self.stats.count_fault(result.cause)
            return result.signal, result.si_code
        self.stats.count_fault(verdict.cause)
        if verdict.outcome is Outcome.SIGNAL:
            return verdict.signal, verdict.si_code
        return 0, 0

    def _on_translations_removed(self, code_changed: bool) -> None:
        if code_changed:
            self.engine.flush_code()
        self.engine.flush_tlb()

    # ---- ending ----

    def kill(self, proc: Process, signo: int) -> None:
        """Terminate `proc` by signal `signo` (its default action)."""
        self.stats.count_signal(signo)
        self._end_process(proc, ExitStatus(signal=signo))

    def exit_thread(self, thread: Thread, code: int) -> None:
        """End one thread; the process ends with its last thread."""
        thread.set_state(ThreadState.DEAD)
        if all(t.state is ThreadState.DEAD for t in thread.process.threads):
            self._end_process(thread.process, ExitStatus(code=code))

    def exit_group(self, proc: Process, code: int) -> None:
        """End every thread of `proc`."""
        self._end_process(proc, ExitStatus(code=code))

    def _end_process(self, proc: Process, status: ExitStatus) -> None:
        if not proc.alive:
            return
        proc.exit = status
        for thread in proc.threads:
            if thread.state is not ThreadState.DEAD:
                thread.set_state(ThreadState.DEAD)
        proc.space.release_all()
        proc.fds.close_all()

    # ---- services for system calls ----

    def set_tls(self, value: int) -> None:
        """Set the running thread's TLS register."""
        self.engine.reg_write(self.engine.spec.tls, value)

    def get_tls(self) -> int:
        """The running thread's TLS register."""
        return self.engine.reg_read(self.engine.spec.tls)

    def now_ns(self) -> int:
        """Simulated nanoseconds since boot (1 GHz: one cycle per nanosecond)."""
        return self.engine.fastpath.state.cycles

    def random_bytes(self, n: int) -> bytes:
        """Reproducible pseudo-random bytes."""
        return self._random.randbytes(n)
