"""Signal delivery without a CPU: sending, fatal defaults, interrupting waits exactly once,
restarting system calls, frames written to guest memory and rt_sigreturn, with a register
file standing in for the engine."""
from __future__ import annotations

import errno
import signal

import pytest

from emu.cpu.arch import ARCHES, SIGNAL_REGISTERS
from emu.kernel.process import ExitStatus, Process, Thread, ThreadState
from emu.kernel.sched import Scheduler
from emu.kernel.sigdeliver import SIGPAGE, SignalDelivery
from emu.kernel.sigframe import X86_INFO
from emu.kernel.signals import (
    SA_RESTART,
    SA_RESTORER,
    SA_SIGINFO,
    SI_TKILL,
    SIG_IGN,
    Restart,
    SigAction,
    SigInfo,
    sigbit,
)
from emu.mm.fault import Access
from emu.mm.frames import PAGE_SIZE
from emu.mm.uaccess import UserMemory
from emu.mm.vmspace import PROT_READ, PROT_WRITE
from emu.trace.events import Diagnostic, Event, EventBus, SignalAction

from .support import make_memory

USR1, USR2, TERM = signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM
STACK, STACK_PAGES = 0x7000_0000, 8
HANDLER, RESTORER = 0x401000, 0x402000


class Registers:
    """A register file with the engine's register interface (no Unicorn)."""

    def __init__(self, arch: str) -> None:
        self.spec = ARCHES[arch]
        self.ids = SIGNAL_REGISTERS[arch]
        self.names = {reg: name for name, reg in self.ids.items()}
        self.regs = dict.fromkeys(self.ids, 0)
        self.cycles = 0

    def read_registers(self) -> dict[str, int]:
        return dict(self.regs)

    def write_registers(self, regs: dict[str, int]) -> None:
        self.regs.update(regs)

    def reg_read(self, reg: int) -> int:
        return self.regs[self.names[reg]]

    def reg_write(self, reg: int, value: int) -> None:
        self.regs[self.names[reg]] = value

    def fault_address(self, code: bytes, pc: int, page: int) -> int:
        return page


class Rig:
    """One process with one or two threads, a stack in real (Python) RAM, a scheduler."""

    def __init__(self, arch: str = "x86_64") -> None:
        self.memory = make_memory()
        self.memory.map_anon(STACK, STACK_PAGES, PROT_READ | PROT_WRITE)
        self.engine = Registers(arch)
        self.events: list[Event] = []
        bus = EventBus()
        bus.subscribe(self.events.append)
        self.sched = Scheduler(bus, lambda: 0, 1000)
        mem = UserMemory(self.memory.space, self.memory.ram, self.memory.fault_in)
        self.proc = Process(pid=5, arch=arch, space=self.memory.space, mem=mem, root=None,
                            exe_path="t")
        self.ended: list[ExitStatus] = []
        self.signals = SignalDelivery(self.engine, self.sched, bus, [self.proc], self._end,
                                      procnto=Process(pid=1, arch=arch, space=None, mem=None,
                                                      root=None, exe_path="procnto"))
        self.main = self.thread(5)
        assert self.sched.dispatch() is self.main
        self.sp = STACK + STACK_PAGES * PAGE_SIZE - 0x100
        self.engine.regs[self.name("sp")] = self.sp

    def signal_events(self) -> list[tuple[int, str]]:
        return [(e.signal, e.action) for e in self.events if isinstance(e, SignalAction)]

    def diagnostics(self) -> list[str]:
        return [e.message for e in self.events if isinstance(e, Diagnostic)]

    def name(self, what: str) -> str:
        return {"sp": "rsp", "pc": "rip", "ret": "rax"}[what] if self.proc.arch == "x86_64" \
            else {"sp": "sp", "pc": "pc", "ret": "x0"}[what]

    def thread(self, tid: int) -> Thread:
        t = Thread(tid=tid, process=self.proc, pc=0x400100)
        self.proc.threads.append(t)
        self.sched.admit(t)
        return t

    def _end(self, proc: Process, status: ExitStatus) -> None:
        proc.exit = status
        self.ended.append(status)
        for t in proc.threads:
            self.sched.kill(t)

    def handle(self, signo: int, flags: int = 0) -> None:
        action = SigAction(HANDLER, SA_SIGINFO | SA_RESTORER | flags, RESTORER)
        self.signals.set_action(self.proc, signo, action)


@pytest.fixture
def rig() -> Rig:
    return Rig()


def test_a_handler_runs_on_a_frame_and_sigreturn_comes_back(rig: Rig) -> None:
    rig.handle(USR1)
    rig.signals.send(rig.proc, SigInfo(USR1, SI_TKILL, pid=5), rig.main)
    rig.engine.regs["rax"] = 77
    rig.signals.deliver(rig.main)
    regs = rig.engine.regs
    frame = regs["rsp"]
    assert (regs["rip"], regs["rdi"], regs["rsi"]) == (HANDLER, USR1, frame + X86_INFO)
    assert rig.main.pc == HANDLER and rig.main.sig.mask == sigbit(USR1)
    assert rig.proc.mem.read_u64(frame) == RESTORER
    assert rig.signal_events() == [(USR1, "handler")]
    regs["rsp"] = frame + 8                             # the handler's ret popped pretcode
    rig.signals.sigreturn(rig.main)
    assert (regs["rip"], regs["rsp"], regs["rax"]) == (0x400100, rig.sp, 77)
    assert rig.main.pc == 0x400100 and rig.main.sig.mask == 0


def test_a_fatal_default_kills_when_sent(rig: Rig) -> None:
    rig.signals.send(rig.proc, SigInfo(TERM))
    assert rig.ended == [ExitStatus(signal=TERM)]
    assert rig.signal_events() == [(TERM, "default")]


