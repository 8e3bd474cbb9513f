"""Resource system calls: limits, usage, times, sysinfo, nice values and the RR interval.

CPU times come from the scheduler's RUNNING cycles (every cycle a thread runs counts as
user time: emu does not split user and system time), converted by the simulated clock.
Nice values are stored per thread and reported as Linux does, but do not change QNX
scheduling (priorities are set with sched_setscheduler/sched_setparam).
"""
from __future__ import annotations

import errno
import struct

from emu.kernel.process import Process, SchedPolicy, Thread
from emu.kernel.resources import (CAP_SYS_NICE, CAP_SYS_RESOURCE, NR_OPEN, RLIM_INFINITY,
                                  RLIM_NLIMITS, RLIMIT_CPU,
                                  RLIMIT_NICE, RLIMIT_NOFILE, capable, resident_pages)
from emu.kernel.syscalls import SyscallContext, syscall, to_int32
from emu.mm.frames import PAGE_SIZE

RUSAGE_SELF, RUSAGE_CHILDREN, RUSAGE_THREAD = 0, -1, 1
PRIO_PROCESS, PRIO_PGRP, PRIO_USER = 0, 1, 2
MIN_NICE, MAX_NICE = -20, 19
USER_HZ = 100
SYSINFO_SIZE = 112


# ---- limits ----

def _check_limit_target(ctx: SyscallContext, pid: int) -> Process:
    """prlimit64's target process: the caller, or one whose ids all match the caller's real
    ids (or any, with CAP_SYS_RESOURCE)."""
    pid = to_int32(pid)
    if pid == 0:
        return ctx.proc
    thread = ctx.threads.find_thread(pid) if pid > 0 else None
    if thread is None or thread.body is not None:
        raise OSError(errno.ESRCH, "no such process")
    target = thread.process
    if target is ctx.proc:
        return target
    me, them = ctx.proc.creds, target.creds
    same = (me.uid == them.uid == them.euid == them.suid
            and me.gid == them.gid == them.egid == them.sgid)
    if not same and not capable(me, CAP_SYS_RESOURCE):
        raise OSError(errno.EPERM, "not permitted")
    return target


def _set_limit(ctx: SyscallContext, proc: Process, resource: int, addr: int,
               old: int) -> int:
    """do_prlimit: report the old limit at `old`, install the one at `addr` (if given)."""
    if not 0 <= resource < RLIM_NLIMITS:
        return -errno.EINVAL
    new = struct.unpack("<QQ", ctx.mem.read(addr, 16)) if addr else None
    limits = proc.res.limits
    previous = limits[resource]
    if new is not None:
        cur, high = new
        if cur > high:
            return -errno.EINVAL
        if resource == RLIMIT_NOFILE and high > NR_OPEN:
            return -errno.EPERM
        if high > previous[1] and not capable(ctx.proc.creds, CAP_SYS_RESOURCE):
            return -errno.EPERM
    if old:
        ctx.mem.write(old, struct.pack("<QQ", *previous))
    if new is not None:
        limits[resource] = (new[0], new[1])
        if resource == RLIMIT_NOFILE:
            proc.fds.limit = min(new[0], NR_OPEN)
        elif resource == RLIMIT_CPU:
            ctx.itimers.set_cpu_limit(proc, *(None if v == RLIM_INFINITY else v for v in new))
    return 0


@syscall("prlimit64", inline=True)
def sys_prlimit64(ctx: SyscallContext, pid: int, resource: int, new: int, old: int,
                  *_: int) -> int:
    """Read and/or set a resource limit of a process (0: the caller)."""
    return _set_limit(ctx, _check_limit_target(ctx, pid), to_int32(resource), new, old)


@syscall("getrlimit", inline=True)
def sys_getrlimit(ctx: SyscallContext, resource: int, old: int, *_: int) -> int:
    """Report a resource limit of the caller."""
    resource = to_int32(resource)
    if not 0 <= resource < RLIM_NLIMITS:
        return -errno.EINVAL
    ctx.mem.write(old, struct.pack("<QQ", *ctx.proc.res.limits[resource]))
    return 0


@syscall("setrlimit", inline=True)
def sys_setrlimit(ctx: SyscallContext, resource: int, new: int, *_: int) -> int:
    """Set a resource limit of the caller (raising the hard limit needs CAP_SYS_RESOURCE)."""
    if not new:
        return -errno.EFAULT
    return _set_limit(ctx, ctx.proc, to_int32(resource), new, 0)


# ---- usage and times ----

