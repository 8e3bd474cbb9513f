"""Interval timers (alarm, setitimer) and POSIX timers (timer_create & co) on the simulated clock.

Every timer counts on one clock, in nanoseconds: the simulated machine's time
(CLOCK_REALTIME, CLOCK_MONOTONIC and ITIMER_REAL: emu's wall clock cannot be set, so
they only differ by the epoch), or the CPU time of a process (CLOCK_PROCESS_CPUTIME_ID,
ITIMER_VIRTUAL and ITIMER_PROF, which both count all of the process's RUNNING cycles:
emu does not split user and system time) or of a thread (CLOCK_THREAD_CPUTIME_ID).
A timer of the machine's time sits in the TimerQueue at its expiry. A CPU-time timer
cannot expire before the same span of machine time has passed, so it is checked then
and set again for what is left; while its process makes no progress the checks back
off (doubling, up to a second).

An expiry of a periodic timer that finds the previous one's signal still pending
queues nothing: it counts an overrun in that signal's siginfo (si_overrun), as Linux
does. POSIX timers go at exec and exit (`on_exec`, `forget`); interval timers survive
exec; a forked child has no timers of either kind. RLIMIT_CPU is a pair of process CPU
timers (SIGXCPU from the soft limit on, each second; SIGKILL at the hard limit), armed by
setrlimit (a forked child inherits the limit's value but counts only once it sets it).
"""
from __future__ import annotations

import signal
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from emu.kernel.clock import Clock
from emu.kernel.process import Process, Thread, ThreadState
from emu.kernel.signals import SI_KERNEL, SI_TIMER, SigInfo
from emu.kernel.timers import Timer, TimerQueue

ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF = 0, 1, 2
ITIMER_SIGNALS = {ITIMER_REAL: signal.SIGALRM, ITIMER_VIRTUAL: signal.SIGVTALRM,
                  ITIMER_PROF: signal.SIGPROF}
SIGEV_SIGNAL, SIGEV_NONE, SIGEV_THREAD, SIGEV_THREAD_ID = 0, 1, 2, 4
DELAYTIMER_MAX = 0x7FFFFFFF
MAX_TIMERS = 1 << 15
_MAX_BACKOFF_NS = 10**9

Send = Callable[[Process, SigInfo, "Thread | None"], None]


@dataclass
class TimerSigInfo(SigInfo):
    """The siginfo of a POSIX timer's expiry: si_timerid, si_overrun and si_value."""

    timerid: int = 0
    overrun: int = 0

    def pack(self) -> bytes:
        """The 128-byte siginfo_t with its _timer member (tid, overrun, sigval)."""
        data = struct.pack("<iii4xiiQ", self.signo, self.errno, self.code, self.timerid,
                           min(self.overrun, DELAYTIMER_MAX), self.value)
        return data.ljust(self.SIZE, b"\0")


@dataclass(eq=False)
class ClockTimer:
    """One armed or disarmed timer: when it expires next on its clock, and its period."""

    proc: Process
    signo: int = signal.SIGALRM     # the signal its expiry sends
    cpu: str = ""                   # "": machine time; "process" or "thread": CPU time
    thread: Thread | None = None    # the thread whose CPU time counts ("thread")
    expires: int | None = None      # clock nanoseconds; None: disarmed
    interval: int = 0
    entry: Timer | None = None      # its place in the TimerQueue
    backoff: int = 0                # CPU timers: the next check's delay while idle
    seen: int = 0                   # CPU timers: the clock at the last check


@dataclass(eq=False)
class PosixTimer(ClockTimer):
    """A timer_create timer: its id, how it notifies, and its signal's overrun counts."""

    timerid: int = 0
    clock_id: int = 0
    notify: int = SIGEV_SIGNAL
    value: int = 0
    target_tid: int = 0             # SIGEV_THREAD_ID
    info: TimerSigInfo | None = None    # the latest signal sent
    overrun_last: int = 0


@dataclass
class ProcessTimers:
    """A process's interval timers (by ITIMER_*) and POSIX timers (by id)."""

    itimers: dict[int, ClockTimer] = field(default_factory=dict)
    posix: dict[int, PosixTimer] = field(default_factory=dict)
    next_id: int = 0
    cpu_limit: tuple[ClockTimer, ClockTimer] | None = None    # RLIMIT_CPU: soft, hard


