"""Signal delivery: sending, interrupting waits, running handlers, rt_sigreturn, death by signal.

- `send` generates a signal for a process or a thread: ignored ones are
  discarded (unless blocked), others pend; a fatal default action kills the
  process at once (as Linux's complete_signal does); otherwise the chosen
  thread's interruptible wait, if any, is interrupted.
- `force` is for synchronous faults (memory manager, CPU exceptions): if the
  signal is blocked or not caught, the process dies with it.
- `deliver` runs when a guest thread is about to return to user mode (the
  kernel's dispatch path, registers loaded): it takes each pending unblocked
  signal, and either ignores it, kills the process, or builds a frame on the
  thread's stack (sigframe.py) and points the thread at the handler. An
  interrupted system call is restarted or fails with EINTR there, as Linux
  decides it (SA_RESTART).
- `sigreturn` takes the frame back.

Every signal acted on gives exactly one SIGNAL event (action handler, default or
ignore); a signal accepted by rt_sigtimedwait is not delivered and gives none.
"""
from __future__ import annotations

import errno
import signal
import struct
from collections.abc import Callable

from emu.cpu.engine import CpuEngine, Stop, StopKind
from emu.kernel.process import ExitStatus, Process, Thread
from emu.kernel.sched import Scheduler
from emu.kernel.sigframe import FRAMES, BadFrame, Delivery
from emu.kernel.signals import (FPE_INTDIV, ILL_ILLOPC, ILL_ILLOPN, MINSIGSTKSZ, SA_ONSTACK,
                                SA_RESTART, SA_RESTORER, SA_SIGINFO, SI_KERNEL, SIG_DFL,
                                SS_AUTODISARM, SS_DISABLE, SS_ONSTACK, TRAP_BRKPT, UNBLOCKABLE,
                                AltStack, Default, Restart, SigAction, SigInfo, Wait,
                                after_handler, choose_thread, default_action, deliverable, dequeue,
                                handler_mask, sigbit)
from emu.kernel.timers import Timer
from emu.mm.fault import SEGV_ACCERR, SI_CODE_NAMES, Access
from emu.mm.frames import PAGE_SIZE
from emu.mm.objects import AnonymousMemory
from emu.mm.uaccess import BadAddress
from emu.mm.vmspace import PROT_EXEC, PROT_READ, STACK_TOP, Mapping, Share
from emu.trace.events import Diagnostic, EventBus, SignalAction
from emu.trace.stats import signal_name

SIGPAGE = STACK_TOP             # AArch64 sigreturn trampoline page, just above the stack
_SIGPAGE_CODE = bytes.fromhex("681180d2" "010000d4")    # mov x8, #139 (rt_sigreturn); svc #0
_PC = {"x86_64": "rip", "aarch64": "pc"}
_SP = {"x86_64": "rsp", "aarch64": "sp"}


class SigreturnTrampoline(AnonymousMemory):
    """The page glibc's AArch64 handlers return to (Linux's vDSO __kernel_rt_sigreturn)."""

    name = "[vdso]"

    def fill(self, object_offset: int, frame_view: memoryview) -> None:
        """The trampoline at the start of the page; the rest stays zero."""
        frame_view[:len(_SIGPAGE_CODE)] = _SIGPAGE_CODE


def fault_info(signo: int, code: int, vaddr: int, access: Access) -> SigInfo:
    """The siginfo of a memory fault, with the x86-64 page-fault trap number and error code."""
    error = 4 | (2 if access is Access.WRITE else 0) | (16 if access is Access.FETCH else 0)
    if signo == signal.SIGSEGV and code == SEGV_ACCERR:
        error |= 1                                  # the page was present: a protection fault
    return SigInfo(signo, code, addr=vaddr, trapno=14, error_code=error, page_only=True)


BUS_ADRALN = 1                  # invalid address alignment
FPE_FLTDIV, FPE_FLTOVF, FPE_FLTUND, FPE_FLTRES, FPE_FLTINV = 3, 4, 5, 6, 7
_X86_NP, _X86_SS, _X86_GP, _X86_MF, _X86_AC, _X86_XM = 11, 12, 13, 16, 17, 19


