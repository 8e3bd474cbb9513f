"""Scheduling system calls: policies and priorities, struct sched_attr, SCHED_DEADLINE, CPU
affinity and sched_yield, with the checks of Linux 6.1's kernel/sched/core.c.

The guest sees Linux's ABI — SCHED_OTHER, SCHED_BATCH and SCHED_IDLE at priority 0,
SCHED_FIFO and SCHED_RR at 1-99, SCHED_DEADLINE with a runtime, a deadline and a period —
while each thread runs under a QNX policy and priority derived from it
(`emu.kernel.sched.qnx_params`: time-sharing threads round robin at the default priority 10,
real-time ones at their own number, deadline threads round robin at 100, unthrottled).

Who may change what, as Linux decides it for a caller without CAP_SYS_NICE: its own
threads only (its effective uid is the target's real or effective uid); no real-time policy
unless RLIMIT_RTPRIO allows the priority; no SCHED_DEADLINE at all; no lower nice value
than RLIMIT_NICE allows; SCHED_RESET_ON_FORK, once set, stays. Deadline threads together
reserve at most 95 % of the one CPU (EBUSY beyond). emu has one CPU: an affinity mask must
include CPU 0.
"""
from __future__ import annotations

import errno
import struct
from dataclasses import dataclass, replace

from emu.kernel.process import Thread
from emu.kernel.resources import (CAP_SYS_NICE, RLIMIT_NICE, RLIMIT_RTPRIO, capable)
from emu.kernel.sched import (BW_SHIFT, LINUX_POLICIES, MAX_RT_PRIORITY, REALTIME_POLICIES,
                              SCHED_BATCH, SCHED_DEADLINE, SCHED_IDLE, SCHED_OTHER, SchedAttr)
from emu.kernel.syscalls import SyscallContext, syscall, to_int32

SCHED_RESET_ON_FORK = 0x40000000
SETPARAM_POLICY = -1                # sched_setparam: keep the policy

# struct sched_attr's sched_flags (include/uapi/linux/sched.h)
SCHED_FLAG_RESET_ON_FORK, SCHED_FLAG_RECLAIM, SCHED_FLAG_DL_OVERRUN = 0x01, 0x02, 0x04
SCHED_FLAG_KEEP_POLICY, SCHED_FLAG_KEEP_PARAMS = 0x08, 0x10
SCHED_FLAG_UTIL_CLAMP = 0x20 | 0x40
SCHED_FLAG_ALL = 0x7F
SCHED_FLAG_SUGOV = 0x10000000       # the kernel's own schedutil threads: never a user's
SCHED_DL_FLAGS = SCHED_FLAG_RECLAIM | SCHED_FLAG_DL_OVERRUN

SCHED_ATTR_SIZE_VER0 = 48           # struct sched_attr of Linux 3.14
SCHED_ATTR_SIZE = 56                # with the utilization clamps (Linux 5.3)
PAGE_SIZE = 4096

DL_SCALE = 10                       # runtimes are kept in units of 1 << DL_SCALE ns
DL_PERIOD_MIN_NS = 100 * 1000       # kernel.sched_deadline_period_min_us = 100
DL_PERIOD_MAX_NS = (1 << 22) * 1000  # kernel.sched_deadline_period_max_us = 4194304
DL_BANDWIDTH_LIMIT = (950_000 << BW_SHIFT) // 1_000_000   # sched_rt_runtime / sched_rt_period

CPUMASK_SIZE = 8                    # one unsigned long: emu has one CPU, CPU 0
MIN_NICE, MAX_NICE = -20, 19

_FAIR = frozenset({SCHED_OTHER, SCHED_BATCH})


def _pid(value: int) -> int:
    """A pid_t argument (EINVAL if negative)."""
    pid = to_int32(value)
    if pid < 0:
        raise OSError(errno.EINVAL, "negative pid")
    return pid


def _find(ctx: SyscallContext, pid: int) -> Thread:
    """Thread `pid` (0: the caller), any thread of any process, as Linux's
    find_process_by_pid finds tasks (ESRCH if there is none)."""
    if pid == 0:
        return ctx.thread
    thread = ctx.threads.find_thread(pid)
    if thread is None:
        raise OSError(errno.ESRCH, "no such thread")
    return thread


