"""Process-family system calls: fork, vfork, clone of a process, execve, wait4, waitid."""
from __future__ import annotations

import errno
import struct

from emu.kernel.family import P_ALL, P_PID, WEXITED, WNOHANG
from emu.kernel.syscalls import SyscallContext, syscall, to_int32

CLONE_VM, CLONE_VFORK = 0x100, 0x4000
CLONE_PARENT_SETTID, CLONE_CHILD_CLEARTID, CLONE_CHILD_SETTID = 0x100000, 0x200000, 0x01000000
_MAX_ARGS = 4096


def clone_process(ctx: SyscallContext, flags: int, ptid: int, ctid: int) -> int:
    """clone without CLONE_THREAD: a new process (fork), or vfork with CLONE_VFORK."""
    child = ctx.family.fork(ctx.thread, vfork=bool(flags & CLONE_VFORK))
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
    """vfork(2) (x86-64 only): fork, the parent waiting until the child execs or exits."""
    ctx.family.fork(ctx.thread, vfork=True)
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
    """Replace the process image with a static ELF from the guest root."""
    path = ctx.mem.read_cstring(path_ptr).decode("utf-8", "surrogateescape")
    argv, envp = _string_array(ctx, argv_ptr), _string_array(ctx, envp_ptr)
    root = ctx.proc.root
    canon = root.canonical(path, ctx.proc.cwd, exe=ctx.proc.exe_path)
    return ctx.family.exec(ctx.thread, canon, root.host_path(canon), argv, envp)


@syscall("wait4")
def sys_wait4(ctx: SyscallContext, pid: int, status: int, options: int, rusage: int,
              *_: int) -> int | None:
    """Wait for a child (pid -1: any) to exit; its status word goes to `status`."""
    pid = to_int32(pid)
    if pid < -1 or pid == 0:
        return -errno.EINVAL             # process groups are not modelled
    if rusage:
        ctx.mem.write(rusage, bytes(144))
    return ctx.family.wait(ctx.thread, pid, status, options, siginfo=False)


@syscall("waitid")
def sys_waitid(ctx: SyscallContext, idtype: int, ident: int, infop: int, options: int,
               *_: int) -> int | None:
    """Wait for a child to exit (P_ALL or P_PID, WEXITED); its siginfo goes to `infop`."""
    idtype = to_int32(idtype)
    if idtype not in (P_ALL, P_PID) or not options & WEXITED or options & ~(WEXITED | WNOHANG):
        return -errno.EINVAL
    pid = -1 if idtype == P_ALL else to_int32(ident)
    return ctx.family.wait(ctx.thread, pid, infop, options, siginfo=True)