def fp_si_code(flags: int) -> int:
    """The FPE_* code Linux's math_error gives the unmasked x87/SSE `flags` (bits IE..PE, SF)."""
    if flags & 0x41:
        return FPE_FLTINV
    for bits, code in ((0x04, FPE_FLTDIV), (0x08, FPE_FLTOVF), (0x12, FPE_FLTUND),
                       (0x20, FPE_FLTRES)):
        if flags & bits:
            return code
    return 0


def exception_info(stop: Stop, arch: str) -> SigInfo:
    """The signal Linux raises for the CPU exception `stop` reports (any `is_exception` kind),
    as arch/x86/kernel/traps.c and arch/arm64/kernel/traps.c, fault.c send it."""
    x86, kind, pc = arch == "x86_64", stop.kind, stop.pc
    if kind is StopKind.ILLEGAL:
        return SigInfo(signal.SIGILL, ILL_ILLOPN if x86 else ILL_ILLOPC, addr=pc, trapno=6)
    if kind is StopKind.BREAKPOINT:     # x86 int3 reports no address; pc is past it
        if x86 and stop.trap != 1:
            return SigInfo(signal.SIGTRAP, SI_KERNEL, trapno=3)
        return SigInfo(signal.SIGTRAP, TRAP_BRKPT, addr=pc, trapno=1 if x86 else 0)
    if kind is StopKind.ARITHMETIC:
        return SigInfo(signal.SIGFPE, FPE_INTDIV, addr=pc, trapno=0)
    if kind is StopKind.ALIGNMENT:      # x86 #AC reports no address
        return SigInfo(signal.SIGBUS, BUS_ADRALN, addr=0 if x86 else stop.fault_vaddr,
                       trapno=_X86_AC if x86 else 0)
    if kind is StopKind.FLOATING_POINT:
        return SigInfo(signal.SIGFPE, fp_si_code(stop.fp_status), addr=pc,
                       trapno=stop.trap if stop.trap in (_X86_MF, _X86_XM) else _X86_MF)
    # #GP and the other traps a user program takes only by doing what it may not
    signo = signal.SIGBUS if x86 and stop.trap in (_X86_NP, _X86_SS) else signal.SIGSEGV
    return SigInfo(signo, SI_KERNEL, trapno=stop.trap if stop.trap >= 0 else _X86_GP)


