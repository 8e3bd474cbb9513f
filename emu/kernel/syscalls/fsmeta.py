"""File system calls: metadata, directories and names (stat, readlink, getdents, mkdir...).

The guest root itself, and anything outside it, is never removed or renamed: "/" (however
it is spelt: "/.", "..", "/proc/self/root") gives EBUSY or EINVAL as Linux would.
"""
from __future__ import annotations

import ctypes
import errno
import os
import stat as stat_mod
import struct

from emu.kernel.perms import chmod_bits, may, may_change_entry, may_search
from emu.kernel.procfs import ProcFs
from emu.kernel.synthetic import lexical_path, served, synthetic_link, synthetic_stat
from emu.kernel.syscalls import SyscallContext, syscall, to_int32
from emu.kernel.syscalls.fs import (AT_EMPTY_PATH, AT_FDCWD, AT_REMOVEDIR, AT_SYMLINK_NOFOLLOW,
                                    path_arg, resolve_arg)
from emu.kernel.syscalls.fsextra import adopt_created

AT_NO_AUTOMOUNT, AT_STATX_SYNC_TYPE = 0x800, 0x6000
STATX__RESERVED = 0x80000000
RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT = 1, 2, 4


# ---- metadata ----

def _timespec(ns: int) -> tuple[int, int]:
    return ns // 10**9, ns % 10**9


def pack_stat(arch: str, st: os.stat_result, owner: tuple[int, int] | None = None) -> bytes:
    """struct stat of the guest architecture for a host stat result (`owner`: the
    guest-visible (uid, gid), default the host's)."""
    uid, gid = owner or (st.st_uid, st.st_gid)
    times = [*_timespec(st.st_atime_ns), *_timespec(st.st_mtime_ns), *_timespec(st.st_ctime_ns)]
    if arch == "x86_64":
        return struct.pack("<QQQIIIIQqqq6Q3q", st.st_dev, st.st_ino, st.st_nlink, st.st_mode,
                           uid, gid, 0, st.st_rdev, st.st_size, st.st_blksize,
                           st.st_blocks, *times, 0, 0, 0)
    return struct.pack("<QQIIIIQQqiiq6qII", st.st_dev, st.st_ino, st.st_mode, st.st_nlink,
                       uid, gid, st.st_rdev, 0, st.st_size, st.st_blksize, 0,
                       st.st_blocks, *times, 0, 0)


