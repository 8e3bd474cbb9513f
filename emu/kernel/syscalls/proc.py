"""Process, identity, time and start-up system calls."""
from __future__ import annotations

import errno
import struct

from emu.kernel.syscalls import SyscallContext, syscall, to_int32

ARCH_SET_GS, ARCH_SET_FS, ARCH_GET_FS, ARCH_GET_GS = 0x1001, 0x1002, 0x1003, 0x1004
CLOCK_REALTIME_EPOCH_NS = 1_767_225_600 * 10**9     # simulated boot: 2026-01-01T00:00:00Z
CLOCK_REALTIME, CLOCK_REALTIME_COARSE, CLOCK_REALTIME_ALARM, CLOCK_TAI = 0, 5, 8, 11
CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID = 2, 3
_MAX_CLOCK_ID = 11


@syscall("exit")
def sys_exit(ctx: SyscallContext, code: int, *_: int) -> None:
    """End the calling thread."""
    ctx.threads.exit_thread(ctx.thread, code & 0xFF)


@syscall("exit_group")
def sys_exit_group(ctx: SyscallContext, code: int, *_: int) -> None:
    """End the whole process."""
    ctx.threads.exit_group(ctx.proc, code & 0xFF)


@syscall("getpid", inline=True)
def sys_getpid(ctx: SyscallContext, *_: int) -> int:
    """The process id."""
    return ctx.proc.pid


@syscall("gettid", inline=True)
def sys_gettid(ctx: SyscallContext, *_: int) -> int:
    """The thread id."""
    return ctx.thread.tid


@syscall("getppid", inline=True)
def sys_getppid(ctx: SyscallContext, *_: int) -> int:
    """The parent's process id (0 for the first process, or once orphaned)."""
    return ctx.proc.parent.pid if ctx.proc.parent is not None else 0


@syscall("getuid", inline=True)
def sys_getuid(ctx: SyscallContext, *_: int) -> int:
    """The real user id (`--uid` at start)."""
    return ctx.proc.creds.uid


@syscall("geteuid", inline=True)
def sys_geteuid(ctx: SyscallContext, *_: int) -> int:
    """The effective user id."""
    return ctx.proc.creds.euid


@syscall("getgid", inline=True)
def sys_getgid(ctx: SyscallContext, *_: int) -> int:
    """The real group id."""
    return ctx.proc.creds.gid


@syscall("getegid", inline=True)
def sys_getegid(ctx: SyscallContext, *_: int) -> int:
    """The effective group id."""
    return ctx.proc.creds.egid


@syscall("set_tid_address")
def sys_set_tid_address(ctx: SyscallContext, addr: int, *_: int) -> int:
    """Remember where to clear the tid at thread exit; returns the tid."""
    ctx.thread.clear_child_tid = addr
    return ctx.thread.tid


@syscall("set_robust_list", inline=True)
def sys_set_robust_list(ctx: SyscallContext, head: int, length: int, *_: int) -> int:
    """Record the thread's robust futex list head."""
    if length != 24:
        return -errno.EINVAL
    ctx.thread.robust_list = head
    return 0


@syscall("rseq", inline=True)
def sys_rseq(ctx: SyscallContext, *_: int) -> int:
    """Restartable sequences are not offered (glibc carries on without them)."""
    return -errno.ENOSYS


@syscall("arch_prctl")
def sys_arch_prctl(ctx: SyscallContext, code: int, addr: int, *_: int) -> int:
    """Set or get the FS base (x86-64 TLS)."""
    if code == ARCH_SET_FS:
        ctx.threads.set_tls(addr)
        return 0
    if code == ARCH_GET_FS:
        ctx.mem.write_u64(addr, ctx.threads.get_tls())
        return 0
    return -errno.EINVAL


@syscall("uname", inline=True)
def sys_uname(ctx: SyscallContext, buf: int, *_: int) -> int:
    """Describe the (emulated) system."""
    fields = (b"Linux", b"emu", b"6.1.0-emu", b"#1 SMP PREEMPT emu", ctx.arch.encode(), b"(none)")
    ctx.mem.write(buf, b"".join(f.ljust(65, b"\0") for f in fields))
    return 0


