"""File system calls over the guest root (emu.kernel.guestfs) and host descriptors."""
from __future__ import annotations

import errno
import fcntl
import os
import stat as stat_mod
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


def _path(ctx: SyscallContext, path_ptr: int) -> str:
    return ctx.mem.read_cstring(path_ptr).decode("utf-8", "surrogateescape")


def _host(ctx: SyscallContext, dirfd: int, path_ptr: int, follow: bool = True) -> tuple[str, str]:
    """(guest canonical path, host path) of a path argument relative to `dirfd`."""
    path = _path(ctx, path_ptr)
    root = ctx.proc.root
    canon = root.canonical(path, _base_dir(ctx, dirfd), follow, exe=ctx.proc.exe_path)
    return canon, root.host_path(canon)


# ---- open / close / dup ----

@syscall("openat")
def sys_openat(ctx: SyscallContext, dirfd: int, path_ptr: int, flags: int, mode: int, *_: int) -> int:
    """Open a file under the guest root."""
    host_flags, _dir, nofollow = host_open_flags(ctx.arch, flags)
    canon, host = _host(ctx, dirfd, path_ptr, follow=not nofollow)
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
    data = os.read(ctx.proc.fds.get(to_int32(fd)).host_fd, min(count, _IO_CHUNK))
    ctx.mem.write(buf, data)
    return len(data)


@syscall("write")
def sys_write(ctx: SyscallContext, fd: int, buf: int, count: int, *_: int) -> int:
    """Write guest memory to a descriptor."""
    file = ctx.proc.fds.get(to_int32(fd))
    return os.write(file.host_fd, ctx.mem.read(buf, min(count, _IO_CHUNK)))


@syscall("pread64")
def sys_pread64(ctx: SyscallContext, fd: int, buf: int, count: int, offset: int, *_: int) -> int:
    """Read at an offset without moving the file position."""
    data = os.pread(ctx.proc.fds.get(to_int32(fd)).host_fd, min(count, _IO_CHUNK), offset)
    ctx.mem.write(buf, data)
    return len(data)


@syscall("pwrite64")
def sys_pwrite64(ctx: SyscallContext, fd: int, buf: int, count: int, offset: int, *_: int) -> int:
    """Write at an offset without moving the file position."""
    file = ctx.proc.fds.get(to_int32(fd))
    return os.pwrite(file.host_fd, ctx.mem.read(buf, min(count, _IO_CHUNK)), offset)


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


# ---- metadata ----

def _timespec(ns: int) -> tuple[int, int]:
    return ns // 10**9, ns % 10**9


def pack_stat(arch: str, st: os.stat_result) -> bytes:
    """struct stat of the guest architecture for a host stat result."""
    times = [*_timespec(st.st_atime_ns), *_timespec(st.st_mtime_ns), *_timespec(st.st_ctime_ns)]
    if arch == "x86_64":
        return struct.pack("<QQQIIIIQqqq6Q3q", st.st_dev, st.st_ino, st.st_nlink, st.st_mode,
                           st.st_uid, st.st_gid, 0, st.st_rdev, st.st_size, st.st_blksize,
                           st.st_blocks, *times, 0, 0, 0)
    return struct.pack("<QQIIIIQQqiiq6qII", st.st_dev, st.st_ino, st.st_mode, st.st_nlink,
                       st.st_uid, st.st_gid, st.st_rdev, 0, st.st_size, st.st_blksize, 0,
                       st.st_blocks, *times, 0, 0)