def pack_statx(st: os.stat_result, owner: tuple[int, int] | None = None) -> bytes:
    """struct statx (the same on every architecture) for a host stat result (`owner` as
    for pack_stat)."""
    uid, gid = owner or (st.st_uid, st.st_gid)
    def ts(ns: int) -> bytes:
        return struct.pack("<qIi", ns // 10**9, ns % 10**9, 0)
    head = struct.pack("<IIQIIIHHQQQQ", 0x7FF, st.st_blksize, 0, st.st_nlink, uid, gid,
                       st.st_mode, 0, st.st_ino, st.st_size, st.st_blocks, 0)
    tail = struct.pack("<IIII", os.major(st.st_rdev), os.minor(st.st_rdev),
                       os.major(st.st_dev), os.minor(st.st_dev))
    body = head + ts(st.st_atime_ns) + ts(st.st_ctime_ns) + ts(st.st_ctime_ns) \
        + ts(st.st_mtime_ns) + tail
    return body.ljust(256, b"\0")


def _stat_target(ctx: SyscallContext, dirfd: int, path_ptr: int, flags: int) -> os.stat_result:
    path = path_arg(ctx, path_ptr)
    if not path and flags & AT_EMPTY_PATH:
        if to_int32(dirfd) == AT_FDCWD:
            return os.stat(ctx.proc.root.host_path(ctx.proc.cwd))
        return os.fstat(ctx.proc.fds.get(to_int32(dirfd)).host_fd)
    lexical = lexical_path(ctx, _base(ctx, dirfd), path)
    if served(lexical):
        return synthetic_stat(ctx, lexical, follow=not flags & AT_SYMLINK_NOFOLLOW)
    _, host = resolve_arg(ctx, dirfd, path_ptr, follow=not flags & AT_SYMLINK_NOFOLLOW)
    return os.stat(host, follow_symlinks=not flags & AT_SYMLINK_NOFOLLOW)


@syscall("fstat")
def sys_fstat(ctx: SyscallContext, fd: int, buf: int, *_: int) -> int:
    """Status of an open file."""
    st = os.fstat(ctx.proc.fds.get(to_int32(fd)).host_fd)
    ctx.mem.write(buf, pack_stat(ctx.arch, st, ctx.proc.root.owner_of(st)))
    return 0


@syscall("newfstatat")
def sys_newfstatat(ctx: SyscallContext, dirfd: int, path_ptr: int, buf: int, flags: int,
                   *_: int) -> int:
    """Status of a path (or of dirfd itself with AT_EMPTY_PATH)."""
    st = _stat_target(ctx, dirfd, path_ptr, flags)
    ctx.mem.write(buf, pack_stat(ctx.arch, st, ctx.proc.root.owner_of(st)))
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
    flags &= 0xFFFFFFFF
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | AT_EMPTY_PATH | AT_STATX_SYNC_TYPE) \
            or flags & AT_STATX_SYNC_TYPE == AT_STATX_SYNC_TYPE or mask & STATX__RESERVED:
        return -errno.EINVAL
    st = _stat_target(ctx, dirfd, path_ptr, flags)
    ctx.mem.write(buf, pack_statx(st, ctx.proc.root.owner_of(st)))
    return 0


@syscall("readlinkat")
def sys_readlinkat(ctx: SyscallContext, dirfd: int, path_ptr: int, buf: int, size: int,
                   *_: int) -> int:
    """Contents of a symlink; /proc/self/{exe,cwd,root} (however spelt) are the guest's
    names (the program's guest path, or /proc/self/exe outside the root), never host paths."""
    if to_int32(size) <= 0:
        return -errno.EINVAL
    path = path_arg(ctx, path_ptr)
    proc = ctx.proc
    magic = proc.root.magic_link(path, _base(ctx, dirfd), proc.exe_path, proc.pid) \
        if path else None
    served_link = None if magic is not None or not path else \
        synthetic_link(ctx, lexical_path(ctx, _base(ctx, dirfd), path))
    if magic is not None:
        target = magic.encode("utf-8", "surrogateescape")
    elif served_link is not None:
        target = served_link.encode("utf-8", "surrogateescape")
    elif path and served(lexical_path(ctx, _base(ctx, dirfd), path)):
        return -errno.EINVAL                # a served file that is not a link
    else:
        _, host = resolve_arg(ctx, dirfd, path_ptr, follow=False)
        target = os.fsencode(os.readlink(host))
    size = to_int32(size)
    data = target[:size]
    ctx.mem.write(buf, data)
    return len(data)


def _base(ctx: SyscallContext, dirfd: int) -> str:
    """The guest directory a relative path of a *at call starts from."""
    dirfd = to_int32(dirfd)
    return ctx.proc.cwd if dirfd == AT_FDCWD else ctx.proc.fds.get(dirfd).guest_path


@syscall("readlink")
def sys_readlink(ctx: SyscallContext, path_ptr: int, buf: int, size: int, *_: int) -> int:
    """readlink(2) (x86-64 only)."""
    return sys_readlinkat(ctx, AT_FDCWD & 0xFFFFFFFF, path_ptr, buf, size)


