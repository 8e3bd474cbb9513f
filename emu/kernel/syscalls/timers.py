"""Timer system calls: alarm, setitimer/getitimer, pause, and POSIX timers (timer_create & co).

The timers themselves are in emu/kernel/itimers.py (on the simulated clock).
"""
from __future__ import annotations

import errno
import struct

from emu.kernel.itimers import (ITIMER_REAL, ITIMER_SIGNALS, SIGEV_NONE, SIGEV_SIGNAL,
                                SIGEV_THREAD, SIGEV_THREAD_ID, ClockTimer, PosixTimer)
from emu.kernel.process import ThreadState
from emu.kernel.resources import CAP_WAKE_ALARM, capable
from emu.kernel.signals import Restart, valid_signal
from emu.kernel.syscalls import SyscallContext, syscall, to_int32
from emu.kernel.syscalls.proc import CLOCK_REALTIME_EPOCH_NS
from emu.mm.uaccess import BadAddress

NS = 1_000_000_000
TIMER_ABSTIME = 1
CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID = 0, 1, 2, 3
CLOCK_BOOTTIME, CLOCK_REALTIME_ALARM, CLOCK_BOOTTIME_ALARM, CLOCK_TAI = 7, 8, 9, 11
_TIMER_CLOCKS = {CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_PROCESS_CPUTIME_ID,
                 CLOCK_THREAD_CPUTIME_ID, CLOCK_BOOTTIME, CLOCK_REALTIME_ALARM,
                 CLOCK_BOOTTIME_ALARM, CLOCK_TAI}
_CLOCKS_WITHOUT_TIMERS = {4, 5, 6}   # MONOTONIC_RAW and the COARSE clocks: EOPNOTSUPP
_WALL_CLOCKS = {CLOCK_REALTIME, CLOCK_REALTIME_ALARM, CLOCK_TAI}    # absolute: since the epoch
SIGEVENT_SIZE = 64


# ---- struct timeval / timespec pairs ----

def _read_pair(ctx: SyscallContext, addr: int, unit: int) -> tuple[int, int]:
    """(interval, value) in nanoseconds from an itimerval (unit 1000) or itimerspec (1);
    EINVAL for a negative or unnormalised member."""
    words = struct.unpack("<qqqq", ctx.mem.read(addr, 32))
    limit = NS // unit
    out = []
    for sec, frac in (words[0:2], words[2:4]):
        if sec < 0 or not 0 <= frac < limit:
            raise OSError(errno.EINVAL, "bad time value")
        out.append(sec * NS + frac * unit)
    return out[0], out[1]


