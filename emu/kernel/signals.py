"""Signals, the mechanism: dispositions, masks, pending sets, choosing a thread, default actions.

Linux semantics, 64 signals (1-31 standard, 32-64 real-time):

- a process has one disposition (`SigAction`) per signal; each thread has its own
  mask, pending set and alternate stack (`ThreadSignals`); a process-directed signal
  (kill) pends in the process's shared set until some thread that does not block
  it takes it;
- a standard signal pends at most once per set; real-time signals queue, up to the target
  user's RLIMIT_SIGPENDING siginfos (beyond it a real-time signal not sent by kill() is
  refused, any other is kept without its siginfo: `queue_overflow`);
- delivery order: synchronous fault signals first, then the lowest number; a
  thread's own pending set before the shared one;
- a signal whose disposition ignores it is discarded when sent, unless it is
  blocked (it may be unblocked after its handler changed); SIGKILL and SIGSTOP
  can be neither caught, ignored nor blocked;
- default actions: terminate, core (terminate: there is no core dump), ignore,
  and stop, which emu treats as ignore (with a note on stderr).

Nothing here touches registers or guest memory: sending and delivering are in
sigdeliver.py, the frame layouts in sigframe.py.
"""
from __future__ import annotations

import enum
import signal
import struct
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emu.kernel.process import Thread

NSIG = 64
SIGRTMIN = 32
SIG_DFL, SIG_IGN = 0, 1
SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK = 0, 1, 2
SIGSET_SIZE = 8                 # the kernel's sigset_t: 64 bits

SA_NOCLDSTOP, SA_NOCLDWAIT, SA_SIGINFO = 0x1, 0x2, 0x4
SA_RESTORER, SA_ONSTACK, SA_RESTART = 0x04000000, 0x08000000, 0x10000000
SA_NODEFER, SA_RESETHAND = 0x40000000, 0x80000000

SS_ONSTACK, SS_DISABLE, SS_AUTODISARM = 1, 2, 1 << 31
MINSIGSTKSZ = {"x86_64": 2048, "aarch64": 5120}     # the smallest alternate stack accepted

# si_code values (include/uapi/asm-generic/siginfo.h)
SI_USER, SI_KERNEL, SI_QUEUE, SI_TKILL = 0, 0x80, -1, -6
SI_TIMER = -2                   # a POSIX timer expired (its union member is _timer)
ILL_ILLOPC, ILL_ILLOPN = 1, 2
FPE_INTDIV = 1
TRAP_BRKPT = 1


def sigbit(signo: int) -> int:
    """The bit of `signo` in a sigset_t."""
    return 1 << (signo - 1)


ALL_SIGNALS = (1 << NSIG) - 1
UNBLOCKABLE = sigbit(signal.SIGKILL) | sigbit(signal.SIGSTOP)
SYNCHRONOUS = (sigbit(signal.SIGSEGV) | sigbit(signal.SIGBUS) | sigbit(signal.SIGILL)
               | sigbit(signal.SIGTRAP) | sigbit(signal.SIGFPE) | sigbit(signal.SIGSYS))
_FAULT_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGTRAP,
                            signal.SIGFPE})


class Default(enum.Enum):
    """A signal's default action."""

    TERMINATE = "terminate"
    CORE = "core"               # terminate (emu writes no core file)
    IGNORE = "ignore"
    STOP = "stop"               # emu does not stop processes: treated as ignore


_CORE = {signal.SIGQUIT, signal.SIGILL, signal.SIGTRAP, signal.SIGABRT, signal.SIGBUS,
         signal.SIGFPE, signal.SIGSEGV, signal.SIGXCPU, signal.SIGXFSZ, signal.SIGSYS}
_IGNORE = {signal.SIGCHLD, signal.SIGURG, signal.SIGWINCH, signal.SIGCONT}
_STOP = {signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}


