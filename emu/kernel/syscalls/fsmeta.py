"""File system calls: metadata, directories and names (stat, readlink, getdents, mkdir...)."""
from __future__ import annotations

import errno
import os
import stat as stat_mod
import struct

from emu.kernel.syscalls import SyscallContext, syscall, to_int32, to_signed
from emu.kernel.syscalls.fs import (AT_EMPTY_PATH, AT_FDCWD, AT_REMOVEDIR, AT_SYMLINK_NOFOLLOW,
                                    path_arg, resolve_arg)


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
    path = path_arg(ctx, path_ptr)
    if not path and flags & AT_EMPTY_PATH:
        return os.fstat(ctx.proc.fds.get(to_int32(dirfd)).host_fd)
    _, host = resolve_arg(ctx, dirfd, path_ptr, follow=not flags & AT_SYMLINK_NOFOLLOW)
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
    path = path_arg(ctx, path_ptr)
    if path in ("/proc/self/exe", f"/proc/{ctx.proc.pid}/exe"):
        target = ctx.proc.exe_path.encode()
    else:
        _, host = resolve_arg(ctx, dirfd, path_ptr, follow=False)
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
    _, host = resolve_arg(ctx, dirfd, path_ptr)
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
    canon, host = resolve_arg(ctx, AT_FDCWD & 0xFFFFFFFF, path_ptr)
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
    _, host = resolve_arg(ctx, dirfd, path_ptr, follow=False)
    os.mkdir(host, mode & 0o7777 & ~ctx.proc.umask)
    return 0


@syscall("mkdir")
def sys_mkdir(ctx: SyscallContext, path_ptr: int, mode: int, *_: int) -> int:
    """mkdir(2) (x86-64 only)."""
    return sys_mkdirat(ctx, AT_FDCWD & 0xFFFFFFFF, path_ptr, mode)


@syscall("unlinkat")
def sys_unlinkat(ctx: SyscallContext, dirfd: int, path_ptr: int, flags: int, *_: int) -> int:
    """Remove a file, or a directory with AT_REMOVEDIR."""
    _, host = resolve_arg(ctx, dirfd, path_ptr, follow=False)
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
    _, old = resolve_arg(ctx, olddir, old_ptr, follow=False)
    _, new = resolve_arg(ctx, newdir, new_ptr, follow=False)
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
    target = path_arg(ctx, target_ptr)
    _, host = resolve_arg(ctx, dirfd, path_ptr, follow=False)
    os.symlink(target, host)
    return 0


@syscall("symlink")
def sys_symlink(ctx: SyscallContext, target_ptr: int, path_ptr: int, *_: int) -> int:
    """symlink(2) (x86-64 only)."""
    return sys_symlinkat(ctx, target_ptr, AT_FDCWD & 0xFFFFFFFF, path_ptr)


@syscall("fchmodat")
def sys_fchmodat(ctx: SyscallContext, dirfd: int, path_ptr: int, mode: int, *_: int) -> int:
    """Change a file's permission bits."""
    _, host = resolve_arg(ctx, dirfd, path_ptr)
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
