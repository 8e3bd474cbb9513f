"""System call dispatch: Linux numbers of the guest's architecture → handler functions.

Handlers take a `SyscallContext` and the raw argument registers and return the
result; they signal failure by raising OSError (its errno becomes -errno) or
BadAddress (EFAULT). An unknown call returns ENOSYS and is named once (a
Diagnostic event). A handler sees the kernel only through the small per-family
interfaces of its context (`ctx.threads`, `ctx.clock`, `ctx.memory`,
`ctx.signals`, `ctx.family`), never the kernel as a whole.

Handlers registered with `inline=True` cannot block, switch threads or change
the address space: the CPU's system-call hook runs them without stopping.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

from emu.kernel.process import Process, Thread
from emu.kernel.syscalls.numbers import SYS_THREADCTL, TABLES, names_by_number
from emu.mm.uaccess import BadAddress, UserMemory
from emu.trace.events import EventBus, SyscallEnter, SyscallExit

if TYPE_CHECKING:
    from emu.kernel.clock import Clock
    from emu.kernel.family import Family
    from emu.kernel.futex import FutexTable
    from emu.kernel.hostio import HostPoller
    from emu.kernel.io import BackingStore
    from emu.kernel.itimers import ItimerTable
    from emu.kernel.locks import LockTable
    from emu.kernel.pipes import FifoTable
    from emu.kernel.procfs import ProcFs
    from emu.kernel.residency import Residency
    from emu.kernel.resources import SystemFacts
    from emu.kernel.sched import Scheduler
    from emu.kernel.sigdeliver import SignalDelivery
    from emu.kernel.sysvshm import SysvShm
    from emu.kernel.timers import TimerQueue
    from emu.kernel.waitq import Blocking
    from emu.kernel.waits import Waits
    from emu.mm.pagecache import PageCache


class ThreadServices(Protocol):
    """What thread, futex, scheduling and sleeping calls use."""

    sched: Scheduler
    futexes: FutexTable
    timers: TimerQueue

    @property
    def default_priority(self) -> int:
        """Priority of SCHED_OTHER threads."""

    def exit_thread(self, thread: Thread, code: int) -> None:
        """End one thread."""

    def exit_group(self, proc: Process, code: int) -> None:
        """End every thread of a process with exit code `code`."""

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

    def random_bytes(self, n: int) -> bytes:
        """`n` reproducible pseudo-random bytes."""


@dataclass(frozen=True)
class MemoryServices:
    """What the mmap family, msync, mlock & co and file I/O use."""

    page_cache: PageCache
    residency: Residency
    store: BackingStore
    waits: Waits


@dataclass(frozen=True)
class Services:
    """Every family's interface, built once by the machine."""

    threads: ThreadServices
    clock: Clock
    memory: MemoryServices
    signals: SignalDelivery
    family: Family
    blocking: Blocking
    host: HostPoller
    locks: LockTable            # fcntl record locks
    procfs: ProcFs              # the synthetic /proc
    fifos: FifoTable            # the pipes behind named FIFOs
    system: SystemFacts         # sysinfo's machine-wide figures
    itimers: ItimerTable        # alarm, setitimer, POSIX timers
    shm: SysvShm                # System V shared memory segments


class SyscallContext:
    """What one system call runs with: the caller and the per-family interfaces."""

    __slots__ = ("proc", "thread", "mem", "arch", "threads", "clock", "memory", "signals",
                 "family", "blocking", "host", "locks", "procfs", "fifos", "system", "itimers", "shm")

    def __init__(self, proc: Process, thread: Thread, services: Services) -> None:
        """The context of a call made by `thread` of `proc`."""
        self.proc = proc
        self.thread = thread
        self.mem: UserMemory = proc.mem
        self.arch: str = proc.arch
        self.threads = services.threads
        self.clock = services.clock
        self.memory = services.memory
        self.signals = services.signals
        self.family = services.family
        self.blocking = services.blocking
        self.host = services.host
        self.locks = services.locks
        self.procfs = services.procfs
        self.fifos = services.fifos
        self.system = services.system
        self.itimers = services.itimers
        self.shm = services.shm


Handler = Callable[..., int | None]
_HANDLERS: dict[str, Handler] = {}
_INLINE: set[str] = set()


