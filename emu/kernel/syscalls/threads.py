"""Threads, futexes and sleeping (waits a signal can interrupt); the scheduling calls are in
emu/kernel/syscalls/sched.py."""
from __future__ import annotations

import errno
import struct

from emu.kernel.futex import FUTEX_BITSET_MATCH_ANY, FutexTable, Waiter
from emu.kernel.process import ThreadState
from emu.kernel.signals import Restart
from emu.kernel.syscalls import SyscallContext, syscall, to_int32
from emu.kernel.syscalls.family import clone_process
from emu.kernel.syscalls.proc import CLOCK_REALTIME, CLOCK_REALTIME_EPOCH_NS

CLONE_VM, CLONE_FS, CLONE_FILES, CLONE_SIGHAND = 0x100, 0x200, 0x400, 0x800
CLONE_THREAD, CLONE_SYSVSEM, CLONE_SETTLS = 0x10000, 0x40000, 0x80000
CLONE_PARENT_SETTID, CLONE_CHILD_CLEARTID, CLONE_CHILD_SETTID = 0x100000, 0x200000, 0x01000000
_THREAD_FLAGS = CLONE_VM | CLONE_THREAD | CLONE_SIGHAND

FUTEX_WAIT, FUTEX_WAKE, FUTEX_REQUEUE, FUTEX_CMP_REQUEUE = 0, 1, 3, 4
FUTEX_WAIT_BITSET, FUTEX_WAKE_BITSET = 9, 10
FUTEX_PRIVATE_FLAG, FUTEX_CLOCK_REALTIME = 128, 256
TIMER_ABSTIME = 1


# ---- threads ----

@syscall("clone")
def sys_clone(ctx: SyscallContext, flags: int, stack: int, ptid: int, a3: int, a4: int,
              *_: int) -> int:
    """Create a thread (the flags glibc's pthread_create uses); processes come with fork."""
    # the order of the last two arguments differs between the ABIs
    ctid, tls = (a3, a4) if ctx.arch == "x86_64" else (a4, a3)
    if not flags & CLONE_THREAD:
        return clone_process(ctx, flags, stack, ptid, ctid)
    if flags & _THREAD_FLAGS != _THREAD_FLAGS:
        return -errno.EINVAL
    child = ctx.threads.clone_thread(ctx.thread, stack, tls if flags & CLONE_SETTLS else None)
    if flags & CLONE_PARENT_SETTID:
        ctx.mem.write(ptid, struct.pack("<i", child.tid))
    if flags & CLONE_CHILD_SETTID:
        ctx.mem.write(ctid, struct.pack("<i", child.tid))
    if flags & CLONE_CHILD_CLEARTID:
        child.clear_child_tid = ctid
    return child.tid


@syscall("clone3")
def sys_clone3(ctx: SyscallContext, *_: int) -> int:
    """Not offered: glibc falls back to clone."""
    return -errno.ENOSYS


def read_timespec(ctx: SyscallContext, addr: int) -> int:
    """The struct timespec at `addr` in nanoseconds (EINVAL if negative or not normalised)."""
    sec, nsec = struct.unpack("<qq", ctx.mem.read(addr, 16))
    if sec < 0 or not 0 <= nsec < 1_000_000_000:
        raise OSError(errno.EINVAL, "bad timespec")
    return sec * 1_000_000_000 + nsec