def _timeval(ctx: SyscallContext, cycles: int) -> bytes:
    sec, ns = divmod(ctx.clock.nanoseconds(cycles), 10**9)
    return struct.pack("<qq", sec, ns // 1000)


def _process_cycles(ctx: SyscallContext, proc: Process) -> int:
    sched = ctx.threads.sched
    return sum(sched.cpu_time(t) for t in proc.threads)


@syscall("getrusage", inline=True)
def sys_getrusage(ctx: SyscallContext, who: int, out: int, *_: int) -> int:
    """Resource usage of the caller, its waited-for children or its thread: CPU time (all of
    it as user time), largest resident set and page faults."""
    who = to_int32(who)
    proc, res = ctx.proc, ctx.proc.res
    res.maxrss_pages = max(res.maxrss_pages, resident_pages(proc))
    if who == RUSAGE_SELF:
        cycles, rss, minflt, majflt = (_process_cycles(ctx, proc), res.maxrss_pages,
                                       res.minflt, res.majflt)
    elif who == RUSAGE_THREAD:
        cycles, rss, minflt, majflt = (ctx.threads.sched.cpu_time(ctx.thread), res.maxrss_pages,
                                       0, 0)
    elif who == RUSAGE_CHILDREN:
        cycles, rss, minflt, majflt = (res.child_cpu_cycles, res.child_maxrss_pages,
                                       res.child_minflt, res.child_majflt)
    else:
        return -errno.EINVAL
    longs = [rss * (PAGE_SIZE // 1024), 0, 0, 0, minflt, majflt] + [0] * 8
    ctx.mem.write(out, _timeval(ctx, cycles) + _timeval(ctx, 0) + struct.pack("<14q", *longs))
    return 0


@syscall("times", inline=True)
def sys_times(ctx: SyscallContext, buf: int, *_: int) -> int:
    """CPU times of the process and its waited-for children in clock ticks (100 Hz); returns
    the ticks since the simulated boot."""
    ticks = 10**9 // USER_HZ
    if buf:
        clock = ctx.clock
        utime = clock.nanoseconds(_process_cycles(ctx, ctx.proc)) // ticks
        cutime = clock.nanoseconds(ctx.proc.res.child_cpu_cycles) // ticks
        ctx.mem.write(buf, struct.pack("<qqqq", utime, 0, cutime, 0))
    return ctx.clock.now_ns() // ticks


@syscall("sysinfo", inline=True)
def sys_sysinfo(ctx: SyscallContext, info: int, *_: int) -> int:
    """Uptime on the simulated clock, RAM and free frames, and the number of tasks."""
    facts = ctx.system
    up_ns = ctx.clock.now_ns()
    uptime = up_ns // 10**9 + (1 if up_ns % 10**9 else 0)
    data = struct.pack("<q3Q6QH6x2QI", uptime, 0, 0, 0, facts.ram_bytes,
                       facts.frames.free_count * PAGE_SIZE, 0, 0, 0, 0,
                       min(facts.live_threads(), 0xFFFF), 0, 0, 1)
    ctx.mem.write(info, data.ljust(SYSINFO_SIZE, b"\0"))
    return 0


# ---- nice values ----

def _priority_targets(ctx: SyscallContext, which: int, who: int) -> list[Thread]:
    if which == PRIO_PROCESS:
        if who == 0:
            return [ctx.thread]
        thread = ctx.threads.find_thread(who) if who > 0 else None
        return [thread] if thread is not None else []
    procs = [p for p in ctx.signals.processes if p.alive]
    if which == PRIO_PGRP:
        group = who or ctx.proc.pgid
        return [t for p in procs if p.pgid == group for t in p.live_threads()]
    if which == PRIO_USER:
        uid = who or ctx.proc.creds.uid
        return [t for p in procs if p.creds.uid == uid for t in p.live_threads()]
    raise OSError(errno.EINVAL, "bad which")


@syscall("getpriority", inline=True)
def sys_getpriority(ctx: SyscallContext, which: int, who: int, *_: int) -> int:
    """The highest priority (lowest nice) among the targets, as 20 - nice (1-40)."""
    targets = _priority_targets(ctx, to_int32(which), to_int32(who))
    if not targets:
        return -errno.ESRCH
    return max(20 - t.res.nice for t in targets)


@syscall("setpriority")
def sys_setpriority(ctx: SyscallContext, which: int, who: int, niceval: int, *_: int) -> int:
    """Set the nice value (clamped to -20..19) of the targets: others' only if they belong
    to the caller's effective user; lowering it needs RLIMIT_NICE or CAP_SYS_NICE."""
    targets = _priority_targets(ctx, to_int32(which), to_int32(who))
    nice = min(max(to_int32(niceval), MIN_NICE), MAX_NICE)
    me = ctx.proc.creds
    result = -errno.ESRCH
    for thread in targets:
        them = thread.process.creds
        if me.euid not in (them.uid, them.euid) and not capable(me, CAP_SYS_NICE):
            result = -errno.EPERM
        elif nice < thread.res.nice and not (
                20 - nice <= thread.process.res.limits[RLIMIT_NICE][0]
                or capable(me, CAP_SYS_NICE)):
            result = -errno.EACCES
        else:
            thread.res.nice = nice
            if result == -errno.ESRCH:
                result = 0
    return result


@syscall("sched_rr_get_interval", inline=True)
def sys_sched_rr_get_interval(ctx: SyscallContext, pid: int, tp: int, *_: int) -> int:
    """The round-robin time slice of the profile (0 for a SCHED_FIFO thread)."""
    pid = to_int32(pid)
    if pid < 0:
        return -errno.EINVAL
    thread = ctx.thread if pid == 0 else ctx.threads.find_thread(pid)
    if thread is None:
        return -errno.ESRCH
    sched = ctx.threads.sched
    ns = 0 if thread.policy is SchedPolicy.FIFO else ctx.clock.nanoseconds(sched.time_slice)
    ctx.mem.write(tp, struct.pack("<qq", *divmod(ns, 10**9)))
    return 0