@syscall("getrandom", inline=True)
def sys_getrandom(ctx: SyscallContext, buf: int, length: int, flags: int, *_: int) -> int:
    """Reproducible pseudo-random bytes (the same every run)."""
    length = min(length, 1 << 20)
    ctx.mem.write(buf, ctx.threads.random_bytes(length))
    return length


def _clock_ns(ctx: SyscallContext, clock_id: int) -> int:
    if not 0 <= clock_id <= _MAX_CLOCK_ID:
        raise OSError(errno.EINVAL, "bad clock")
    sched, clock = ctx.threads.sched, ctx.clock
    if clock_id == CLOCK_PROCESS_CPUTIME_ID:
        return clock.nanoseconds(sum(sched.cpu_time(t) for t in ctx.proc.threads))
    if clock_id == CLOCK_THREAD_CPUTIME_ID:
        return clock.nanoseconds(sched.cpu_time(ctx.thread))
    now = clock.now_ns()
    if clock_id in (CLOCK_REALTIME, CLOCK_REALTIME_COARSE, CLOCK_REALTIME_ALARM, CLOCK_TAI):
        return CLOCK_REALTIME_EPOCH_NS + now
    return now


@syscall("clock_gettime", inline=True)
def sys_clock_gettime(ctx: SyscallContext, clock_id: int, tp: int, *_: int) -> int:
    """Read a clock of the simulated machine."""
    ns = _clock_ns(ctx, to_int32(clock_id))
    ctx.mem.write(tp, struct.pack("<qq", ns // 10**9, ns % 10**9))
    return 0


@syscall("clock_getres", inline=True)
def sys_clock_getres(ctx: SyscallContext, clock_id: int, tp: int, *_: int) -> int:
    """Clock resolution: one nanosecond."""
    _clock_ns(ctx, to_int32(clock_id))
    if tp:
        ctx.mem.write(tp, struct.pack("<qq", 0, 1))
    return 0


@syscall("gettimeofday", inline=True)
def sys_gettimeofday(ctx: SyscallContext, tv: int, tz: int, *_: int) -> int:
    """Wall-clock time of the simulated machine."""
    ns = CLOCK_REALTIME_EPOCH_NS + ctx.clock.now_ns()
    if tv:
        ctx.mem.write(tv, struct.pack("<qq", ns // 10**9, (ns % 10**9) // 1000))
    if tz:
        ctx.mem.write(tz, bytes(8))
    return 0


@syscall("time", inline=True)
def sys_time(ctx: SyscallContext, tloc: int, *_: int) -> int:
    """Seconds since the epoch, simulated."""
    secs = (CLOCK_REALTIME_EPOCH_NS + ctx.clock.now_ns()) // 10**9
    if tloc:
        ctx.mem.write_u64(tloc, secs)
    return secs


@syscall("sched_getaffinity", inline=True)
def sys_sched_getaffinity(ctx: SyscallContext, pid: int, size: int, mask: int, *_: int) -> int:
    """One CPU (EINVAL for a size not a multiple of 8; ESRCH for no such thread)."""
    size = size & 0xFFFFFFFF
    if size < 8 or size % 8:
        return -errno.EINVAL
    pid = to_int32(pid)
    if pid < 0 or (pid and ctx.threads.find_thread(pid) is None):
        return -errno.ESRCH
    ctx.mem.write(mask, struct.pack("<Q", 1))
    return 8


@syscall("getcpu", inline=True)
def sys_getcpu(ctx: SyscallContext, cpu: int, node: int, *_: int) -> int:
    """Always CPU 0, node 0."""
    for addr in (cpu, node):
        if addr:
            ctx.mem.write(addr, struct.pack("<I", 0))
    return 0


_NTO_TCTL_IO = 1


@syscall("ThreadCtl")
def sys_threadctl(ctx: SyscallContext, cmd: int, data: int, *_: int) -> int:
    """QNX ThreadCtl(): _NTO_TCTL_IO (I/O privity, root only) superlocks the process."""
    if to_int32(cmd) != _NTO_TCTL_IO:
        return -errno.EINVAL
    if ctx.proc.creds.euid != 0:
        return -errno.EPERM
    return 0 if ctx.memory.residency.superlock(ctx.proc) else -errno.EAGAIN