@syscall("faccessat", "faccessat2")
def sys_faccessat(ctx: SyscallContext, dirfd: int, path_ptr: int, mode: int, *_: int) -> int:
    """Whether a path exists / is accessible."""
    lexical = lexical_path(ctx, _base(ctx, dirfd), path_arg(ctx, path_ptr))
    if served(lexical):
        st = synthetic_stat(ctx, lexical, follow=True)
        if mode & 2 and ProcFs.covers(lexical) and not stat_mod.S_ISCHR(st.st_mode):
            return -errno.EACCES
        return 0
    if mode & ~7:
        return -errno.EINVAL
    canon, host = resolve_arg(ctx, dirfd, path_ptr, real_ids=True)
    st = os.stat(host)                      # ENOENT, ENOTDIR, ELOOP
    creds, root = ctx.proc.creds, ctx.proc.root
    if not may_search(creds, root, canon, real=True) or \
            not may(creds, st, root.owner_of(st), mode & 7, real=True):
        return -errno.EACCES
    if mode & 2 and os.statvfs(host).f_flag & os.ST_RDONLY:
        return -errno.EROFS
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
    canon, host = resolve_arg(ctx, dirfd, path_ptr, follow=False)
    _may_change(ctx, canon)
    perm = mode & 0o1777 & ~ctx.proc.umask
    os.mkdir(host, perm)
    if os.stat(os.path.dirname(host) or "/").st_mode & stat_mod.S_ISGID:
        perm |= stat_mod.S_ISGID            # inherited, as Linux does
    os.chmod(host, perm)                    # exactly the guest's umask, not the host's
    adopt_created(ctx, host)
    return 0


@syscall("mkdir")
def sys_mkdir(ctx: SyscallContext, path_ptr: int, mode: int, *_: int) -> int:
    """mkdir(2) (x86-64 only)."""
    return sys_mkdirat(ctx, AT_FDCWD & 0xFFFFFFFF, path_ptr, mode)


@syscall("unlinkat")
def sys_unlinkat(ctx: SyscallContext, dirfd: int, path_ptr: int, flags: int, *_: int) -> int:
    """Remove a file, or a directory with AT_REMOVEDIR (never the guest root)."""
    flags &= 0xFFFFFFFF
    if flags & ~AT_REMOVEDIR:
        return -errno.EINVAL
    removedir = bool(flags & AT_REMOVEDIR)
    path = path_arg(ctx, path_ptr)
    last = _last_component(path)
    if last in ("/", ".", ".."):
        if not removedir:
            return -errno.EISDIR
        return -{"/": errno.EBUSY, ".": errno.EINVAL, "..": errno.ENOTEMPTY}[last]
    canon, host = resolve_arg(ctx, dirfd, path_ptr, follow=False)
    if canon == "/" or host == ctx.proc.root.host_dir:
        return -errno.EBUSY if removedir else -errno.EISDIR
    st = os.lstat(host)
    _may_change(ctx, canon, st)
    if removedir:
        os.rmdir(host)
    else:
        if stat_mod.S_ISDIR(st.st_mode):
            return -errno.EISDIR
        os.unlink(host)
    if stat_mod.S_ISDIR(st.st_mode) or st.st_nlink <= 1:
        ctx.proc.root.forget_owner(st)      # the inode number may come back for a new file
    return 0


def _may_change(ctx: SyscallContext, canon: str, removing: os.stat_result | None = None) -> None:
    """EACCES (EPERM in a sticky directory) unless the guest may add or remove the entry."""
    if not may_change_entry(ctx.proc.creds, ctx.proc.root, canon, removing):
        raise OSError(errno.EACCES, "permission denied")


def _last_component(path: str) -> str:
    """The last name of a path ('/' for the root itself, '' for an empty path)."""
    names = [c for c in path.split("/") if c]
    return names[-1] if names else ("/" if path else "")


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
    """renameat with RENAME_NOREPLACE / RENAME_EXCHANGE / RENAME_WHITEOUT (done by the host)."""
    flags &= 0xFFFFFFFF
    if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT) or (
            flags & RENAME_EXCHANGE and flags & (RENAME_NOREPLACE | RENAME_WHITEOUT)):
        return -errno.EINVAL
    if flags & RENAME_WHITEOUT and ctx.proc.creds.fsuid != 0:
        return -errno.EPERM
    return _rename(ctx, olddir, old_ptr, newdir, new_ptr, flags)


