"""System call dispatch: Linux numbers of the guest's architecture → handler functions.

Handlers take a `SyscallContext` and the raw argument registers and return
the result; they signal failure by raising OSError (its errno becomes
-errno) or BadAddress (EFAULT). An unknown call returns ENOSYS and is named
once on stderr.
"""
from __future__ import annotations

import errno
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

from emu.kernel.process import Process, Thread
from emu.kernel.syscalls.numbers import SYS_THREADCTL, TABLES, names_by_number
from emu.mm.uaccess import BadAddress, UserMemory

if TYPE_CHECKING:
    from emu.kernel.futex import FutexTable
    from emu.kernel.sched import Scheduler
    from emu.kernel.sigdeliver import SignalDelivery
    from emu.kernel.timers import TimerQueue
    from emu.kernel.device import BlockDevice
    from emu.kernel.family import Family
    from emu.kernel.residency import Residency
    from emu.mm.pager import Pager
    from emu.profile import Profile


class KernelServices(Protocol):
    """What system calls may ask of the kernel beyond their own process."""

    sched: Scheduler
    pager: Pager
    residency: Residency            # mlock & co, MAP_POPULATE, superlocking
    family: Family                  # fork, execve, wait
    device: BlockDevice
    timers: TimerQueue
    futexes: FutexTable
    profile: Profile
    signals: SignalDelivery

    def exit_thread(self, thread: Thread, code: int) -> None:
        """End one thread."""

    def exit_group(self, proc: Process, code: int) -> None:
        """End every thread of a process with exit code `code`."""

    def kill(self, proc: Process, signo: int) -> None:
        """Terminate a process by a signal, whatever its disposition."""

    def clone_thread(self, parent: Thread, stack: int, tls: int | None) -> Thread:
        """A new thread continuing from the parent's system call with result 0."""

    def find_thread(self, tid: int) -> Thread | None:
        """The live thread with id `tid`."""

    def sleep_until(self, thread: Thread, when: int, rem: int = 0) -> None:
        """Block the running thread until the clock reaches `when` cycles (a signal ends it
        with EINTR, the time left stored at `rem` if given)."""

    def set_tls(self, value: int) -> None:
        """Set the running thread's TLS base register."""

    def get_tls(self) -> int:
        """The running thread's TLS base register."""

    def now_ns(self) -> int:
        """Simulated time since boot, in nanoseconds."""

    def random_bytes(self, n: int) -> bytes:
        """`n` reproducible pseudo-random bytes."""


@dataclass
class SyscallContext:
    """What one system call runs with."""

    proc: Process
    thread: Thread
    kernel: KernelServices

    @property
    def mem(self) -> UserMemory:
        """The calling process's memory."""
        return self.proc.mem

    @property
    def arch(self) -> str:
        """The calling process's architecture name."""
        return self.proc.arch


Handler = Callable[..., int | None]
_HANDLERS: dict[str, Handler] = {}


def syscall(*names: str) -> Callable[[Handler], Handler]:
    """Register a handler for the named system calls."""
    def register(fn: Handler) -> Handler:
        for name in names:
            assert name not in _HANDLERS, f"two handlers for {name}"
            _HANDLERS[name] = fn
        return fn
    return register


def to_signed(value: int) -> int:
    """A 64-bit register value as a signed integer."""
    return value - (1 << 64) if value & (1 << 63) else value


def to_int32(value: int) -> int:
    """The low 32 bits of a register as a signed int (C `int` arguments)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & (1 << 31) else value


@dataclass
class SyscallTable:
    """One architecture's number → handler table."""

    arch: str
    handlers: dict[int, Handler] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    reported: set[int] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def for_arch(cls, arch: str) -> SyscallTable:
        """The table of `arch` with every registered handler."""
        from emu.kernel.syscalls import (family, fs, fsmeta, memory, proc,  # noqa: F401
                                         signals, threads)                  # (registers)
        table = cls(arch=arch, names=names_by_number(arch))
        for name, nr in TABLES[arch].items():
            if name in _HANDLERS:
                table.handlers[nr] = _HANDLERS[name]
        if "ThreadCtl" in _HANDLERS:
            table.handlers[SYS_THREADCTL] = _HANDLERS["ThreadCtl"]
        return table

    def dispatch(self, ctx: SyscallContext, nr: int, args: tuple[int, ...]) -> int | None:
        """Run system call `nr`; returns the value for the return register (None: none)."""
        name = self.names.get(nr, f"syscall_{nr}")
        self.counts[name] = self.counts.get(name, 0) + 1
        handler = self.handlers.get(nr)
        if handler is None:
            if nr not in self.reported:
                self.reported.add(nr)
                print(f"emu: unimplemented system call {name} ({nr}) on {self.arch}: "
                      "returning ENOSYS", file=sys.stderr)
            return -errno.ENOSYS
        try:
            return handler(ctx, *args)
        except BadAddress:
            return -errno.EFAULT
        except OSError as exc:
            return -(exc.errno or errno.EIO)
