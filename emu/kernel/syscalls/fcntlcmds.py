"""fcntl: descriptor and status flags, F_DUPFD, record and OFD locks (emu/kernel/locks.py),
I/O owners and signals, leases, and pipe sizes."""
from __future__ import annotations

import errno
import fcntl
import os
import stat as stat_mod
import struct

from emu.kernel.files import O_CLOEXEC, OpenFile
from emu.kernel.locks import F_RDLCK, F_UNLCK, F_WRLCK, OFFSET_MAX, LockOwner, LockTable
from emu.kernel.pipes import MAX_PIPE_SIZE, PipeEnd, pipe_size_for
from emu.kernel.process import ThreadState
from emu.kernel.resources import CAP_SYS_RESOURCE, capable
from emu.kernel.signals import Restart
from emu.kernel.syscalls import SyscallContext, syscall, to_int32

F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC = 0, 1, 2, 3, 4, 1030
F_SETPIPE_SZ, F_GETPIPE_SZ = 1031, 1032
F_GETLK, F_SETLK, F_SETLKW, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW = 5, 6, 7, 36, 37, 38
_LOCK_COMMANDS = (F_GETLK, F_SETLK, F_SETLKW, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW)
F_SETOWN, F_GETOWN, F_SETSIG, F_GETSIG, F_SETOWN_EX, F_GETOWN_EX = 8, 9, 10, 11, 15, 16
_OWNER_COMMANDS = (F_SETOWN, F_GETOWN, F_SETSIG, F_GETSIG, F_SETOWN_EX, F_GETOWN_EX)
F_SETLEASE, F_GETLEASE = 1024, 1025
F_OWNER_TID, F_OWNER_PID, F_OWNER_PGRP = 0, 1, 2
FD_CLOEXEC = 1


@syscall("fcntl")
def sys_fcntl(ctx: SyscallContext, fd: int, cmd: int, arg: int, *_: int) -> int:
    """Descriptor flags, status flags and F_DUPFD."""
    fd = to_int32(fd)
    fds = ctx.proc.fds
    if cmd in (F_DUPFD, F_DUPFD_CLOEXEC):
        if not 0 <= to_int32(arg) < fds.limit:
            fds.get(fd)                         # EBADF first
            return -errno.EINVAL
        return fds.dup(fd, lowest=to_int32(arg), cloexec=cmd == F_DUPFD_CLOEXEC)
    if cmd == F_GETFD:
        return FD_CLOEXEC if fds.slot(fd).cloexec else 0
    if cmd == F_SETFD:
        fds.slot(fd).cloexec = bool(arg & FD_CLOEXEC)
        return 0
    if cmd in _LOCK_COMMANDS:
        return _record_lock(ctx, fds.get(fd), cmd, arg)
    if cmd in _OWNER_COMMANDS:
        return _owner(ctx, fds.get(fd), cmd, arg)
    if cmd in (F_SETLEASE, F_GETLEASE):
        return _lease(ctx, fds.get(fd), cmd, to_int32(arg))
    if cmd in (F_GETPIPE_SZ, F_SETPIPE_SZ):
        return _pipe_size(ctx, fds.get(fd), cmd, arg)
    if cmd == F_GETFL:
        return fds.get(fd).guest_flags & ~O_CLOEXEC
    if cmd == F_SETFL:
        file = fds.get(fd)
        changeable = os.O_APPEND | os.O_NONBLOCK
        host = fcntl.fcntl(file.host_fd, fcntl.F_GETFL)
        fcntl.fcntl(file.host_fd, fcntl.F_SETFL, (host & ~changeable) | (arg & changeable))
        file.guest_flags = (file.guest_flags & ~changeable) | (arg & changeable)
        return 0
    return -errno.EINVAL


def _lock_range(ctx: SyscallContext, file: OpenFile, whence: int, start: int,
                length: int) -> tuple[int, int]:
    """struct flock's range as [first, last] bytes (EINVAL if it starts before 0)."""
    if whence == 1:
        start += os.lseek(file.host_fd, 0, os.SEEK_CUR)
    elif whence == 2:
        start += os.fstat(file.host_fd).st_size
    elif whence != 0:
        raise OSError(errno.EINVAL, "whence")
    if length < 0:
        start, length = start + length, -length
    if start < 0:
        raise OSError(errno.EINVAL, "negative start")
    return start, (OFFSET_MAX if length == 0 else min(OFFSET_MAX, start + length - 1))


def _record_lock(ctx: SyscallContext, file: OpenFile, cmd: int, arg: int) -> int | None:
    """F_GETLK/F_SETLK/F_SETLKW and their OFD forms (emu/kernel/locks.py)."""
    kind, whence, start, length, pid = struct.unpack("<hh4xqqi4x", ctx.mem.read(arg, 32))
    ofd = cmd in (F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW)
    if ofd and pid != 0:
        return -errno.EINVAL
    if kind not in (F_RDLCK, F_WRLCK, F_UNLCK) or file.kernel_object is not None:
        return -errno.EINVAL
    mode = file.guest_flags & 0o3
    if (kind == F_RDLCK and mode == 1) or (kind == F_WRLCK and mode == 0):
        return -errno.EBADF
    first, last = _lock_range(ctx, file, whence, start, length)
    owner = LockOwner(0, file) if ofd else LockOwner(ctx.proc.pid)
    table, key = ctx.locks, LockTable.key(file)
    if cmd in (F_GETLK, F_OFD_GETLK):
        if kind == F_UNLCK:
            return -errno.EINVAL
        held = table.conflict(key, owner, kind, first, last)
        out = (struct.pack("<hh4xqqi4x", F_UNLCK, whence, start, length, pid) if held is None
               else struct.pack("<hh4xqqi4x", held.kind, 0, held.start,
                                0 if held.end == OFFSET_MAX else held.end - held.start + 1,
                                held.owner.report_pid))
        ctx.mem.write(arg, out)
        return 0
    if kind != F_UNLCK and table.conflict(key, owner, kind, first, last) is not None:
        if cmd in (F_SETLK, F_OFD_SETLK):
            return -errno.EAGAIN
        if table.would_deadlock(key, owner, kind, first, last):
            table.done_waiting(owner)
            return -errno.EDEADLK
        table.note_waiting(key, owner, kind, first, last)

        def interrupted() -> tuple[int, Restart | None]:
            table.done_waiting(owner)
            return -errno.EINTR, Restart.RESTARTSYS
        ctx.blocking.wait(ctx.thread, [table.queue(key)], ThreadState.REPLY,
                          interrupted=interrupted)
        return None
    table.done_waiting(owner)
    woken = table.set(key, owner, kind, first, last)
    if woken is not None:
        ctx.blocking.wake(woken)
    return 0