def default_action(signo: int) -> Default:
    """What SIG_DFL does with `signo` (signal(7))."""
    assert 1 <= signo <= NSIG
    if signo in _CORE:
        return Default.CORE
    if signo in _IGNORE:
        return Default.IGNORE
    if signo in _STOP:
        return Default.STOP
    return Default.TERMINATE


def valid_signal(signo: int) -> bool:
    """Whether `signo` names a signal (1-64)."""
    return 1 <= signo <= NSIG


@dataclass(frozen=True)
class SigAction:
    """One disposition: the kernel's struct sigaction (handler, flags, restorer, mask)."""

    handler: int = SIG_DFL
    flags: int = 0
    restorer: int = 0
    mask: int = 0

    SIZE = 32

    def pack(self) -> bytes:
        """The kernel struct sigaction of x86-64 and AArch64."""
        return struct.pack("<QQQQ", self.handler, self.flags, self.restorer, self.mask)

    @classmethod
    def unpack(cls, data: bytes) -> SigAction:
        """Parse a kernel struct sigaction (SIGKILL and SIGSTOP are dropped from its mask)."""
        handler, flags, restorer, mask = struct.unpack("<QQQQ", data[:cls.SIZE])
        return cls(handler, flags & 0xFFFFFFFF, restorer, mask & ~UNBLOCKABLE)

    @property
    def is_handler(self) -> bool:
        """Whether a guest function catches the signal."""
        return self.handler not in (SIG_DFL, SIG_IGN)

    def ignores(self, signo: int) -> bool:
        """Whether this disposition discards `signo` (SIG_IGN, or a default of ignore or stop)."""
        if self.handler == SIG_IGN:
            return True
        return self.handler == SIG_DFL and default_action(signo) in (Default.IGNORE, Default.STOP)


@dataclass
class SigInfo:
    """A signal and its siginfo_t fields (union members by signal and code)."""

    signo: int
    code: int = SI_USER
    errno: int = 0
    addr: int = 0               # faults: si_addr
    pid: int = 0                # kill, tkill, sigqueue: sender
    uid: int = 0
    value: int = 0              # sigqueue: si_value
    trapno: int = 0             # x86-64 sigcontext trapno / err for CPU exceptions and faults
    error_code: int = 0
    page_only: bool = False     # a memory fault known to the page: refined before delivery
    lost: bool = False          # sent beyond RLIMIT_SIGPENDING: only the pending bit is kept

    SIZE = 128

    @property
    def is_fault(self) -> bool:
        """Whether the kernel raised it for an instruction (its union member is si_addr)."""
        return self.signo in _FAULT_SIGNALS and self.code > 0

    def pack(self) -> bytes:
        """The 128-byte siginfo_t of an LP64 Linux."""
        head = struct.pack("<iii4x", self.signo, self.errno, self.code)
        if self.is_fault:
            body = struct.pack("<Q", self.addr)
        else:
            body = struct.pack("<iIQ", self.pid, self.uid & 0xFFFFFFFF, self.value)
        return (head + body).ljust(self.SIZE, b"\0")


class PendingSet:
    """Signals generated but not yet delivered: one set per thread and one per process."""

    def __init__(self) -> None:
        """An empty set."""
        self._queued: dict[int, deque[SigInfo]] = {}

    @property
    def mask(self) -> int:
        """The pending signals as a sigset_t."""
        bits = 0
        for signo in self._queued:
            bits |= sigbit(signo)
        return bits

    def add(self, info: SigInfo) -> bool:
        """Queue `info`; False (nothing queued) if a standard signal is already pending, or
        if `info` is `lost` and its signal is pending at all. A lost signal (Linux: a pending
        bit without a queued siginfo) is taken over by the next one queued."""
        queue = self._queued.get(info.signo)
        if queue is None:
            self._queued[info.signo] = deque([info])
            return True
        if info.signo < SIGRTMIN or info.lost:
            return False
        if queue[0].lost:
            queue.clear()
        queue.append(info)
        return True

    @property
    def count(self) -> int:
        """How many siginfos are queued (each instance of a real-time signal counts; a lost
        one has none)."""
        return sum(1 for queue in self._queued.values() for info in queue if not info.lost)

    def holds(self, info: SigInfo) -> bool:
        """Whether this very `info` is still queued (not yet delivered or accepted)."""
        return any(queued is info for queued in self._queued.get(info.signo, ()))

    def take(self, signo: int) -> SigInfo | None:
        """Remove and return the oldest instance of `signo`."""
        queue = self._queued.get(signo)
        if not queue:
            return None
        info = queue.popleft()
        if not queue:
            del self._queued[signo]
        return info

    def discard(self, signo: int) -> list[SigInfo]:
        """Remove every instance of `signo`; returns them."""
        return list(self._queued.pop(signo, ()))

    def clear(self) -> None:
        """Forget everything pending."""
        self._queued.clear()


