"""Process-family system calls: fork, vfork, clone of a process, execve, wait4, waitid,
process groups and sessions."""
from __future__ import annotations

import errno
import os
import stat as stat_mod
import struct

from emu.kernel.family import (P_ALL, P_PGID, P_PID, WCONTINUED, WEXITED, WNOHANG, WNOWAIT,
                               WUNTRACED, ChildFilter)
from emu.kernel.perms import X_OK, may
from emu.kernel.process import Process
from emu.kernel.syscalls import SyscallContext, syscall, to_int32
from emu.kernel.syscalls.fs import AT_FDCWD, resolve_arg

CLONE_VM, CLONE_VFORK = 0x100, 0x4000
CLONE_PARENT_SETTID, CLONE_CHILD_CLEARTID, CLONE_CHILD_SETTID = 0x100000, 0x200000, 0x01000000
_MAX_ARGS = 4096
_WALL_FLAGS = 0x40000000 | 0x80000000 | 0x20000000   # __WALL, __WCLONE, __WNOTHREAD


def clone_process(ctx: SyscallContext, flags: int, stack: int, ptid: int, ctid: int) -> int:
    """clone without CLONE_THREAD: a new process (fork); with CLONE_VM it runs in this
    process's memory on `stack` until it execs or exits, and with CLONE_VFORK this thread
    waits until then (posix_spawn, system, popen)."""
    child = ctx.family.fork(ctx.thread, vfork=bool(flags & CLONE_VFORK),
                            share_memory=bool(flags & CLONE_VM), stack=stack)
    if flags & CLONE_PARENT_SETTID:
        ctx.mem.write(ptid, struct.pack("<i", child.tid))
    if flags & CLONE_CHILD_SETTID:
        child.process.mem.write(ctid, struct.pack("<i", child.tid))
    if flags & CLONE_CHILD_CLEARTID:
        child.clear_child_tid = ctid
    return child.tid


@syscall("fork")
def sys_fork(ctx: SyscallContext, *_: int) -> int:
    """fork(2) (x86-64 only): a copy-on-write copy of this process."""
    return ctx.family.fork(ctx.thread).tid


@syscall("vfork")
def sys_vfork(ctx: SyscallContext, *_: int) -> int | None:
    """vfork(2) (x86-64 only): a child in this process's memory, the parent waiting until
    it execs or exits."""
    ctx.family.fork(ctx.thread, vfork=True, share_memory=True)
    return None


def _string_array(ctx: SyscallContext, addr: int) -> list[str]:
    out: list[str] = []
    while addr:
        ptr = ctx.mem.read_u64(addr + 8 * len(out))
        if ptr == 0:
            return out
        if len(out) >= _MAX_ARGS:
            raise OSError(errno.E2BIG, "argument list too long")
        out.append(ctx.mem.read_cstring(ptr, limit=1 << 17).decode("utf-8", "surrogateescape"))
    return out


@syscall("execve")
def sys_execve(ctx: SyscallContext, path_ptr: int, argv_ptr: int, envp_ptr: int,
               *_: int) -> int | None:
    """Replace the process image with a static ELF from the guest root (EACCES without
    execute permission, ETXTBSY while someone has the file open for writing)."""
    canon, host = resolve_arg(ctx, AT_FDCWD & 0xFFFFFFFF, path_ptr)
    argv, envp = _string_array(ctx, argv_ptr), _string_array(ctx, envp_ptr)
    try:
        st = os.stat(host)
    except OSError as e:
        return -(e.errno or errno.ENOENT)
    creds = ctx.proc.creds
    if not stat_mod.S_ISREG(st.st_mode) or \
            not may(creds, st, ctx.proc.root.owner_of(st), X_OK):
        return -errno.EACCES
    if ctx.family.open_for_writing(st):
        return -errno.ETXTBSY
    return ctx.family.exec(ctx.thread, canon, host, argv, envp)