def _same_owner(ctx: SyscallContext, thread: Thread) -> bool:
    """Linux's check_same_owner: the caller's effective uid is the target's real or effective."""
    theirs = thread.process.creds
    return ctx.proc.creds.euid in (theirs.uid, theirs.euid)


def _may_nice(thread: Thread, nice: int) -> bool:
    """Linux's is_nice_reduction: RLIMIT_NICE of the target allows nice value `nice`."""
    return 20 - nice <= thread.process.res.limits[RLIMIT_NICE][0]


@dataclass(frozen=True)
class _Request:
    """What sched_setscheduler, sched_setparam and sched_setattr ask for (struct sched_attr)."""

    policy: int                     # SETPARAM_POLICY: keep the thread's
    priority: int = 0               # unsigned, as in struct sched_attr
    nice: int = 0
    flags: int = 0
    runtime: int = 0
    deadline: int = 0
    period: int = 0


def _deadline_params_valid(req: _Request) -> bool:
    """Linux's __checkparam_dl: runtime <= deadline <= period, within the period limits."""
    if req.deadline == 0 or req.runtime < 1 << DL_SCALE:
        return False
    if (req.deadline | req.period) & 1 << 63:
        return False
    period = req.period or req.deadline
    if period < req.deadline or req.deadline < req.runtime:
        return False
    return DL_PERIOD_MIN_NS <= period <= DL_PERIOD_MAX_NS


def _set_scheduler(ctx: SyscallContext, thread: Thread, req: _Request) -> int:
    """Linux's __sched_setscheduler for a user's request: 0 or -errno."""
    sched = ctx.threads.sched
    old = sched.attr(thread)
    policy = req.policy
    if policy == SETPARAM_POLICY:
        policy, reset = old.policy, old.reset_on_fork
    else:
        reset = bool(req.flags & SCHED_FLAG_RESET_ON_FORK)
        if policy not in LINUX_POLICIES:
            return -errno.EINVAL
    if req.flags & ~(SCHED_FLAG_ALL | SCHED_FLAG_SUGOV) or req.priority > MAX_RT_PRIORITY:
        return -errno.EINVAL
    if policy == SCHED_DEADLINE and not _deadline_params_valid(req):
        return -errno.EINVAL
    if (policy in REALTIME_POLICIES) != (req.priority != 0):
        return -errno.EINVAL
    if not capable(ctx.proc.creds, CAP_SYS_NICE):
        error = _unprivileged(ctx, thread, old, policy, req, reset)
        if error:
            return error
    if req.flags & SCHED_FLAG_SUGOV:
        return -errno.EINVAL
    if req.flags & SCHED_FLAG_UTIL_CLAMP:
        return -errno.EOPNOTSUPP            # a kernel without CONFIG_UCLAMP_TASK
    if thread.is_kernel_thread:
        return -errno.EPERM                 # procnto's threads run at the priorities they inherit
    new = SchedAttr(policy, req.priority, reset, normal_priority=ctx.threads.default_priority)
    if policy == SCHED_DEADLINE:
        new = replace(new, runtime=req.runtime, deadline=req.deadline,
                      period=req.period or req.deadline, dl_flags=req.flags & SCHED_DL_FLAGS)
        if new.bandwidth != old.bandwidth or old.policy != SCHED_DEADLINE:
            if sched.deadline_bandwidth(without=thread) + new.bandwidth > DL_BANDWIDTH_LIMIT:
                return -errno.EBUSY
    if policy in _FAIR:                     # SCHED_IDLE keeps its nice value, as in Linux
        thread.res.nice = req.nice
    sched.set_attr(thread, new)
    return 0


def _unprivileged(ctx: SyscallContext, thread: Thread, old: SchedAttr, policy: int,
                  req: _Request, reset: bool) -> int:
    """The rules for a caller without CAP_SYS_NICE: 0 or -EPERM."""
    if policy in _FAIR and req.nice < thread.res.nice and not _may_nice(thread, req.nice):
        return -errno.EPERM
    if policy in REALTIME_POLICIES:
        rtprio = thread.process.res.limits[RLIMIT_RTPRIO][0]
        if policy != old.policy and not rtprio:
            return -errno.EPERM
        if req.priority > old.priority and req.priority > rtprio:
            return -errno.EPERM
    if policy == SCHED_DEADLINE:
        return -errno.EPERM
    if old.policy == SCHED_IDLE and policy != SCHED_IDLE and not _may_nice(thread, thread.res.nice):
        return -errno.EPERM
    if not _same_owner(ctx, thread):
        return -errno.EPERM
    if old.reset_on_fork and not reset:
        return -errno.EPERM
    return 0