@syscall("renameat")
def sys_renameat(ctx: SyscallContext, olddir: int, old_ptr: int, newdir: int, new_ptr: int,
                 *_: int) -> int:
    """Rename within the guest root."""
    return _rename(ctx, olddir, old_ptr, newdir, new_ptr, 0)


def _rename(ctx: SyscallContext, olddir: int, old_ptr: int, newdir: int, new_ptr: int,
            flags: int) -> int:
    """rename's common part: neither name may be the guest root (EBUSY, as Linux)."""
    old_last = _last_component(path_arg(ctx, old_ptr))
    new_last = _last_component(path_arg(ctx, new_ptr))
    if old_last in ("/", ".", ".."):
        return -errno.EBUSY
    if new_last in ("/", ".", ".."):
        return -errno.EEXIST if flags & RENAME_NOREPLACE else -errno.EBUSY
    old_canon, old = resolve_arg(ctx, olddir, old_ptr, follow=False)
    new_canon, new = resolve_arg(ctx, newdir, new_ptr, follow=False)
    host_root = ctx.proc.root.host_dir
    if "/" in (old_canon, new_canon) or host_root in (old, new):
        return -errno.EBUSY
    _may_change(ctx, old_canon, os.lstat(old))
    _may_change(ctx, new_canon, os.lstat(new) if os.path.lexists(new) else None)
    if not flags:
        os.rename(old, new)
        return 0
    renameat2 = getattr(_LIBC, "renameat2", None)
    if renameat2 is None:
        return -errno.EINVAL
    if renameat2(-100, os.fsencode(old), -100, os.fsencode(new), flags) != 0:
        return -(ctypes.get_errno() or errno.EIO)
    return 0


_LIBC = ctypes.CDLL(None, use_errno=True)


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
    canon, host = resolve_arg(ctx, dirfd, path_ptr, follow=False)
    _may_change(ctx, canon)
    os.symlink(target, host)
    adopt_created(ctx, host)
    return 0


@syscall("symlink")
def sys_symlink(ctx: SyscallContext, target_ptr: int, path_ptr: int, *_: int) -> int:
    """symlink(2) (x86-64 only)."""
    return sys_symlinkat(ctx, target_ptr, AT_FDCWD & 0xFFFFFFFF, path_ptr)


@syscall("fchmodat")
def sys_fchmodat(ctx: SyscallContext, dirfd: int, path_ptr: int, mode: int, *_: int) -> int:
    """Change a file's permission bits (the owner or CAP_FOWNER; S_ISGID only for members
    of the file's group)."""
    _, host = resolve_arg(ctx, dirfd, path_ptr)
    st = os.stat(host)
    bits = chmod_bits(ctx.proc.creds, st, ctx.proc.root.owner_of(st), mode & 0o7777)
    if bits is None:
        return -errno.EPERM
    os.chmod(host, bits)
    return 0


@syscall("chmod")
def sys_chmod(ctx: SyscallContext, path_ptr: int, mode: int, *_: int) -> int:
    """chmod(2) (x86-64 only)."""
    return sys_fchmodat(ctx, AT_FDCWD & 0xFFFFFFFF, path_ptr, mode)


@syscall("fchmod")
def sys_fchmod(ctx: SyscallContext, fd: int, mode: int, *_: int) -> int:
    """Change an open file's permission bits (as fchmodat)."""
    host_fd = ctx.proc.fds.get(to_int32(fd)).host_fd
    st = os.fstat(host_fd)
    bits = chmod_bits(ctx.proc.creds, st, ctx.proc.root.owner_of(st), mode & 0o7777)
    if bits is None:
        return -errno.EPERM
    os.fchmod(host_fd, bits)
    return 0