def test_ignored_signals_are_discarded_unless_blocked(rig: Rig) -> None:
    rig.signals.set_action(rig.proc, USR2, SigAction(SIG_IGN))
    rig.signals.send(rig.proc, SigInfo(USR2))
    assert rig.signal_events() == [(USR2, "ignore")] and rig.proc.sig.shared.mask == 0
    rig.main.sig.mask = sigbit(USR2)
    rig.signals.send(rig.proc, SigInfo(USR2))
    assert rig.proc.sig.shared.mask == sigbit(USR2)
    rig.signals.set_action(rig.proc, USR2, SigAction(SIG_IGN))  # setting SIG_IGN discards it
    assert rig.proc.sig.shared.mask == 0 and not rig.ended


def test_a_blocked_signal_waits_for_the_mask(rig: Rig) -> None:
    rig.handle(USR1)
    rig.main.sig.mask = sigbit(USR1)
    rig.signals.send(rig.proc, SigInfo(USR1))
    rig.signals.deliver(rig.main)
    assert rig.signal_events() == [] and rig.main.pc == 0x400100
    rig.signals.set_mask(rig.main, 0)
    rig.signals.deliver(rig.main)
    assert rig.signal_events() == [(USR1, "handler")]


def test_a_process_signal_goes_to_a_thread_that_does_not_block_it(rig: Rig) -> None:
    other = rig.thread(6)
    cancels: list[int] = []
    rig.sched.yield_cpu(rig.main)
    assert rig.sched.dispatch() is other
    token = rig.sched.block(other, ThreadState.SIGSUSPEND)

    def cancel() -> Restart:
        cancels.append(1)
        rig.sched.wake(other, token, -errno.EINTR)
        return Restart.RESTARTNOHAND
    rig.signals.waiting(other, token, cancel)
    rig.handle(USR1)
    rig.main.sig.mask = sigbit(USR1)
    rig.signals.send(rig.proc, SigInfo(USR1))
    assert cancels == [1] and other.state is ThreadState.READY
    assert other.pending_result == -errno.EINTR and other.sig.restart is Restart.RESTARTNOHAND
    rig.signals.send(rig.proc, SigInfo(USR2, pid=9))      # not waiting any more: no second wake
    assert cancels == [1]


def test_an_interrupted_call_restarts_with_sa_restart(rig: Rig) -> None:
    rig.handle(USR1, SA_RESTART)
    rig.main.sig.syscall = (202, 0x1234)                 # futex(0x1234, ...)
    rig.main.sig.restart = Restart.RESTARTSYS
    rig.main.pc = 0x400102                               # just after the 2-byte syscall
    rig.engine.regs.update(rax=-errno.EINTR & (2**64 - 1), rdi=0x1234)
    rig.signals.send(rig.proc, SigInfo(USR1), rig.main)
    rig.signals.deliver(rig.main)
    frame = rig.engine.regs["rsp"]
    saved_rip = rig.proc.mem.read_u64(frame + 48 + 128)
    saved_rax = rig.proc.mem.read_u64(frame + 48 + 104)
    assert (saved_rip, saved_rax) == (0x400100, 202)


def test_an_interrupted_call_fails_with_eintr_without_sa_restart(rig: Rig) -> None:
    rig.handle(USR1)
    rig.main.sig.restart = Restart.RESTARTSYS
    rig.main.pc = 0x400102
    rig.engine.regs["rax"] = -errno.EINTR & (2**64 - 1)
    rig.signals.send(rig.proc, SigInfo(USR1), rig.main)
    rig.signals.deliver(rig.main)
    frame = rig.engine.regs["rsp"]
    assert rig.proc.mem.read_u64(frame + 48 + 128) == 0x400102
    assert rig.proc.mem.read_u64(frame + 48 + 104) == -errno.EINTR & (2**64 - 1)


def test_a_fault_signal_without_handler_or_blocked_kills(rig: Rig) -> None:
    assert not rig.signals.force(rig.main, SigInfo(signal.SIGSEGV, 1, addr=0x10), "why")
    assert rig.ended == [ExitStatus(signal=signal.SIGSEGV)]
    assert rig.diagnostics() == ["why"]
    second = Rig()
    second.handle(signal.SIGSEGV)
    assert second.signals.force(second.main, SigInfo(signal.SIGSEGV, 1, addr=0x10), "why")
    second.main.sig.mask = sigbit(signal.SIGSEGV)
    assert not second.signals.force(second.main, SigInfo(signal.SIGSEGV, 1), "why")


def test_x86_needs_sa_restorer() -> None:
    rig = Rig()
    rig.signals.set_action(rig.proc, USR1, SigAction(HANDLER, SA_SIGINFO))
    rig.signals.send(rig.proc, SigInfo(USR1), rig.main)
    rig.signals.deliver(rig.main)
    assert rig.ended == [ExitStatus(signal=signal.SIGSEGV)]
    assert any("no SA_RESTORER" in line for line in rig.diagnostics())


def test_aarch64_returns_through_the_trampoline_page() -> None:
    rig = Rig("aarch64")
    rig.signals.set_action(rig.proc, USR1, SigAction(HANDLER, SA_SIGINFO))
    rig.signals.send(rig.proc, SigInfo(USR1), rig.main)
    rig.signals.deliver(rig.main)
    assert rig.engine.regs["x30"] == SIGPAGE and rig.engine.regs["pc"] == HANDLER
    assert rig.memory.fault_in(SIGPAGE, Access.FETCH)      # mov x8, #139; svc #0
    assert rig.proc.mem.peek(SIGPAGE, 8) == bytes.fromhex("681180d2010000d4")