def _legacy(ctx: SyscallContext, pid: int, policy: int, param: int) -> int:
    """do_sched_setscheduler: sched_setscheduler and sched_setparam (SETPARAM_POLICY)."""
    pid = to_int32(pid)
    if not param or pid < 0:
        return -errno.EINVAL
    priority = struct.unpack("<I", ctx.mem.read(param, 4))[0]
    thread = _find(ctx, pid)
    flags = 0
    if policy != SETPARAM_POLICY and policy & SCHED_RESET_ON_FORK:
        flags, policy = SCHED_FLAG_RESET_ON_FORK, policy & ~SCHED_RESET_ON_FORK
    return _set_scheduler(ctx, thread, _Request(policy, priority, thread.res.nice, flags))


@syscall("sched_setscheduler")
def sys_sched_setscheduler(ctx: SyscallContext, pid: int, policy: int, param: int,
                           *_: int) -> int:
    """Set a thread's policy (SCHED_RESET_ON_FORK may be or-ed in) and priority."""
    policy = to_int32(policy)
    if policy < 0:
        return -errno.EINVAL
    return _legacy(ctx, pid, policy, param)


@syscall("sched_setparam")
def sys_sched_setparam(ctx: SyscallContext, pid: int, param: int, *_: int) -> int:
    """Set a thread's priority, keeping its policy."""
    return _legacy(ctx, pid, SETPARAM_POLICY, param)


@syscall("sched_getscheduler", inline=True)
def sys_sched_getscheduler(ctx: SyscallContext, pid: int, *_: int) -> int:
    """A thread's Linux policy, with SCHED_RESET_ON_FORK if set."""
    attr = ctx.threads.sched.attr(_find(ctx, _pid(pid)))
    return attr.policy | (SCHED_RESET_ON_FORK if attr.reset_on_fork else 0)


@syscall("sched_getparam", inline=True)
def sys_sched_getparam(ctx: SyscallContext, pid: int, param: int, *_: int) -> int:
    """A thread's Linux priority: 1-99 under FIFO and RR, 0 under every other policy."""
    pid = to_int32(pid)
    if not param or pid < 0:
        return -errno.EINVAL
    attr = ctx.threads.sched.attr(_find(ctx, pid))
    ctx.mem.write(param, struct.pack("<i", attr.priority))
    return 0


@syscall("sched_get_priority_max", inline=True)
def sys_sched_get_priority_max(ctx: SyscallContext, policy: int, *_: int) -> int:
    """99 for FIFO and RR; 0 for OTHER, BATCH, IDLE and DEADLINE (EINVAL for others)."""
    policy = to_int32(policy)
    if policy not in LINUX_POLICIES:
        return -errno.EINVAL
    return MAX_RT_PRIORITY if policy in REALTIME_POLICIES else 0


@syscall("sched_get_priority_min", inline=True)
def sys_sched_get_priority_min(ctx: SyscallContext, policy: int, *_: int) -> int:
    """1 for FIFO and RR; 0 for OTHER, BATCH, IDLE and DEADLINE (EINVAL for others)."""
    policy = to_int32(policy)
    if policy not in LINUX_POLICIES:
        return -errno.EINVAL
    return 1 if policy in REALTIME_POLICIES else 0


def _pack_attr(size: int, attr: SchedAttr, nice: int) -> bytes:
    """A struct sched_attr of `size` (its utilization clamps 0, as without uclamp)."""
    flags = (SCHED_FLAG_RESET_ON_FORK if attr.reset_on_fork else 0) | attr.dl_flags
    fair = attr.policy in _FAIR or attr.policy == SCHED_IDLE
    body = struct.pack("<IIQiIQQQII", size, attr.policy, flags, nice if fair else 0,
                       attr.priority, attr.runtime, attr.deadline, attr.period, 0, 0)
    return body[:size]