class Overflow(enum.Enum):
    """What sending a signal does to its target user's queue (Linux's __send_signal_locked)."""

    QUEUED = "queued"           # its siginfo is queued
    LOST = "lost"               # sent without its siginfo (SI_USER, no sender)
    REFUSED = "refused"         # not sent: the call fails with EAGAIN


def queue_overflow(info: SigInfo, queued: int, limit: int) -> Overflow:
    """How Linux sends `info` when its target's user has `queued` siginfos pending and an
    RLIMIT_SIGPENDING of `limit`: a standard signal from kill() (code >= 0) is always queued;
    beyond the limit a real-time signal not sent by kill() is refused, any other is lost."""
    if queued < limit or (info.signo < SIGRTMIN and info.code >= 0):
        return Overflow.QUEUED
    if info.signo >= SIGRTMIN and info.code != SI_USER:
        return Overflow.REFUSED
    return Overflow.LOST


def next_signal(pending: int, blocked: int) -> int:
    """The signal to take next from `pending` under `blocked`: synchronous ones first, then the
    lowest number; 0 if none."""
    ready = pending & ~blocked
    if not ready:
        return 0
    if ready & SYNCHRONOUS:
        ready &= SYNCHRONOUS
    return (ready & -ready).bit_length()


@dataclass
class AltStack:
    """A thread's alternate signal stack (stack_t)."""

    sp: int = 0
    size: int = 0
    flags: int = SS_DISABLE

    SIZE = 24

    def contains(self, sp: int) -> bool:
        """Whether `sp` is on this stack (never while disabled or auto-disarmed)."""
        if self.flags & (SS_DISABLE | SS_AUTODISARM) or not self.size:
            return False
        return self.sp < sp <= self.sp + self.size

    def pack(self, flags: int | None = None) -> bytes:
        """The stack_t, with `flags` instead of the stored ones if given."""
        return struct.pack("<Qi4xQ", self.sp, self.flags if flags is None else flags, self.size)

    @classmethod
    def unpack(cls, data: bytes) -> AltStack:
        """Parse a stack_t."""
        sp, flags, size = struct.unpack("<Qi4xQ", data[:cls.SIZE])
        return cls(sp, size, flags & 0xFFFFFFFF)


class Restart(enum.Enum):
    """What an interrupted blocking system call does (Linux's -ERESTART* codes)."""

    EINTR = "eintr"                 # always fails with EINTR
    RESTARTSYS = "restartsys"       # restarted unless a handler without SA_RESTART runs
    RESTARTNOHAND = "restartnohand"  # restarted only if no handler runs


@dataclass(eq=False)
class Wait:
    """An interruptible wait: `cancel` ends it through the scheduler (exactly once), leaving the
    system call's result, and says how the call counts as interrupted (None: it completed)."""

    token: object
    cancel: Callable[[], Restart | None]


