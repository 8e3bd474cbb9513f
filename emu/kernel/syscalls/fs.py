"""File system calls: descriptors and data (open, read, write, dup, pipes...) over the guest root."""
from __future__ import annotations

import errno
import fcntl
import os
import struct
import termios

from emu.kernel.files import O_CLOEXEC, OpenFile, host_open_flags
from emu.kernel.syscalls import SyscallContext, syscall, to_int32, to_signed

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW, AT_REMOVEDIR, AT_EMPTY_PATH = 0x100, 0x200, 0x1000
F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC = 0, 1, 2, 3, 4, 1030
FD_CLOEXEC = 1
TCGETS, TIOCGWINSZ = 0x5401, 0x5413
SEEK_END = 2
_IO_CHUNK = 1 << 20         # largest single host read/write per call (partial I/O is allowed)


# ---- paths ----

def _base_dir(ctx: SyscallContext, dirfd: int) -> str:
    dirfd = to_int32(dirfd)
    if dirfd == AT_FDCWD:
        return ctx.proc.cwd
    return ctx.proc.fds.get(dirfd).guest_path


def path_arg(ctx: SyscallContext, path_ptr: int) -> str:
    return ctx.mem.read_cstring(path_ptr).decode("utf-8", "surrogateescape")


def resolve_arg(ctx: SyscallContext, dirfd: int, path_ptr: int, follow: bool = True) -> tuple[str, str]:
    """(guest canonical path, host path) of a path argument relative to `dirfd`."""
    path = path_arg(ctx, path_ptr)
    root = ctx.proc.root
    canon = root.canonical(path, _base_dir(ctx, dirfd), follow, exe=ctx.proc.exe_path)
    return canon, root.host_path(canon)


# ---- open / close / dup ----

@syscall("openat")
def sys_openat(ctx: SyscallContext, dirfd: int, path_ptr: int, flags: int, mode: int, *_: int) -> int:
    """Open a file under the guest root."""
    host_flags, _dir, nofollow = host_open_flags(ctx.arch, flags)
    canon, host = resolve_arg(ctx, dirfd, path_ptr, follow=not nofollow)
    fd = os.open(host, host_flags | os.O_CLOEXEC, mode & 0o7777 & ~ctx.proc.umask)
    return ctx.proc.fds.install(OpenFile(fd, canon, flags), cloexec=bool(flags & O_CLOEXEC))


@syscall("open")
def sys_open(ctx: SyscallContext, path_ptr: int, flags: int, mode: int, *_: int) -> int:
    """open(2) (x86-64 only): openat relative to the cwd."""
    return sys_openat(ctx, AT_FDCWD & 0xFFFFFFFF, path_ptr, flags, mode)


@syscall("close")
def sys_close(ctx: SyscallContext, fd: int, *_: int) -> int:
    """Close a descriptor."""
    ctx.proc.fds.close(to_int32(fd))
    return 0


@syscall("dup")
def sys_dup(ctx: SyscallContext, fd: int, *_: int) -> int:
    """Duplicate a descriptor onto the lowest free one."""
    return ctx.proc.fds.dup(to_int32(fd))


@syscall("dup2")
def sys_dup2(ctx: SyscallContext, old: int, new: int, *_: int) -> int:
    """Duplicate onto a chosen descriptor."""
    old, new = to_int32(old), to_int32(new)
    if old == new:
        ctx.proc.fds.get(old)
        return new
    return ctx.proc.fds.dup_to(old, new)


@syscall("dup3")
def sys_dup3(ctx: SyscallContext, old: int, new: int, flags: int, *_: int) -> int:
    """dup2 with O_CLOEXEC; old == new is EINVAL."""
    old, new = to_int32(old), to_int32(new)
    if old == new or flags & ~O_CLOEXEC:
        return -errno.EINVAL
    return ctx.proc.fds.dup_to(old, new, cloexec=bool(flags & O_CLOEXEC))


@syscall("fcntl")
def sys_fcntl(ctx: SyscallContext, fd: int, cmd: int, arg: int, *_: int) -> int:
    """Descriptor flags, status flags and F_DUPFD."""
    fd = to_int32(fd)
    fds = ctx.proc.fds
    if cmd in (F_DUPFD, F_DUPFD_CLOEXEC):
        return fds.dup(fd, lowest=to_int32(arg), cloexec=cmd == F_DUPFD_CLOEXEC)
    if cmd == F_GETFD:
        return FD_CLOEXEC if fds.slot(fd).cloexec else 0
    if cmd == F_SETFD:
        fds.slot(fd).cloexec = bool(arg & FD_CLOEXEC)
        return 0
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


@syscall("pipe2")
def sys_pipe2(ctx: SyscallContext, fds_ptr: int, flags: int, *_: int) -> int:
    """A host pipe as two guest descriptors."""
    r, w = os.pipe2(os.O_CLOEXEC | (os.O_NONBLOCK if flags & os.O_NONBLOCK else 0))
    cloexec = bool(flags & O_CLOEXEC)
    rfd = ctx.proc.fds.install(OpenFile(r, "pipe:[r]", 0), cloexec=cloexec)
    wfd = ctx.proc.fds.install(OpenFile(w, "pipe:[w]", 1), cloexec=cloexec)
    ctx.mem.write(fds_ptr, struct.pack("<ii", rfd, wfd))
    return 0