@syscall("sched_getattr", inline=True)
def sys_sched_getattr(ctx: SyscallContext, pid: int, attr: int, size: int, flags: int,
                      *_: int) -> int:
    """A thread's struct sched_attr: policy, flags, nice (time-sharing policies), priority
    (FIFO and RR) or runtime, deadline and period (DEADLINE)."""
    pid, size = to_int32(pid), size & 0xFFFFFFFF
    if not attr or pid < 0 or size > PAGE_SIZE or size < SCHED_ATTR_SIZE_VER0 \
            or flags & 0xFFFFFFFF:
        return -errno.EINVAL
    thread = _find(ctx, pid)
    ctx.mem.write(attr, _pack_attr(min(size, SCHED_ATTR_SIZE), ctx.threads.sched.attr(thread),
                                   thread.res.nice))
    return 0


def _read_attr(ctx: SyscallContext, addr: int) -> _Request:
    """Linux's sched_copy_attr: the caller's struct sched_attr (E2BIG, with our size stored in
    its size field, for a size out of range or non-zero bytes past the fields we know)."""
    size = struct.unpack("<I", ctx.mem.read(addr, 4))[0] or SCHED_ATTR_SIZE_VER0
    data = ctx.mem.read(addr, size) if SCHED_ATTR_SIZE_VER0 <= size <= PAGE_SIZE else b""
    if not data or any(data[SCHED_ATTR_SIZE:]):
        ctx.mem.write(addr, struct.pack("<I", SCHED_ATTR_SIZE))
        raise OSError(errno.E2BIG, "struct sched_attr of a size we do not know")
    fields = struct.unpack("<IIQiIQQQII", data[:SCHED_ATTR_SIZE].ljust(SCHED_ATTR_SIZE, b"\0"))
    _, policy, flags, nice, priority, runtime, deadline, period, _min, _max = fields
    if flags & SCHED_FLAG_UTIL_CLAMP and size < SCHED_ATTR_SIZE:
        raise OSError(errno.EINVAL, "utilization clamps need the 56-byte struct")
    return _Request(to_int32(policy), priority, min(max(nice, MIN_NICE), MAX_NICE), flags,
                    runtime, deadline, period)


@syscall("sched_setattr")
def sys_sched_setattr(ctx: SyscallContext, pid: int, attr: int, flags: int, *_: int) -> int:
    """Set a thread's policy and its parameters from a struct sched_attr (SCHED_DEADLINE
    included; SCHED_FLAG_KEEP_POLICY and SCHED_FLAG_KEEP_PARAMS keep what they name)."""
    pid = to_int32(pid)
    if not attr or pid < 0 or flags & 0xFFFFFFFF:
        return -errno.EINVAL
    req = _read_attr(ctx, attr)
    if req.policy < 0:
        return -errno.EINVAL
    if req.flags & SCHED_FLAG_KEEP_POLICY:
        req = replace(req, policy=SETPARAM_POLICY)
    thread = _find(ctx, pid)
    if req.flags & SCHED_FLAG_KEEP_PARAMS:
        old = ctx.threads.sched.attr(thread)
        req = replace(req, priority=old.priority, nice=thread.res.nice, runtime=old.runtime,
                      deadline=old.deadline, period=old.period,
                      flags=req.flags | old.dl_flags)
    return _set_scheduler(ctx, thread, req)


@syscall("sched_yield")
def sys_sched_yield(ctx: SyscallContext, *_: int) -> int:
    """Go to the end of the ready queue of one's priority."""
    ctx.threads.sched.yield_cpu(ctx.thread)
    return 0


# ---- CPU affinity: one CPU ----

@syscall("sched_setaffinity", inline=True)
def sys_sched_setaffinity(ctx: SyscallContext, pid: int, size: int, mask: int, *_: int) -> int:
    """Bind a thread to CPUs: any mask that includes CPU 0, the only one (EINVAL otherwise)."""
    size = min(size & 0xFFFFFFFF, CPUMASK_SIZE)
    cpus = int.from_bytes(ctx.mem.read(mask, size), "little") if size else 0
    thread = _find(ctx, to_int32(pid)) if to_int32(pid) >= 0 else None
    if thread is None:
        return -errno.ESRCH
    if not _same_owner(ctx, thread) and not capable(ctx.proc.creds, CAP_SYS_NICE):
        return -errno.EPERM
    return 0 if cpus & 1 else -errno.EINVAL