def syscall(*names: str, inline: bool = False) -> Callable[[Handler], Handler]:
    """Register a handler for the named system calls (`inline`: it may run inside the CPU's
    hook: it never blocks, switches threads or changes mappings, and always returns an int)."""
    def register(fn: Handler) -> Handler:
        for name in names:
            assert name not in _HANDLERS, f"two handlers for {name}"
            _HANDLERS[name] = fn
            if inline:
                _INLINE.add(name)
        return fn
    return register


def to_signed(value: int) -> int:
    """A 64-bit register value as a signed integer."""
    return value - (1 << 64) if value & (1 << 63) else value


def to_int32(value: int) -> int:
    """The low 32 bits of a register as a signed int (C `int` arguments)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & (1 << 31) else value


UnknownCall = Callable[[str, int, str], None]
"""(name, number, arch): an unknown system call, the first time it is made."""


@dataclass
class SyscallTable:
    """One architecture's number → handler table."""

    arch: str
    handlers: dict[int, Handler] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    inline: tuple[int, ...] = ()
    reported: set[int] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)   # calls the CPU does not count
    on_unknown: UnknownCall | None = None
    bus: EventBus | None = None     # SyscallEnter/SyscallExit go here when someone listens

    @classmethod
    def for_arch(cls, arch: str, on_unknown: UnknownCall | None = None) -> SyscallTable:
        """The table of `arch` with every registered handler."""
        from emu.kernel.syscalls import (family, fcntlcmds, fs, fsextra, fsmeta,  # noqa: F401
                                         fsmore, memory, poll,
                                         proc, rw, sched, signals, threads,  # (registers)
                                         identity, resources, shm, sockets, timers)
        table = cls(arch=arch, names=names_by_number(arch), on_unknown=on_unknown)
        for name, nr in TABLES[arch].items():
            if name in _HANDLERS:
                table.handlers[nr] = _HANDLERS[name]
        if "ThreadCtl" in _HANDLERS:
            table.handlers[SYS_THREADCTL] = _HANDLERS["ThreadCtl"]
        table.inline = tuple(sorted(nr for nr, name in table.names.items()
                                    if name in _INLINE and nr in table.handlers))
        return table

    def name_of(self, nr: int) -> str:
        """The call's name ('syscall_N' if unknown)."""
        return self.names.get(nr, f"syscall_{nr}")

    def dispatch(self, ctx: SyscallContext, nr: int, args: tuple[int, ...],
                 counted: bool = True) -> int | None:
        """Run system call `nr`; returns the value for the return register (None: none).
        `counted`: the CPU already counted it (every call below FP_MAX_SYSCALL)."""
        if not counted:
            name = self.name_of(nr)
            self.counts[name] = self.counts.get(name, 0) + 1
        bus = self.bus
        if bus is not None and bus.wants(SyscallEnter):
            return self._traced(bus, ctx, nr, args)
        return self._call(ctx, nr, args)

    def _traced(self, bus: EventBus, ctx: SyscallContext, nr: int,
                args: tuple[int, ...]) -> int | None:
        """`_call` between a SyscallEnter and a SyscallExit event."""
        pid, tid, name = ctx.proc.pid, ctx.thread.tid, self.name_of(nr)
        bus.publish(SyscallEnter(ctx.clock.now(), pid, tid, nr, name, args))
        result = self._call(ctx, nr, args)
        if bus.wants(SyscallExit):
            bus.publish(SyscallExit(ctx.clock.now(), pid, tid, nr, name,
                                    None if result is None else to_signed(result & (1 << 64) - 1)))
        return result

    def _call(self, ctx: SyscallContext, nr: int, args: tuple[int, ...]) -> int | None:
        """Run the handler of `nr` (ENOSYS, named once, without one)."""
        handler = self.handlers.get(nr)
        if handler is None:
            if nr not in self.reported:
                self.reported.add(nr)
                if self.on_unknown is not None:
                    self.on_unknown(self.name_of(nr), nr, self.arch)
            return -errno.ENOSYS
        try:
            return handler(ctx, *args)
        except BadAddress:
            return -errno.EFAULT
        except OSError as exc:
            return -(exc.errno or errno.EIO)

    def dispatch_inline(self, ctx: SyscallContext, nr: int, args: tuple[int, ...]) -> int:
        """Run an inline system call (see `syscall(inline=True)`); its result."""
        result = self.dispatch(ctx, nr, args)
        assert result is not None, f"inline system call {self.name_of(nr)} gave no result"
        return result