class SignalDelivery:
    """Signals between sending and the handler's return."""

    def __init__(self, engine: CpuEngine, sched: Scheduler, bus: EventBus,
                 processes: list[Process], end_process: Callable[[Process, ExitStatus], None],
                 procnto: Process) -> None:
        """Delivery over the kernel's engine, scheduler, event bus and process list."""
        self.engine = engine
        self.sched = sched
        self.bus = bus
        self.processes = processes
        self.end_process = end_process
        self.procnto = procnto
        self.frames = FRAMES[engine.spec.name]

    # ---- sending ----

    def find_process(self, pid: int) -> Process | None:
        """The live guest process `pid` (procnto is not one)."""
        return next((p for p in self.processes
                     if p.pid == pid and p.alive and p is not self.procnto), None)

    def send(self, proc: Process, info: SigInfo, thread: Thread | None = None) -> None:
        """Generate `info` for `proc`, or for one of its threads if `thread` is given."""
        live = proc.live_threads()
        if not proc.alive or not live:
            return
        signo = info.signo
        action = proc.sig.action(signo)
        target = thread or live[0]
        if action.ignores(signo) and not target.sig.really_blocks(signo):
            self._ignored(target, info)
            return
        pending = thread.sig.pending if thread is not None else proc.sig.shared
        if not pending.add(info):
            return                              # a standard signal already pending
        if thread is not None:
            chosen = None if thread.sig.blocks(signo) else thread
        else:
            chosen = choose_thread(live, signo)
        if chosen is None:
            return
        if not action.is_handler and default_action(signo) in (Default.TERMINATE, Default.CORE) \
                and not chosen.sig.really_blocks(signo):
            pending.discard(signo)
            self.terminate(proc, info, chosen)
            return
        self.interrupt(chosen)

    def force(self, thread: Thread, info: SigInfo, why: str) -> bool:
        """A synchronous fault signal for `thread`: True if a handler will run; otherwise (blocked,
        default or ignored) the process dies with it after `why` goes to stderr."""
        action = thread.process.sig.action(info.signo)
        if thread.sig.blocks(info.signo) or not action.is_handler:
            self.terminate(thread.process, info, thread, why)
            return False
        thread.sig.pending.add(info)
        return True

    def terminate(self, proc: Process, info: SigInfo, thread: Thread, why: str = "") -> None:
        """`proc` dies by `info`'s signal (its default action), after `why` goes to the user
        (a Diagnostic event)."""
        if why:
            self._diagnose(thread, why)
        self._event(thread, info, "default")
        self.end_process(proc, ExitStatus(signal=info.signo))

    @staticmethod
    def fault_line(thread: Thread, info: SigInfo, access: Access) -> str:
        """The stderr line of a process killed by a memory fault."""
        code = SI_CODE_NAMES.get((info.signo, info.code), info.code)
        return (f"pid {thread.process.pid} tid {thread.tid}: {signal_name(info.signo)} "
                f"({code}: {access.name.lower()} at {info.addr:#x}, pc {thread.pc:#x})")

    # ---- interruptible waits ----

    def waiting(self, thread: Thread, token: object, cancel: Callable[[], Restart | None]) -> None:
        """`thread` just blocked with `token` and a signal may end the wait through `cancel`,
        which must wake it through the scheduler and leave the call's result."""
        thread.sig.wait = Wait(token, cancel)
        if deliverable(thread.sig, thread.process.sig.shared):
            self.interrupt(thread)

    def end_sleep(self, thread: Thread, token: object, timer: Timer, rem: int,
                  left_ns: int) -> Restart:
        """A signal ends a nanosleep: EINTR, the `left_ns` not slept stored at `rem` if given."""
        timer.cancel()
        result = -errno.EINTR
        if rem:
            try:
                thread.process.mem.write(rem, struct.pack("<qq", *divmod(left_ns, 10**9)))
            except BadAddress:
                result = -errno.EFAULT          # Linux: the time left could not be stored
        self.sched.wake(thread, token, result)
        return Restart.EINTR

    def interrupt(self, thread: Thread) -> bool:
        """End `thread`'s interruptible wait, if it is in one, because of a signal."""
        wait = thread.sig.wait
        if wait is None or not self.sched.is_waiting_on(thread, wait.token):
            return False
        thread.sig.wait = None
        restart = wait.cancel()
        assert not self.sched.is_waiting_on(thread, wait.token), "a cancelled wait went on"
        thread.sig.restart = restart
        return True

    # ---- masks, dispositions, alternate stacks ----

    def set_mask(self, thread: Thread, mask: int) -> None:
        """Install a new mask; process-directed signals it now blocks go to another thread."""
        old, thread.sig.mask = thread.sig.mask, mask & ~UNBLOCKABLE
        shared = thread.process.sig.shared.mask & thread.sig.mask & ~old
        for signo in range(1, 65):
            if shared & sigbit(signo):
                other = choose_thread(thread.process.live_threads(), signo)
                if other is not None:
                    self.interrupt(other)

    def set_action(self, proc: Process, signo: int, action: SigAction) -> None:
        """Install a disposition; one that ignores the signal discards its pending instances."""
        proc.sig.actions[signo] = action
        if action.ignores(signo):
            proc.sig.shared.discard(signo)
            for thread in proc.threads:
                thread.sig.pending.discard(signo)

    def change_altstack(self, thread: Thread, new: AltStack, sp: int) -> int:
        """sigaltstack's change for a thread whose stack pointer is `sp`: 0 or -errno."""
        if thread.sig.altstack.contains(sp):
            return -errno.EPERM
        mode = new.flags & ~SS_AUTODISARM
        if mode not in (0, SS_DISABLE, SS_ONSTACK):     # SS_ONSTACK: old programs pass it
            return -errno.EINVAL
        if mode == SS_DISABLE:
            thread.sig.altstack = AltStack()
        elif new.size < MINSIGSTKSZ[thread.process.arch]:
            return -errno.ENOMEM
        else:
            thread.sig.altstack = AltStack(new.sp, new.size, new.flags & SS_AUTODISARM)
        return 0

    def user_sp(self) -> int:
        """The running thread's stack pointer."""
        return self.engine.reg_read(self.engine.spec.sp)

    @staticmethod
    def altstack_flags(alt: AltStack, sp: int) -> int:
        """ss_flags as sigaltstack reports them for a thread whose stack pointer is `sp`."""
        if alt.flags & SS_DISABLE or not alt.size:
            return SS_DISABLE
        return (SS_ONSTACK if alt.contains(sp) else 0) | (alt.flags & SS_AUTODISARM)

    # ---- delivery (the thread's registers are loaded) ----

    def deliver(self, thread: Thread) -> None:
        """Act on every pending unblocked signal of `thread` before it returns to user mode."""
        sig, proc = thread.sig, thread.process
        if sig.restart is None and sig.saved_mask is None \
                and not deliverable(sig, proc.sig.shared):
            return                              # the common case: nothing to do
        restart, sig.restart = sig.restart, None
        while proc.alive:
            info = dequeue(sig, proc.sig.shared, sig.mask)
            if info is None:
                break
            action = proc.sig.action(info.signo)
            if action.ignores(info.signo):
                self._ignored(thread, info)
            elif not action.is_handler:
                self.terminate(proc, info, thread)
            else:
                if restart is not None:
                    if restart is Restart.RESTARTSYS and action.flags & SA_RESTART:
                        self._restart_syscall(thread)
                    restart = None              # else: the -EINTR result stays
                if not self._run_handler(thread, info, action):
                    return
        if not proc.alive:
            return
        if restart in (Restart.RESTARTSYS, Restart.RESTARTNOHAND):
            self._restart_syscall(thread)       # no handler ran
        if sig.saved_mask is not None:
            sig.mask, sig.saved_mask = sig.saved_mask, None

    def _restart_syscall(self, thread: Thread) -> None:
        """Point `thread` back at its system call, with its number and first argument again."""
        engine, spec = self.engine, self.engine.spec
        nr, arg0 = thread.sig.syscall
        engine.reg_write(spec.syscall_args[0], arg0)
        engine.reg_write(spec.syscall_nr, nr)
        thread.pc -= self.frames.syscall_insn_size
        engine.reg_write(spec.pc, thread.pc)

    def _run_handler(self, thread: Thread, info: SigInfo, action: SigAction) -> bool:
        """Build the frame and enter the handler; False if that failed (the process died)."""
        sig, proc, arch = thread.sig, thread.process, thread.process.arch
        if info.page_only:
            info.addr, info.page_only = self._precise_address(thread, info.addr), False
        regs = self.engine.read_registers()
        regs[_PC[arch]] = thread.pc
        sp = regs[_SP[arch]]
        alt = sig.altstack
        on_alt = action.flags & SA_ONSTACK and not self.altstack_flags(alt, sp) & ~SS_AUTODISARM
        restorer = action.restorer if action.flags & SA_RESTORER else self._trampoline(proc)
        if restorer is None:
            return self._setup_failed(thread, info, "no SA_RESTORER")
        mask = sig.mask if sig.saved_mask is None else sig.saved_mask
        built = self.frames.build(sp, alt if on_alt else None, Delivery(
            info, bool(action.flags & SA_SIGINFO), action.handler, restorer, mask,
            alt.pack(self.altstack_flags(alt, sp)), regs))
        if alt.contains(sp) and not alt.contains(built.start):
            return self._setup_failed(thread, info, "alternate stack overflow")
        try:
            proc.mem.write(built.start, built.data)
        except BadAddress:
            return self._setup_failed(thread, info, f"bad stack at {built.start:#x}")
        if alt.flags & SS_AUTODISARM:
            sig.altstack = AltStack()
        self.engine.write_registers(built.regs)
        thread.pc = built.regs[_PC[arch]]
        sig.saved_mask = None
        sig.mask = handler_mask(sig.mask, action, info.signo)
        proc.sig.actions[info.signo] = after_handler(action, info.signo)
        self._event(thread, info, "handler")
        return True

    def _precise_address(self, thread: Thread, page: int) -> int:
        """The byte the faulting instruction at the thread's pc touched in `page`."""
        pc, mem = thread.pc, thread.process.mem
        code = b""
        for length in (16, PAGE_SIZE - pc % PAGE_SIZE):     # the next page may be absent
            try:
                code = mem.peek(pc, min(length, 16))
                break
            except BadAddress:
                continue
        return self.engine.fault_address(code, pc, page)

    def _setup_failed(self, thread: Thread, info: SigInfo, why: str) -> bool:
        """No frame could be built: the process dies with SIGSEGV, as Linux's force_sigsegv."""
        self.terminate(thread.process, SigInfo(signal.SIGSEGV, SI_KERNEL), thread,
                       f"pid {thread.process.pid} tid {thread.tid}: cannot deliver "
                       f"{signal_name(info.signo)} ({why}): SIGSEGV")
        return False

    def _trampoline(self, proc: Process) -> int | None:
        """The sigreturn trampoline of an AArch64 process (mapped on first use); None on x86-64,
        where Linux requires SA_RESTORER, or if it cannot be mapped."""
        if proc.arch != "aarch64":
            return None
        mapping = proc.space.find(SIGPAGE)
        if mapping is not None:
            return SIGPAGE if isinstance(mapping.obj, SigreturnTrampoline) else None
        # lazy: nothing committed, so that a handler can run even when RAM is exhausted (it
        # needs the page only if it returns)
        proc.space.insert(Mapping(SIGPAGE, SIGPAGE + PAGE_SIZE, PROT_READ | PROT_EXEC,
                                  Share.PRIVATE, SigreturnTrampoline(), 0, "[vdso]", lazy=True))
        return SIGPAGE

    # ---- rt_sigreturn ----

    def sigreturn(self, thread: Thread) -> None:
        """Restore the registers, mask and alternate stack saved in the frame at the stack."""
        sig, proc = thread.sig, thread.process
        sp = self.user_sp()
        try:
            restored = self.frames.parse(self.frames.frame_for_sigreturn(sp), proc.mem.read)
        except (BadFrame, BadAddress) as exc:
            info = SigInfo(signal.SIGSEGV, SI_KERNEL)
            self.force(thread, info, f"pid {proc.pid} tid {thread.tid}: rt_sigreturn: "
                                     f"bad signal frame at sp {sp:#x} ({exc}): SIGSEGV")
            return
        self.engine.write_registers(restored.regs)
        thread.pc = restored.regs[_PC[proc.arch]]
        sig.restart = None
        self.set_mask(thread, restored.mask)
        # as Linux does, a uc_stack that cannot be installed is ignored
        self.change_altstack(thread, restored.stack, restored.regs[_SP[proc.arch]])

    # ---- events ----

    def _ignored(self, thread: Thread, info: SigInfo) -> None:
        proc = thread.process
        if proc.sig.action(info.signo).handler == SIG_DFL \
                and default_action(info.signo) is Default.STOP \
                and info.signo not in proc.sig.stop_noted:
            proc.sig.stop_noted.add(info.signo)
            self._diagnose(thread, f"pid {proc.pid}: {signal_name(info.signo)} would stop the "
                                   "process; emu does not stop processes, so it is ignored")
        self._event(thread, info, "ignore")

    def _event(self, thread: Thread, info: SigInfo, action: str) -> None:
        if self.bus.wants(SignalAction):
            self.bus.publish(SignalAction(self.engine.cycles, thread.process.pid, thread.tid,
                                          info.signo, info.code, info.addr, action))

    def _diagnose(self, thread: Thread, message: str) -> None:
        if self.bus.wants(Diagnostic):
            self.bus.publish(Diagnostic(self.engine.cycles, thread.process.pid, thread.tid,
                                        message))