def _owner(ctx: SyscallContext, file: OpenFile, cmd: int, arg: int) -> int:
    """F_SETOWN/F_GETOWN(_EX) and F_SETSIG/F_GETSIG: who is told of I/O and leases, by which
    signal (kept per open file; emu raises no SIGIO for I/O readiness)."""
    if cmd == F_GETOWN:
        kind, ident = file.owner
        return -ident if kind == F_OWNER_PGRP else ident
    if cmd == F_SETOWN:
        value = to_int32(arg)
        file.owner = (F_OWNER_PGRP, -value) if value < 0 else (F_OWNER_PID, value)
        return 0
    if cmd == F_GETSIG:
        return file.signal
    if cmd == F_SETSIG:
        if not 0 <= to_int32(arg) <= 64:
            return -errno.EINVAL
        file.signal = to_int32(arg)
        return 0
    if cmd == F_GETOWN_EX:
        ctx.mem.write(arg, struct.pack("<ii", *file.owner))
        return 0
    kind, ident = struct.unpack("<ii", ctx.mem.read(arg, 8))
    if kind not in (F_OWNER_TID, F_OWNER_PID, F_OWNER_PGRP):
        return -errno.EINVAL
    file.owner = (kind, ident)
    return 0


def _open_descriptions(ctx: SyscallContext, key: tuple[int, int]) -> list[OpenFile]:
    """Every open file description of the host file `key`, in every guest process."""
    seen: dict[int, OpenFile] = {}
    for proc in ctx.signals.processes:
        if not proc.alive:
            continue
        for number in proc.fds.numbers():
            other = proc.fds.get(number)
            if other.kernel_object is None and not other.is_std and id(other) not in seen:
                st = os.fstat(other.host_fd)
                if (st.st_dev, st.st_ino) == key:
                    seen[id(other)] = other
    return list(seen.values())


def _lease(ctx: SyscallContext, file: OpenFile, cmd: int, kind: int) -> int:
    """F_GETLEASE / F_SETLEASE on a regular file the caller owns (or with CAP_LEASE): a read
    lease needs the file open for writing nowhere, a write lease no other open at all
    (EAGAIN). Leases are kept, and reported, but not broken: emu has no lease-break wait."""
    if cmd == F_GETLEASE:
        return file.lease
    st = os.fstat(file.host_fd)
    if not stat_mod.S_ISREG(st.st_mode) or file.kernel_object is not None:
        return -errno.EINVAL
    if kind not in (F_RDLCK, F_WRLCK, F_UNLCK):
        return -errno.EINVAL
    creds = ctx.proc.creds
    if creds.fsuid != ctx.proc.root.owner_of(st)[0] and \
            not getattr(creds, "cap_effective", 0) >> 28 & 1:        # CAP_LEASE
        return -errno.EACCES
    if kind != F_UNLCK:
        others = [f for f in _open_descriptions(ctx, (st.st_dev, st.st_ino)) if f is not file]
        writing = [f for f in [file, *others] if f.guest_flags & 0o3]
        if (kind == F_RDLCK and writing) or (kind == F_WRLCK and others):
            return -errno.EAGAIN
    file.lease = kind
    return 0


def _pipe_size(ctx: SyscallContext, file: OpenFile, cmd: int, arg: int) -> int:
    """F_GETPIPE_SZ / F_SETPIPE_SZ: the capacity (a power of two pages up to pipe-max-size;
    more needs root; EBUSY if the data would not fit)."""
    end = file.kernel_object
    if not isinstance(end, PipeEnd):
        if end is None and stat_mod.S_ISFIFO(os.fstat(file.host_fd).st_mode):
            return fcntl.fcntl(file.host_fd, cmd, arg)     # a host pipe (emu's stdio)
        return -errno.EBADF
    if cmd == F_GETPIPE_SZ:
        return end.pipe.capacity
    request = arg & 0xFFFFFFFF
    if request > 1 << 31:
        return -errno.EINVAL
    size = pipe_size_for(request)
    if size > MAX_PIPE_SIZE and not capable(ctx.proc.creds, CAP_SYS_RESOURCE):
        return -errno.EPERM
    if not end.pipe.resize(size):
        return -errno.EBUSY
    return size



def release_locks(ctx: SyscallContext, file: OpenFile) -> None:
    """`file` is about to lose a descriptor: release the record locks that go with it."""
    if not ctx.locks or file.kernel_object is not None or file.is_std:
        return
    key = LockTable.key(file)
    for owner in (LockOwner(ctx.proc.pid), *((LockOwner(0, file),) if file.refs == 1 else ())):
        woken = ctx.locks.drop(key, owner)
        if woken is not None:
            ctx.blocking.wake(woken)