@syscall("futex")
def sys_futex(ctx: SyscallContext, uaddr: int, op: int, val: int, timeout: int, uaddr2: int,
              val3: int) -> int | None:
    """WAIT, WAKE, their BITSET forms and (CMP_)REQUEUE, private or not."""
    cmd = op & ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME)
    table = ctx.threads.futexes
    private = bool(op & FUTEX_PRIVATE_FLAG)
    key = FutexTable.key(ctx.proc, uaddr, private)
    if cmd in (FUTEX_WAKE, FUTEX_WAKE_BITSET):
        bitset = val3 & 0xFFFFFFFF if cmd == FUTEX_WAKE_BITSET else FUTEX_BITSET_MATCH_ANY
        if bitset == 0:
            return -errno.EINVAL
        return table.wake(key, to_int32(val) if to_int32(val) > 0 else 0, bitset)
    if cmd in (FUTEX_REQUEUE, FUTEX_CMP_REQUEUE):
        if cmd == FUTEX_CMP_REQUEUE and struct.unpack("<I", ctx.mem.read(uaddr, 4))[0] != val3 & 0xFFFFFFFF:
            return -errno.EAGAIN
        return table.requeue(key, FutexTable.key(ctx.proc, uaddr2, private), to_int32(val),
                             to_int32(timeout))
    if cmd not in (FUTEX_WAIT, FUTEX_WAIT_BITSET):
        return -errno.ENOSYS
    bitset = val3 & 0xFFFFFFFF if cmd == FUTEX_WAIT_BITSET else FUTEX_BITSET_MATCH_ANY
    if bitset == 0 or uaddr % 4:
        return -errno.EINVAL
    if struct.unpack("<I", ctx.mem.read(uaddr, 4))[0] != val & 0xFFFFFFFF:
        return -errno.EAGAIN
    clock = ctx.clock
    deadline = None
    if timeout:
        ns = read_timespec(ctx, timeout)
        if cmd == FUTEX_WAIT:                       # relative
            deadline = clock.now_ns() + ns
        else:                                       # absolute, MONOTONIC or REALTIME
            deadline = ns - (CLOCK_REALTIME_EPOCH_NS if op & FUTEX_CLOCK_REALTIME else 0)
        if deadline <= clock.now_ns():
            return -errno.ETIMEDOUT
    state = ThreadState.JOIN if _is_join(ctx, uaddr) else ThreadState.MUTEX
    waiter = table.wait(ctx.thread, key, bitset, state)
    if deadline is not None:
        waiter.timer = ctx.threads.timers.at(clock.cycles(deadline),
                                             lambda: table.time_out(waiter))
    # a signal ends the wait; without a timeout, SA_RESTART restarts it (Linux: -ERESTARTSYS)
    restart = Restart.RESTARTSYS if deadline is None else Restart.EINTR
    ctx.signals.waiting(ctx.thread, waiter.token,
                           lambda: _interrupt_futex(table, waiter, restart))
    return None


def _interrupt_futex(table: FutexTable, waiter: Waiter, restart: Restart) -> Restart:
    """A signal ends a futex wait: the waiter leaves its queue and is woken (through the
    scheduler, once) by the table's time-out path, with EINTR instead of ETIMEDOUT."""
    table.time_out(waiter)
    waiter.thread.pending_result = -errno.EINTR
    return restart


def _is_join(ctx: SyscallContext, uaddr: int) -> bool:
    """A wait on another thread's clear-child-tid word is a join."""
    return any(t.clear_child_tid == uaddr for t in ctx.proc.live_threads() if t is not ctx.thread)


# ---- sleeping ----

@syscall("nanosleep")
def sys_nanosleep(ctx: SyscallContext, req: int, rem: int, *_: int) -> int | None:
    """Sleep for a relative time on the simulated clock."""
    ns = read_timespec(ctx, req)
    ctx.threads.sleep_until(ctx.thread, ctx.clock.cycles(ctx.clock.now_ns() + ns), rem)
    return None


CLOCK_THREAD_CPUTIME_ID = 3
_SLEEP_CLOCKS = (0, 1, 2, 7, 8, 9, 11)   # REALTIME, MONOTONIC, PROCESS_CPUTIME, BOOTTIME,
                                         # REALTIME_ALARM, BOOTTIME_ALARM, TAI


@syscall("clock_nanosleep")
def sys_clock_nanosleep(ctx: SyscallContext, clock_id: int, flags: int, req: int, rem: int,
                        *_: int) -> int | None:
    """Sleep for a relative time, or until an absolute one (TIMER_ABSTIME), on the realtime,
    monotonic or boot-time clock (a thread's CPU clock: EOPNOTSUPP; others: EINVAL)."""
    clock_id = to_int32(clock_id)
    if clock_id == CLOCK_THREAD_CPUTIME_ID:
        return -errno.EOPNOTSUPP
    if clock_id not in _SLEEP_CLOCKS:
        return -errno.EINVAL
    ns = read_timespec(ctx, req)
    clock = ctx.clock
    if flags & TIMER_ABSTIME:
        target = ns - (CLOCK_REALTIME_EPOCH_NS if to_int32(clock_id) == CLOCK_REALTIME else 0)
    else:
        target = clock.now_ns() + ns
    if target <= clock.now_ns():
        return 0
    ctx.threads.sleep_until(ctx.thread, clock.cycles(target),
                       0 if flags & TIMER_ABSTIME else rem)
    return None