def _write_pair(ctx: SyscallContext, addr: int, interval: int, value: int, unit: int) -> None:
    """Store (interval, value) nanoseconds as an itimerval (unit 1000, truncated) or
    itimerspec (1)."""
    ctx.mem.write(addr, struct.pack("<qqqq", interval // NS, interval % NS // unit,
                                    value // NS, value % NS // unit))


# ---- interval timers ----

def _itimer(ctx: SyscallContext, which: int) -> ClockTimer:
    if which not in ITIMER_SIGNALS:
        raise OSError(errno.EINVAL, "bad itimer")
    return ctx.itimers.itimer(ctx.proc, which)


def _report_itimer(ctx: SyscallContext, timer: ClockTimer, addr: int) -> None:
    left, interval = ctx.itimers.remaining(timer)
    if timer.expires is not None and left < 1000:
        left = 1000                                 # about to fire: 1 µs, as Linux reports
    _write_pair(ctx, addr, interval, left, 1000)


@syscall("getitimer")
def sys_getitimer(ctx: SyscallContext, which: int, out: int, *_: int) -> int:
    """The time left on an interval timer and its interval."""
    _report_itimer(ctx, _itimer(ctx, to_int32(which)), out)
    return 0


@syscall("setitimer")
def sys_setitimer(ctx: SyscallContext, which: int, new: int, old: int, *_: int) -> int:
    """Arm (value 0: disarm) an interval timer; the previous setting goes to `old`."""
    timer = _itimer(ctx, to_int32(which))
    interval, value = _read_pair(ctx, new, 1000) if new else (0, 0)
    if old:
        _report_itimer(ctx, timer, old)
    table = ctx.itimers
    table.arm(timer, table.now(timer) + value if value else None, interval)
    if not value and timer.cpu:
        timer.interval = interval                   # Linux keeps a CPU timer's interval
    return 0


@syscall("alarm")
def sys_alarm(ctx: SyscallContext, seconds: int, *_: int) -> int:
    """SIGALRM in `seconds` (0: cancel); returns the seconds the previous alarm had left,
    rounded to the nearest (and at least 1 if one was pending)."""
    seconds &= 0xFFFFFFFF
    table = ctx.itimers
    timer = table.itimer(ctx.proc, ITIMER_REAL)
    left, _ = table.remaining(timer)
    table.arm(timer, table.now(timer) + seconds * NS if seconds else None, 0)
    secs, frac = divmod(left, NS)
    if (secs == 0 and frac) or frac >= NS // 2:
        secs += 1
    return secs


@syscall("pause")
def sys_pause(ctx: SyscallContext, *_: int) -> int | None:
    """Wait until a signal handler has run; always fails with EINTR."""
    thread, sched = ctx.thread, ctx.threads.sched
    token = sched.block(thread, ThreadState.SIGSUSPEND)

    def interrupted() -> Restart:
        sched.wake(thread, token, -errno.EINTR)
        return Restart.RESTARTNOHAND
    ctx.signals.waiting(thread, token, interrupted)
    return None


# ---- POSIX timers ----

def _posix(ctx: SyscallContext, timerid: int) -> PosixTimer:
    timer = ctx.itimers.of(ctx.proc).posix.get(to_int32(timerid))
    if timer is None:
        raise OSError(errno.EINVAL, "no such timer")
    return timer


def _cpu_clock(ctx: SyscallContext, clock_id: int) -> int:
    """A dynamic CPU clock id (glibc passes MAKE_PROCESS_CPUCLOCK(0, CPUCLOCK_SCHED) for
    CLOCK_PROCESS_CPUTIME_ID) as the static id it stands for; -1 if it names no clock of the
    caller."""
    if clock_id >= 0:
        return clock_id
    pid, kind, per_thread = ~(clock_id >> 3), clock_id & 3, bool(clock_id & 4)
    if kind == 3:
        return -1
    if per_thread:
        return CLOCK_THREAD_CPUTIME_ID if pid in (0, ctx.thread.tid) else -1
    return CLOCK_PROCESS_CPUTIME_ID if pid in (0, ctx.proc.pid) else -1


@syscall("timer_create")
def sys_timer_create(ctx: SyscallContext, clock_id: int, sevp: int, out: int,
                     *_: int) -> int:
    """Create a disarmed POSIX timer on a clock; it notifies by a signal to the process
    (SIGEV_SIGNAL, default SIGALRM), to one of its threads (SIGEV_THREAD_ID), or not at all."""
    clock_id = _cpu_clock(ctx, to_int32(clock_id))
    if clock_id in _CLOCKS_WITHOUT_TIMERS:
        return -errno.EOPNOTSUPP
    if clock_id not in _TIMER_CLOCKS:
        return -errno.EINVAL
    if clock_id in (CLOCK_REALTIME_ALARM, CLOCK_BOOTTIME_ALARM) \
            and not capable(ctx.proc.creds, CAP_WAKE_ALARM):
        return -errno.EPERM
    timer = PosixTimer(ctx.proc, clock_id=clock_id)
    if clock_id == CLOCK_PROCESS_CPUTIME_ID:
        timer.cpu = "process"
    elif clock_id == CLOCK_THREAD_CPUTIME_ID:
        timer.cpu, timer.thread = "thread", ctx.thread
    default_value = True
    if sevp:
        value, signo, notify, tid = struct.unpack("<Qiii44x",
                                                  ctx.mem.read(sevp, SIGEVENT_SIZE))
        if notify == SIGEV_SIGNAL | SIGEV_THREAD_ID:
            thread = ctx.threads.find_thread(tid)
            if thread is None or thread.process is not ctx.proc:
                return -errno.EINVAL
            timer.target_tid = tid
        elif notify not in (SIGEV_SIGNAL, SIGEV_THREAD, SIGEV_NONE):
            return -errno.EINVAL
        if notify != SIGEV_NONE and not valid_signal(signo):
            return -errno.EINVAL
        timer.notify, timer.signo, timer.value = notify, signo, value
        default_value = False
    timerid = ctx.itimers.create(ctx.proc, timer)
    if timerid is None:
        return -errno.EAGAIN
    if default_value:
        timer.value = timerid                       # sigev_value defaults to the id
    try:
        ctx.mem.write(out, struct.pack("<i", timerid))
    except BadAddress:
        ctx.itimers.delete(ctx.proc, timerid)
        raise
    return 0


def _report_posix(ctx: SyscallContext, timer: PosixTimer, addr: int) -> None:
    left, interval = ctx.itimers.remaining(timer)
    _write_pair(ctx, addr, interval, left, 1)


@syscall("timer_settime")
def sys_timer_settime(ctx: SyscallContext, timerid: int, flags: int, new: int, old: int,
                      *_: int) -> int:
    """Arm (value 0: disarm) a POSIX timer, relative or at an absolute time of its clock
    (TIMER_ABSTIME: a time already past expires at once); the previous setting to `old`."""
    timer = _posix(ctx, timerid)
    if not new:
        return -errno.EINVAL
    interval, value = _read_pair(ctx, new, 1)
    if old:
        _report_posix(ctx, timer, old)
    table = ctx.itimers
    if not value:
        table.arm(timer, None, 0)
        return 0
    if flags & TIMER_ABSTIME:
        # (a wall-clock time before the machine booted lies before 0: its expiries count
        # from then, as the overrun of a timer set far in the past must)
        expires = value - (CLOCK_REALTIME_EPOCH_NS if timer.clock_id in _WALL_CLOCKS else 0)
    else:
        expires = table.now(timer) + value
    table.arm(timer, expires, interval)
    return 0


@syscall("timer_gettime")
def sys_timer_gettime(ctx: SyscallContext, timerid: int, out: int, *_: int) -> int:
    """The time left until a POSIX timer's next expiry, and its interval."""
    _report_posix(ctx, _posix(ctx, timerid), out)
    return 0


@syscall("timer_getoverrun")
def sys_timer_getoverrun(ctx: SyscallContext, timerid: int, *_: int) -> int:
    """The expiries the latest delivered signal of a POSIX timer stood for, minus one."""
    return ctx.itimers.overrun(_posix(ctx, timerid))


@syscall("timer_delete")
def sys_timer_delete(ctx: SyscallContext, timerid: int, *_: int) -> int:
    """Disarm and delete a POSIX timer."""
    return 0 if ctx.itimers.delete(ctx.proc, to_int32(timerid)) else -errno.EINVAL