class ItimerTable:
    """Every process's timers, over the timer queue, the clock and the signal sender."""

    def __init__(self, queue: TimerQueue, clock: Clock, cpu_time: Callable[[Thread], int],
                 send: Send, find_thread: Callable[[int], Thread | None]) -> None:
        """Timers firing through `queue`, reading `clock` and threads' CPU cycles, sending
        signals with `send(proc, info, thread or None)`."""
        self.queue = queue
        self.clock = clock
        self.cpu_time = cpu_time
        self.send = send
        self.find_thread = find_thread
        self._procs: dict[Process, ProcessTimers] = {}

    def itimer(self, proc: Process, which: int) -> ClockTimer:
        """The interval timer `which` (ITIMER_*) of `proc`."""
        timers = self.of(proc)
        timer = timers.itimers.get(which)
        if timer is None:
            timer = timers.itimers[which] = ClockTimer(
                proc, ITIMER_SIGNALS[which], "" if which == ITIMER_REAL else "process")
        return timer

    def of(self, proc: Process) -> ProcessTimers:
        """The timers of `proc` (none yet: an empty set)."""
        timers = self._procs.get(proc)
        if timers is None:
            timers = self._procs[proc] = ProcessTimers()
        return timers

    # ---- the clocks ----

    def now(self, timer: ClockTimer) -> int:
        """The timer's clock now, in nanoseconds."""
        if timer.cpu == "process":
            return self.clock.nanoseconds(sum(self.cpu_time(t) for t in timer.proc.threads))
        if timer.cpu == "thread":
            assert timer.thread is not None
            return self.clock.nanoseconds(self.cpu_time(timer.thread))
        return self.clock.now_ns()

    def _cycles_after(self, ns: int) -> int:
        """The first cycle at least `ns` nanoseconds of machine time from now."""
        freq = self.clock.frequency_hz
        return self.clock.now() + max(1, -(-ns * freq // 1_000_000_000))

    # ---- arming ----

    def arm(self, timer: ClockTimer, expires: int | None, interval: int) -> None:
        """Set the timer to expire at clock time `expires` (None: disarm), then every
        `interval` nanoseconds (0: once)."""
        if timer.entry is not None:
            timer.entry.cancel()
            timer.entry = None
        timer.expires, timer.interval = expires, interval if expires is not None else 0
        if isinstance(timer, PosixTimer):
            timer.info, timer.overrun_last = None, 0
        if expires is not None and not (isinstance(timer, PosixTimer)
                                        and timer.notify == SIGEV_NONE):
            timer.backoff, timer.seen = 0, self.now(timer)
            self._schedule(timer)

    def remaining(self, timer: ClockTimer) -> tuple[int, int]:
        """(nanoseconds until the next expiry, interval); 0 left when disarmed. An expiry due
        but not yet handled reports 1 ns (Linux: "about to fire")."""
        if timer.expires is None:
            return 0, timer.interval
        now = self.now(timer)
        if isinstance(timer, PosixTimer) and timer.notify == SIGEV_NONE:
            self._forward(timer, now)
            if timer.expires is None:
                return 0, 0
        return max(timer.expires - now, 1), timer.interval

    def _forward(self, timer: ClockTimer, now: int) -> int:
        """Step a due timer past `now`; how many expiries that was (0 if not due)."""
        assert timer.expires is not None
        if now < timer.expires:
            return 0
        if not timer.interval:
            timer.expires = None
            return 1
        count = 1 + (now - timer.expires) // timer.interval
        timer.expires += count * timer.interval
        return count

    def _schedule(self, timer: ClockTimer) -> None:
        """Put the timer in the queue: at its expiry (machine time), or when its CPU time
        could have run out at the earliest (or after its back-off)."""
        assert timer.expires is not None
        if timer.cpu:
            left = max(timer.expires - self.now(timer), timer.backoff, 0)
            when = self._cycles_after(left)
        else:
            expiry = -(-timer.expires * self.clock.frequency_hz // 1_000_000_000)
            when = max(expiry, self.clock.now())
        timer.entry = self.queue.at(when, lambda: self._fire(timer))

    def _fire(self, timer: ClockTimer) -> None:
        timer.entry = None
        if timer.expires is None or not timer.proc.alive:
            return
        now = self.now(timer)
        if timer.cpu and now < timer.expires:
            if timer.thread is not None and timer.thread.state is ThreadState.DEAD:
                return                          # a dead thread's clock stands still
            progress = now > timer.seen
            timer.seen = now
            timer.backoff = 0 if progress else min(max(2 * timer.backoff, 1_000_000),
                                                    _MAX_BACKOFF_NS)
            self._schedule(timer)
            return
        count = self._forward(timer, now)
        timer.backoff, timer.seen = 0, now
        if timer.expires is not None:
            self._schedule(timer)
        self._notify(timer, count)

    def _notify(self, timer: ClockTimer, count: int) -> None:
        """The timer expired `count` times: its signal."""
        proc = timer.proc
        if not isinstance(timer, PosixTimer):
            self.send(proc, SigInfo(timer.signo, SI_KERNEL), None)
            return
        thread = None
        if timer.notify & SIGEV_THREAD_ID:
            thread = self.find_thread(timer.target_tid)
            if thread is None or thread.process is not proc:
                return                          # the thread is gone: nobody to tell
        info = timer.info
        pending = proc.sig.shared if thread is None else thread.sig.pending
        if info is not None and pending.holds(info):
            info.overrun += count               # the previous signal is still pending
            return
        if info is not None:
            timer.overrun_last = min(info.overrun, DELAYTIMER_MAX)
        timer.info = TimerSigInfo(timer.signo, SI_TIMER, value=timer.value,
                                  timerid=timer.timerid, overrun=count - 1)
        self.send(proc, timer.info, thread)

    # ---- POSIX timers ----

    def create(self, proc: Process, timer: PosixTimer) -> int | None:
        """Give `timer` the next free id of `proc`; None when it has too many."""
        timers = self.of(proc)
        if len(timers.posix) >= MAX_TIMERS:
            return None
        while timers.next_id in timers.posix:
            timers.next_id = (timers.next_id + 1) & 0x7FFFFFFF
        timer.timerid = timers.next_id
        timers.next_id = (timers.next_id + 1) & 0x7FFFFFFF
        timers.posix[timer.timerid] = timer
        return timer.timerid

    def overrun(self, timer: PosixTimer) -> int:
        """timer_getoverrun: the overrun count of the latest signal delivered."""
        info = timer.info
        if info is not None:
            thread = self.find_thread(timer.target_tid) if timer.notify & SIGEV_THREAD_ID \
                else None
            pending = thread.sig.pending if thread is not None else timer.proc.sig.shared
            if not pending.holds(info):
                return min(info.overrun, DELAYTIMER_MAX)
        return timer.overrun_last

    def delete(self, proc: Process, timerid: int) -> bool:
        """Disarm and forget one POSIX timer; False if `proc` has none by that id."""
        timer = self.of(proc).posix.pop(timerid, None)
        if timer is None:
            return False
        self.arm(timer, None, 0)
        return True

    # ---- the process's life ----

    def set_cpu_limit(self, proc: Process, soft_s: int | None, hard_s: int | None) -> None:
        """RLIMIT_CPU (seconds; None: unlimited): SIGXCPU once the process's CPU time passes
        the soft limit and every second after, SIGKILL at the hard limit."""
        timers = self.of(proc)
        if timers.cpu_limit is None:
            timers.cpu_limit = (ClockTimer(proc, signal.SIGXCPU, "process"),
                                ClockTimer(proc, signal.SIGKILL, "process"))
        soft, hard = timers.cpu_limit
        self.arm(soft, None if soft_s is None else soft_s * 10**9, 10**9)
        self.arm(hard, None if hard_s is None else hard_s * 10**9, 0)

    def on_exec(self, proc: Process) -> None:
        """exec: POSIX timers go; interval timers (and alarm) stay."""
        timers = self._procs.get(proc)
        if timers is not None:
            for timerid in list(timers.posix):
                self.delete(proc, timerid)

    def forget(self, proc: Process) -> None:
        """exit: every timer of `proc` goes."""
        timers = self._procs.pop(proc, None)
        if timers is not None:
            for timer in (*timers.itimers.values(), *timers.posix.values(),
                          *(timers.cpu_limit or ())):
                self.arm(timer, None, 0)