def _filter(ctx: SyscallContext, pid: int) -> ChildFilter:
    """wait4's pid argument: -1 any child, > 0 that child, 0 the caller's group, < -1 a group."""
    if pid == -1 or pid > 0:
        return ChildFilter(pid=pid)
    return ChildFilter(pgid=ctx.proc.pgid if pid == 0 else -pid)


@syscall("wait4")
def sys_wait4(ctx: SyscallContext, pid: int, status: int, options: int, rusage: int,
              *_: int) -> int | None:
    """Wait for a child to exit; its status word goes to `status`."""
    pid, options = to_int32(pid), options & 0xFFFFFFFF
    if options & ~(WNOHANG | WUNTRACED | WCONTINUED | _WALL_FLAGS):
        return -errno.EINVAL
    if pid == -(1 << 31):                   # -INT_MIN is no process group (Linux 4.10 on)
        return -errno.ESRCH
    result = ctx.family.wait(ctx.thread, _filter(ctx, pid), status, options, siginfo=False)
    if rusage and result is not None and result > 0:
        ctx.mem.write(rusage, bytes(144))
    return result


@syscall("waitid")
def sys_waitid(ctx: SyscallContext, idtype: int, ident: int, infop: int, options: int,
               *_: int) -> int | None:
    """Wait for a child to exit (P_ALL, P_PID or P_PGID; WEXITED needed); its siginfo goes to
    `infop`."""
    idtype, options = to_int32(idtype), options & 0xFFFFFFFF
    allowed = WEXITED | WNOHANG | WNOWAIT | WUNTRACED | WCONTINUED | _WALL_FLAGS
    if idtype not in (P_ALL, P_PID, P_PGID) or options & ~allowed \
            or not options & (WEXITED | WUNTRACED | WCONTINUED):
        return -errno.EINVAL
    ident = to_int32(ident)
    if idtype == P_ALL:
        which = ChildFilter()
    elif idtype == P_PID:
        if ident <= 0:
            return -errno.EINVAL
        which = ChildFilter(pid=ident)
    else:
        if ident < 0:
            return -errno.EINVAL
        which = ChildFilter(pgid=ident or ctx.proc.pgid)
    if not options & WEXITED:                   # only stops and continues: never modelled
        options |= WNOHANG
    return ctx.family.wait(ctx.thread, which, infop, options, siginfo=True)


# ---- process groups and sessions ----

@syscall("setpgid")
def sys_setpgid(ctx: SyscallContext, pid: int, pgid: int, *_: int) -> int:
    """Move a process (0: the caller) into a process group (0: its own)."""
    return ctx.family.set_pgid(ctx.proc, to_int32(pid), to_int32(pgid))


def _target(ctx: SyscallContext, pid: int) -> Process | None:
    pid = to_int32(pid)
    if pid < 0:
        return None
    if pid == 0:
        return ctx.proc
    procnto = ctx.signals.procnto           # pid 1: a process like any other to these calls
    if procnto is not None and pid == procnto.pid:
        return procnto
    return ctx.signals.find_process(pid)


@syscall("getpgid")
def sys_getpgid(ctx: SyscallContext, pid: int, *_: int) -> int:
    """The process group of a process (0: the caller)."""
    target = _target(ctx, pid)
    return -errno.ESRCH if target is None else target.pgid


@syscall("getpgrp")
def sys_getpgrp(ctx: SyscallContext, *_: int) -> int:
    """The caller's process group (x86-64 only)."""
    return ctx.proc.pgid


@syscall("getsid")
def sys_getsid(ctx: SyscallContext, pid: int, *_: int) -> int:
    """The session of a process (0: the caller)."""
    target = _target(ctx, pid)
    return -errno.ESRCH if target is None else target.sid


@syscall("setsid")
def sys_setsid(ctx: SyscallContext, *_: int) -> int:
    """Start a new session and process group led by the caller."""
    return ctx.family.set_sid(ctx.proc)