@syscall("pipe")
def sys_pipe(ctx: SyscallContext, fds_ptr: int, *_: int) -> int:
    """pipe(2) (x86-64 only)."""
    return sys_pipe2(ctx, fds_ptr, 0)


# ---- data ----

@syscall("read")
def sys_read(ctx: SyscallContext, fd: int, buf: int, count: int, *_: int) -> int:
    """Read from a descriptor into guest memory."""
    data = ctx.memory.page_cache.read(ctx.proc.fds.get(to_int32(fd)).host_fd,
                                      min(count, _IO_CHUNK), None)
    ctx.mem.write(buf, data)
    return len(data)


@syscall("write")
def sys_write(ctx: SyscallContext, fd: int, buf: int, count: int, *_: int) -> int:
    """Write guest memory to a descriptor."""
    file = ctx.proc.fds.get(to_int32(fd))
    return ctx.memory.page_cache.write(file.host_fd, ctx.mem.read(buf, min(count, _IO_CHUNK)),
                                       None)


@syscall("pread64")
def sys_pread64(ctx: SyscallContext, fd: int, buf: int, count: int, offset: int, *_: int) -> int:
    """Read at an offset without moving the file position."""
    data = ctx.memory.page_cache.read(ctx.proc.fds.get(to_int32(fd)).host_fd,
                                      min(count, _IO_CHUNK), offset)
    ctx.mem.write(buf, data)
    return len(data)


@syscall("pwrite64")
def sys_pwrite64(ctx: SyscallContext, fd: int, buf: int, count: int, offset: int, *_: int) -> int:
    """Write at an offset without moving the file position."""
    file = ctx.proc.fds.get(to_int32(fd))
    return ctx.memory.page_cache.write(file.host_fd, ctx.mem.read(buf, min(count, _IO_CHUNK)),
                                       offset)


def _iovecs(ctx: SyscallContext, iov: int, iovcnt: int) -> list[tuple[int, int]]:
    if not 0 <= iovcnt <= 1024:
        raise OSError(errno.EINVAL, "bad iovcnt")
    raw = ctx.mem.read(iov, 16 * iovcnt)
    return [struct.unpack_from("<QQ", raw, 16 * i) for i in range(iovcnt)]


@syscall("writev")
def sys_writev(ctx: SyscallContext, fd: int, iov: int, iovcnt: int, *_: int) -> int:
    """Gather-write: one host write of all the buffers."""
    file = ctx.proc.fds.get(to_int32(fd))
    data = b"".join(ctx.mem.read(base, length) for base, length in _iovecs(ctx, iov, iovcnt))
    return os.write(file.host_fd, data) if data else 0


@syscall("readv")
def sys_readv(ctx: SyscallContext, fd: int, iov: int, iovcnt: int, *_: int) -> int:
    """Scatter-read: one host read spread over the buffers."""
    file = ctx.proc.fds.get(to_int32(fd))
    vecs = _iovecs(ctx, iov, iovcnt)
    data = os.read(file.host_fd, min(sum(n for _, n in vecs), _IO_CHUNK))
    done = 0
    for base, length in vecs:
        part = data[done:done + length]
        if not part:
            break
        ctx.mem.write(base, part)
        done += len(part)
    return done


@syscall("lseek")
def sys_lseek(ctx: SyscallContext, fd: int, offset: int, whence: int, *_: int) -> int:
    """Move the file position."""
    if whence > SEEK_END:
        return -errno.EINVAL
    return os.lseek(ctx.proc.fds.get(to_int32(fd)).host_fd, to_signed(offset), whence)


@syscall("ftruncate")
def sys_ftruncate(ctx: SyscallContext, fd: int, length: int, *_: int) -> int:
    """Set a file's size."""
    os.ftruncate(ctx.proc.fds.get(to_int32(fd)).host_fd, to_signed(length))
    return 0


@syscall("fsync", "fdatasync")
def sys_fsync(ctx: SyscallContext, fd: int, *_: int) -> int:
    """Flush a file to the host's storage."""
    file = ctx.proc.fds.get(to_int32(fd))
    if not file.is_std:
        os.fsync(file.host_fd)
    return 0


@syscall("ioctl")
def sys_ioctl(ctx: SyscallContext, fd: int, request: int, arg: int, *_: int) -> int:
    """Terminal queries on a tty (TCGETS, TIOCGWINSZ); anything else is ENOTTY."""
    file = ctx.proc.fds.get(to_int32(fd))
    request &= 0xFFFFFFFF
    if request not in (TCGETS, TIOCGWINSZ) or not os.isatty(file.host_fd):
        return -errno.ENOTTY
    size = 36 if request == TCGETS else 8       # struct termios (kernel) / struct winsize
    host_req = termios.TCGETS if request == TCGETS else termios.TIOCGWINSZ
    ctx.mem.write(arg, fcntl.ioctl(file.host_fd, host_req, bytes(size)))
    return 0