@dataclass
class ThreadSignals:
    """A thread's mask, pending signals, alternate stack and interrupted-call bookkeeping."""

    mask: int = 0
    pending: PendingSet = field(default_factory=PendingSet)
    altstack: AltStack = field(default_factory=AltStack)
    saved_mask: int | None = None   # rt_sigsuspend: the mask to restore after the handler
    real_mask: int | None = None    # rt_sigtimedwait: the mask while it waits with some unblocked
    wait: Wait | None = None        # set while blocked interruptibly
    restart: Restart | None = None  # an interrupted call, decided at delivery
    syscall: tuple[int, int] = (0, 0)   # number and first argument of the latest call

    def blocks(self, signo: int) -> bool:
        """Whether the current mask blocks `signo`."""
        return bool(self.mask & sigbit(signo))

    def really_blocks(self, signo: int) -> bool:
        """Whether `signo` is blocked apart from a temporary unblocking by rt_sigtimedwait."""
        mask = self.mask if self.real_mask is None else self.real_mask
        return bool(mask & sigbit(signo))

    def for_new_thread(self) -> ThreadSignals:
        """A clone()d thread's signal state: the same mask, nothing pending, no alternate stack."""
        return ThreadSignals(mask=self.mask)

    def for_fork(self) -> ThreadSignals:
        """A fork()ed child's thread: the same mask and alternate stack, nothing pending."""
        return ThreadSignals(mask=self.mask, altstack=replace(self.altstack))


def _default_actions() -> list[SigAction]:
    return [SigAction() for _ in range(NSIG + 1)]


@dataclass
class ProcessSignals:
    """A process's dispositions (index = signal number) and its shared pending set."""

    actions: list[SigAction] = field(default_factory=_default_actions)
    shared: PendingSet = field(default_factory=PendingSet)
    stop_noted: set[int] = field(default_factory=set)   # stop signals already reported once
    execed: bool = False            # exec'd since its fork (Linux: !PF_FORKNOEXEC; setpgid)

    def action(self, signo: int) -> SigAction:
        """The disposition of `signo`."""
        return self.actions[signo]

    def copy_for_fork(self) -> ProcessSignals:
        """A fork()ed child's dispositions: the same handlers, nothing pending."""
        return ProcessSignals(actions=list(self.actions))

    def reset_for_exec(self) -> None:
        """execve: caught signals go back to SIG_DFL; ignored ones stay ignored (and the
        process is marked as having exec'd)."""
        self.actions = [SigAction(SIG_IGN) if a.handler == SIG_IGN else SigAction()
                        for a in self.actions]
        self.execed = True


def after_handler(action: SigAction, signo: int) -> SigAction:
    """The disposition left once a handler was entered: SA_RESETHAND puts the handler back
    to SIG_DFL and keeps the flags, mask and restorer (Linux's get_signal, SA_ONESHOT)."""
    return replace(action, handler=SIG_DFL) if action.flags & SA_RESETHAND else action


def handler_mask(mask: int, action: SigAction, signo: int) -> int:
    """The mask a handler runs with: the current one, plus sa_mask, plus the signal itself
    unless SA_NODEFER."""
    mask |= action.mask
    if not action.flags & SA_NODEFER:
        mask |= sigbit(signo)
    return mask & ~UNBLOCKABLE


def dequeue(sig: ThreadSignals, shared: PendingSet, blocked: int) -> SigInfo | None:
    """Take the next signal not in `blocked`: the thread's own before the process's."""
    for pending in (sig.pending, shared):
        signo = next_signal(pending.mask, blocked)
        if signo:
            return pending.take(signo)
    return None


def deliverable(sig: ThreadSignals, shared: PendingSet) -> bool:
    """Whether a pending signal is not blocked by the thread."""
    return bool((sig.pending.mask | shared.mask) & ~sig.mask)


def choose_thread(threads: Iterable[Thread], signo: int) -> Thread | None:
    """The thread that takes a process-directed `signo`: the first of the live `threads` (the
    main thread first) that does not block it; None if every one blocks it."""
    return next((t for t in threads if not t.sig.blocks(signo)), None)