def pack_statx(st: os.stat_result) -> bytes:
    """struct statx (the same on every architecture) for a host stat result."""
    def ts(ns: int) -> bytes:
        return struct.pack("<qIi", ns // 10**9, ns % 10**9, 0)
    head = struct.pack("<IIQIIIHHQQQQ", 0x7FF, st.st_blksize, 0, st.st_nlink, st.st_uid,
                       st.st_gid, st.st_mode, 0, st.st_ino, st.st_size, st.st_blocks, 0)
    tail = struct.pack("<IIII", os.major(st.st_rdev), os.minor(st.st_rdev),
                       os.major(st.st_dev), os.minor(st.st_dev))
    body = head + ts(st.st_atime_ns) + ts(st.st_ctime_ns) + ts(st.st_ctime_ns) \
        + ts(st.st_mtime_ns) + tail
    return body.ljust(256, b"\0")


def _stat_target(ctx: SyscallContext, dirfd: int, path_ptr: int, flags: int) -> os.stat_result:
    path = _path(ctx, path_ptr)
    if not path and flags & AT_EMPTY_PATH:
        return os.fstat(ctx.proc.fds.get(to_int32(dirfd)).host_fd)
    _, host = _host(ctx, dirfd, path_ptr, follow=not flags & AT_SYMLINK_NOFOLLOW)
    return os.stat(host, follow_symlinks=not flags & AT_SYMLINK_NOFOLLOW)


@syscall("fstat")
def sys_fstat(ctx: SyscallContext, fd: int, buf: int, *_: int) -> int:
    """Status of an open file."""
    ctx.mem.write(buf, pack_stat(ctx.arch, os.fstat(ctx.proc.fds.get(to_int32(fd)).host_fd)))
    return 0


@syscall("newfstatat")
def sys_newfstatat(ctx: SyscallContext, dirfd: int, path_ptr: int, buf: int, flags: int,
                   *_: int) -> int:
    """Status of a path (or of dirfd itself with AT_EMPTY_PATH)."""
    ctx.mem.write(buf, pack_stat(ctx.arch, _stat_target(ctx, dirfd, path_ptr, flags)))
    return 0


@syscall("stat")
def sys_stat(ctx: SyscallContext, path_ptr: int, buf: int, *_: int) -> int:
    """stat(2) (x86-64 only)."""
    return sys_newfstatat(ctx, AT_FDCWD & 0xFFFFFFFF, path_ptr, buf, 0)


@syscall("lstat")
def sys_lstat(ctx: SyscallContext, path_ptr: int, buf: int, *_: int) -> int:
    """lstat(2) (x86-64 only): a final symlink is not followed."""
    return sys_newfstatat(ctx, AT_FDCWD & 0xFFFFFFFF, path_ptr, buf, AT_SYMLINK_NOFOLLOW)


@syscall("statx")
def sys_statx(ctx: SyscallContext, dirfd: int, path_ptr: int, flags: int, mask: int, buf: int,
              *_: int) -> int:
    """Extended status."""
    ctx.mem.write(buf, pack_statx(_stat_target(ctx, dirfd, path_ptr, flags)))
    return 0


@syscall("readlinkat")
def sys_readlinkat(ctx: SyscallContext, dirfd: int, path_ptr: int, buf: int, size: int,
                   *_: int) -> int:
    """Contents of a symlink; /proc/self/exe names the running program."""
    path = _path(ctx, path_ptr)
    if path in ("/proc/self/exe", f"/proc/{ctx.proc.pid}/exe"):
        target = ctx.proc.exe_path.encode()
    else:
        _, host = _host(ctx, dirfd, path_ptr, follow=False)
        target = os.fsencode(os.readlink(host))
    if to_signed(size) <= 0:
        return -errno.EINVAL
    data = target[:size]
    ctx.mem.write(buf, data)
    return len(data)


@syscall("readlink")
def sys_readlink(ctx: SyscallContext, path_ptr: int, buf: int, size: int, *_: int) -> int:
    """readlink(2) (x86-64 only)."""
    return sys_readlinkat(ctx, AT_FDCWD & 0xFFFFFFFF, path_ptr, buf, size)


@syscall("faccessat", "faccessat2")
def sys_faccessat(ctx: SyscallContext, dirfd: int, path_ptr: int, mode: int, *_: int) -> int:
    """Whether a path exists / is accessible."""
    _, host = _host(ctx, dirfd, path_ptr)
    if not os.access(host, mode & 7):
        return -errno.ENOENT if not os.path.lexists(host) else -errno.EACCES
    return 0


@syscall("access")
def sys_access(ctx: SyscallContext, path_ptr: int, mode: int, *_: int) -> int:
    """access(2) (x86-64 only)."""
    return sys_faccessat(ctx, AT_FDCWD & 0xFFFFFFFF, path_ptr, mode)


_DT = {stat_mod.S_IFDIR: 4, stat_mod.S_IFREG: 8, stat_mod.S_IFLNK: 10, stat_mod.S_IFCHR: 2,
       stat_mod.S_IFBLK: 6, stat_mod.S_IFIFO: 1, stat_mod.S_IFSOCK: 12}


@syscall("getdents64")
def sys_getdents64(ctx: SyscallContext, fd: int, buf: int, size: int, *_: int) -> int:
    """Directory entries as struct linux_dirent64 records."""
    file = ctx.proc.fds.get(to_int32(fd))
    if file.dir_entries is None:
        st = os.fstat(file.host_fd)
        if not stat_mod.S_ISDIR(st.st_mode):
            return -errno.ENOTDIR
        entries = [(".", st.st_ino, 4), ("..", st.st_ino, 4)]
        with os.scandir(file.host_fd) as it:
            for e in sorted(it, key=lambda e: e.name):
                mode = e.stat(follow_symlinks=False).st_mode
                entries.append((e.name, e.inode(), _DT.get(stat_mod.S_IFMT(mode), 0)))
        file.dir_entries = entries[::-1]          # pop() from the end
    out = bytearray()
    while file.dir_entries:
        name, ino, dtype = file.dir_entries[-1]
        raw = os.fsencode(name) + b"\0"
        reclen = (19 + len(raw) + 7) & ~7
        if len(out) + reclen > size:
            break
        out += struct.pack("<QqHB", ino, len(out) + reclen, reclen, dtype) + raw.ljust(reclen - 19, b"\0")
        file.dir_entries.pop()
    if not out and file.dir_entries:
        return -errno.EINVAL
    ctx.mem.write(buf, bytes(out))
    return len(out)


# ---- directories and names ----

@syscall("getcwd")
def sys_getcwd(ctx: SyscallContext, buf: int, size: int, *_: int) -> int:
    """The guest's current directory."""
    data = ctx.proc.cwd.encode() + b"\0"
    if len(data) > size:
        return -errno.ERANGE
    ctx.mem.write(buf, data)
    return len(data)


@syscall("chdir")
def sys_chdir(ctx: SyscallContext, path_ptr: int, *_: int) -> int:
    """Change the current directory."""
    canon, host = _host(ctx, AT_FDCWD & 0xFFFFFFFF, path_ptr)
    if not os.path.isdir(host):
        return -errno.ENOTDIR if os.path.exists(host) else -errno.ENOENT
    ctx.proc.cwd = canon
    return 0


@syscall("fchdir")
def sys_fchdir(ctx: SyscallContext, fd: int, *_: int) -> int:
    """Change to an open directory."""
    file = ctx.proc.fds.get(to_int32(fd))
    if not stat_mod.S_ISDIR(os.fstat(file.host_fd).st_mode):
        return -errno.ENOTDIR
    ctx.proc.cwd = file.guest_path
    return 0


@syscall("mkdirat")
def sys_mkdirat(ctx: SyscallContext, dirfd: int, path_ptr: int, mode: int, *_: int) -> int:
    """Create a directory."""
    _, host = _host(ctx, dirfd, path_ptr, follow=False)
    os.mkdir(host, mode & 0o7777 & ~ctx.proc.umask)
    return 0


@syscall("mkdir")
def sys_mkdir(ctx: SyscallContext, path_ptr: int, mode: int, *_: int) -> int:
    """mkdir(2) (x86-64 only)."""
    return sys_mkdirat(ctx, AT_FDCWD & 0xFFFFFFFF, path_ptr, mode)


@syscall("unlinkat")
def sys_unlinkat(ctx: SyscallContext, dirfd: int, path_ptr: int, flags: int, *_: int) -> int:
    """Remove a file, or a directory with AT_REMOVEDIR."""
    _, host = _host(ctx, dirfd, path_ptr, follow=False)
    if flags & AT_REMOVEDIR:
        os.rmdir(host)
    else:
        if os.path.isdir(host) and not os.path.islink(host):
            return -errno.EISDIR
        os.unlink(host)
    return 0


@syscall("unlink")
def sys_unlink(ctx: SyscallContext, path_ptr: int, *_: int) -> int:
    """unlink(2) (x86-64 only)."""
    return sys_unlinkat(ctx, AT_FDCWD & 0xFFFFFFFF, path_ptr, 0)


@syscall("rmdir")
def sys_rmdir(ctx: SyscallContext, path_ptr: int, *_: int) -> int:
    """rmdir(2) (x86-64 only)."""
    return sys_unlinkat(ctx, AT_FDCWD & 0xFFFFFFFF, path_ptr, AT_REMOVEDIR)


@syscall("renameat2")
def sys_renameat2(ctx: SyscallContext, olddir: int, old_ptr: int, newdir: int, new_ptr: int,
                  flags: int, *_: int) -> int:
    """renameat without flags (RENAME_NOREPLACE and friends are not supported)."""
    if flags:
        return -errno.EINVAL
    return sys_renameat(ctx, olddir, old_ptr, newdir, new_ptr)


@syscall("renameat")
def sys_renameat(ctx: SyscallContext, olddir: int, old_ptr: int, newdir: int, new_ptr: int,
                 *_: int) -> int:
    """Rename within the guest root."""
    _, old = _host(ctx, olddir, old_ptr, follow=False)
    _, new = _host(ctx, newdir, new_ptr, follow=False)
    os.rename(old, new)
    return 0


@syscall("rename")
def sys_rename(ctx: SyscallContext, old_ptr: int, new_ptr: int, *_: int) -> int:
    """rename(2) (x86-64 only)."""
    cwd = AT_FDCWD & 0xFFFFFFFF
    return sys_renameat(ctx, cwd, old_ptr, cwd, new_ptr)


@syscall("umask")
def sys_umask(ctx: SyscallContext, mask: int, *_: int) -> int:
    """Set the file-creation mask; returns the old one."""
    old, ctx.proc.umask = ctx.proc.umask, mask & 0o777
    return old


@syscall("symlinkat")
def sys_symlinkat(ctx: SyscallContext, target_ptr: int, dirfd: int, path_ptr: int, *_: int) -> int:
    """Create a symlink; its target is stored as given (and resolved inside the root when used)."""
    target = _path(ctx, target_ptr)
    _, host = _host(ctx, dirfd, path_ptr, follow=False)
    os.symlink(target, host)
    return 0


@syscall("symlink")
def sys_symlink(ctx: SyscallContext, target_ptr: int, path_ptr: int, *_: int) -> int:
    """symlink(2) (x86-64 only)."""
    return sys_symlinkat(ctx, target_ptr, AT_FDCWD & 0xFFFFFFFF, path_ptr)


@syscall("fchmodat")
def sys_fchmodat(ctx: SyscallContext, dirfd: int, path_ptr: int, mode: int, *_: int) -> int:
    """Change a file's permission bits."""
    _, host = _host(ctx, dirfd, path_ptr)
    os.chmod(host, mode & 0o7777)
    return 0


@syscall("chmod")
def sys_chmod(ctx: SyscallContext, path_ptr: int, mode: int, *_: int) -> int:
    """chmod(2) (x86-64 only)."""
    return sys_fchmodat(ctx, AT_FDCWD & 0xFFFFFFFF, path_ptr, mode)


@syscall("fchmod")
def sys_fchmod(ctx: SyscallContext, fd: int, mode: int, *_: int) -> int:
    """Change an open file's permission bits."""
    os.fchmod(ctx.proc.fds.get(to_int32(fd)).host_fd, mode & 0o7777)
    return 0
