"""File system calls: ownership, times, file-system status, truncate and mknod.

Ownership. When emu runs as host root, chown changes the host file's owner. Otherwise the
host cannot, so the guest-visible owner is remembered for the run in the guest root's
table (`GuestRoot.owners`, keyed by the host's (st_dev, st_ino)), which stat, fstat and
statx report. Either way the guest's credentials decide as Linux would: a guest with
fsuid 0 may give any file to anyone; another may only "change" the owner to the file's
own uid, and the group to one it is in, of a file it owns (EPERM otherwise). Objects the
guest creates here (mkdir, mknod, symlink) get the guest's fsuid/fsgid as owner
(`adopt_created`), as Linux gives them.

Times. "Now" is the simulated CLOCK_REALTIME, so runs stay reproducible.
"""
from __future__ import annotations

import errno
import os
import stat as stat_mod
import struct

from emu.kernel.process import Credentials
from emu.kernel.resources import CAP_FSETID, capable
from emu.kernel.syscalls import SyscallContext, syscall, to_int32, to_signed
from emu.kernel.syscalls.fs import (AT_EMPTY_PATH, AT_FDCWD, AT_SYMLINK_NOFOLLOW, path_arg,
                                    resolve_arg)
from emu.kernel.syscalls.proc import CLOCK_REALTIME_EPOCH_NS
from emu.kernel.syscalls.rw import exceeds_fsize

UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
_UNCHANGED = 0xFFFFFFFF                     # (uid_t)-1 / (gid_t)-1
_CWD = AT_FDCWD & 0xFFFFFFFF
EXT4_SUPER_MAGIC, TMPFS_MAGIC = 0xEF53, 0x01021994
PIPEFS_MAGIC, SOCKFS_MAGIC = 0x50495045, 0x534F434B
ST_VALID = 0x0020
_TMPFS_DIRS = ("/dev/shm", "/run")   # (/tmp is a host directory, private or the root's)
MAY_READ, MAY_WRITE, MAY_EXEC = 4, 2, 1
Target = str | int                          # a host path, or a host descriptor


def host_can_chown() -> bool:
    """Whether emu itself may change host owners (it runs as root)."""
    return os.geteuid() == 0


def in_group(creds: Credentials, gid: int) -> bool:
    """Whether `gid` is the caller's fs group or one of its supplementary groups."""
    return gid == creds.fsgid or gid in creds.groups


def may_access(ctx: SyscallContext, st: os.stat_result, want: int) -> bool:
    """Whether the guest's fs ids grant `want` (MAY_* bits) on the file `st` describes,
    judged by its guest-visible owner and mode (fsuid 0 may do anything but execute a
    file nobody may execute)."""
    creds = ctx.proc.creds
    uid, gid = ctx.proc.root.owner_of(st)
    mode = st.st_mode
    if creds.fsuid == 0:
        return not want & MAY_EXEC or stat_mod.S_ISDIR(mode) or bool(mode & 0o111)
    bits = mode >> 6 if creds.fsuid == uid else mode >> 3 if in_group(creds, gid) else mode
    return bits & want & 7 == want


def _target(ctx: SyscallContext, dirfd: int, path_ptr: int,
            flags: int) -> tuple[Target, os.stat_result, bool]:
    """(host path or fd, its stat, follow) of a *at call's path (AT_EMPTY_PATH: dirfd)."""
    follow = not flags & AT_SYMLINK_NOFOLLOW
    if flags & AT_EMPTY_PATH and not path_arg(ctx, path_ptr):
        if to_int32(dirfd) == AT_FDCWD:
            host = ctx.proc.root.host_path(ctx.proc.cwd)
            return host, os.stat(host), True
        fd = ctx.proc.fds.get(to_int32(dirfd)).host_fd
        return fd, os.fstat(fd), True
    _, host = resolve_arg(ctx, dirfd, path_ptr, follow=follow)
    return host, os.stat(host, follow_symlinks=follow), follow


def adopt_created(ctx: SyscallContext, host: str, mode: int | None = None) -> None:
    """Give an object the guest just created at `host` the guest's fsuid and fsgid as owner
    (the parent's group if the parent directory is set-group-ID), as Linux does; with `mode`,
    set exactly those permission bits afterwards (the host's umask and chown play no part),
    less S_ISGID on a file whose group the creator is not in (without CAP_FSETID)."""
    creds, root = ctx.proc.creds, ctx.proc.root
    try:
        st = os.lstat(host)
        parent = os.stat(os.path.dirname(host) or "/")
    except OSError:
        return
    gid = root.owner_of(parent)[1] if parent.st_mode & stat_mod.S_ISGID else creds.fsgid
    _set_owner(ctx, host, st, creds.fsuid, gid, follow=False)
    if mode is None:
        return
    if mode & stat_mod.S_ISGID and not stat_mod.S_ISDIR(st.st_mode) \
            and gid not in (creds.fsgid, *creds.groups) and not capable(creds, CAP_FSETID):
        mode &= ~stat_mod.S_ISGID
    os.chmod(host, mode)


def _set_owner(ctx: SyscallContext, target: Target, st: os.stat_result, uid: int, gid: int,
               follow: bool) -> None:
    """Make (uid, gid) the guest-visible owner: on the host if it can, else in the table."""
    root = ctx.proc.root
    if root.owner_of(st) == (uid, gid):
        return
    if host_can_chown():
        try:
            if isinstance(target, int):
                os.fchown(target, uid, gid)
            else:
                os.chown(target, uid, gid, follow_symlinks=follow)
            root.forget_owner(st)
            return
        except OSError as exc:          # ids the host cannot hold (a user namespace): remember
            if exc.errno not in (errno.EPERM, errno.EINVAL):
                raise
    root.set_owner(st, uid, gid)


def _chown(ctx: SyscallContext, target: Target, st: os.stat_result, uid: int, gid: int,
           follow: bool) -> int:
    """chown's common part: Linux's permission rules, then the change (see the module)."""
    uid, gid = uid & 0xFFFFFFFF, gid & 0xFFFFFFFF
    creds = ctx.proc.creds
    cur_uid, cur_gid = ctx.proc.root.owner_of(st)
    if creds.fsuid != 0:
        owns = creds.fsuid == cur_uid
        if uid != _UNCHANGED and not (owns and uid == cur_uid):
            return -errno.EPERM
        if gid != _UNCHANGED and not (owns and (gid == cur_gid or in_group(creds, gid))):
            return -errno.EPERM
    if uid == _UNCHANGED and gid == _UNCHANGED:
        return 0
    new_uid = cur_uid if uid == _UNCHANGED else uid
    new_gid = cur_gid if gid == _UNCHANGED else gid
    kill = 0
    if not stat_mod.S_ISDIR(st.st_mode) and not stat_mod.S_ISLNK(st.st_mode):
        kill = st.st_mode & stat_mod.S_ISUID       # Linux clears set-ID bits on chown
        if st.st_mode & stat_mod.S_IXGRP:
            kill |= st.st_mode & stat_mod.S_ISGID
    _set_owner(ctx, target, st, new_uid, new_gid, follow)
    if kill:
        mode = stat_mod.S_IMODE(st.st_mode) & ~kill
        if isinstance(target, int):
            os.fchmod(target, mode)
        else:
            os.chmod(target, mode)
    return 0


@syscall("fchownat")
def sys_fchownat(ctx: SyscallContext, dirfd: int, path_ptr: int, uid: int, gid: int,
                 flags: int, *_: int) -> int:
    """Change a file's owner and group (-1: unchanged)."""
    flags &= 0xFFFFFFFF
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        return -errno.EINVAL
    target, st, follow = _target(ctx, dirfd, path_ptr, flags)
    return _chown(ctx, target, st, uid, gid, follow)


@syscall("chown")
def sys_chown(ctx: SyscallContext, path_ptr: int, uid: int, gid: int, *_: int) -> int:
    """chown(2) (x86-64 only): follows a final symlink."""
    return sys_fchownat(ctx, _CWD, path_ptr, uid, gid, 0)


@syscall("lchown")
def sys_lchown(ctx: SyscallContext, path_ptr: int, uid: int, gid: int, *_: int) -> int:
    """lchown(2) (x86-64 only): a final symlink itself."""
    return sys_fchownat(ctx, _CWD, path_ptr, uid, gid, AT_SYMLINK_NOFOLLOW)


@syscall("fchown")
def sys_fchown(ctx: SyscallContext, fd: int, uid: int, gid: int, *_: int) -> int:
    """Change an open file's owner and group."""
    host_fd = ctx.proc.fds.get(to_int32(fd)).host_fd
    return _chown(ctx, host_fd, os.fstat(host_fd), uid, gid, True)


# ---- times ----

def _now_ns(ctx: SyscallContext) -> int:
    """The simulated CLOCK_REALTIME in nanoseconds."""
    return CLOCK_REALTIME_EPOCH_NS + ctx.clock.now_ns()


def _utimens(ctx: SyscallContext, dirfd: int, path_ptr: int,
             times: tuple[tuple[int, int], tuple[int, int]] | None, flags: int) -> int:
    """utimensat's body: `times` are (sec, nsec) pairs with UTIME_NOW/UTIME_OMIT, or None."""
    if times is not None:
        if any(ns not in (UTIME_NOW, UTIME_OMIT) and not 0 <= ns < 10**9 for _, ns in times):
            return -errno.EINVAL
        if times[0][1] == UTIME_NOW and times[1][1] == UTIME_NOW:
            times = None
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        return -errno.EINVAL
    if path_ptr == 0:                       # futimens(dirfd)
        if to_int32(dirfd) == AT_FDCWD:
            return -errno.EFAULT
        if flags:
            return -errno.EINVAL
        host_fd = ctx.proc.fds.get(to_int32(dirfd)).host_fd
        target, st, follow = host_fd, os.fstat(host_fd), True
    else:
        target, st, follow = _target(ctx, dirfd, path_ptr, flags)
    creds = ctx.proc.creds
    if creds.fsuid != 0 and creds.fsuid != ctx.proc.root.owner_of(st)[0]:
        if times is not None:
            return -errno.EPERM             # explicit times: only the owner
        if not may_access(ctx, st, MAY_WRITE):
            return -errno.EACCES            # "now": the owner or a writer
    now = _now_ns(ctx)
    pick = [now, now] if times is None else [
        old if ns == UTIME_OMIT else now if ns == UTIME_NOW else sec * 10**9 + ns
        for (sec, ns), old in zip(times, (st.st_atime_ns, st.st_mtime_ns))]
    if isinstance(target, int):
        os.utime(target, ns=(pick[0], pick[1]))
    else:
        os.utime(target, ns=(pick[0], pick[1]), follow_symlinks=follow)
    return 0


@syscall("utimensat")
def sys_utimensat(ctx: SyscallContext, dirfd: int, path_ptr: int, times_ptr: int, flags: int,
                  *_: int) -> int:
    """Set access and modification times (NULL times: now; NULL path: dirfd itself)."""
    times = None
    if times_ptr:
        a_sec, a_ns, m_sec, m_ns = struct.unpack("<qqqq", ctx.mem.read(times_ptr, 32))
        if a_ns == UTIME_OMIT and m_ns == UTIME_OMIT:
            return 0                        # nothing to do: the path is not even looked at
        times = ((a_sec, a_ns), (m_sec, m_ns))
    return _utimens(ctx, dirfd, path_ptr, times, flags & 0xFFFFFFFF)


@syscall("utimes")
def sys_utimes(ctx: SyscallContext, path_ptr: int, times_ptr: int, *_: int) -> int:
    """utimes(2) (x86-64 only): struct timeval[2], NULL for now."""
    times = None
    if times_ptr:
        a_sec, a_us, m_sec, m_us = struct.unpack("<qqqq", ctx.mem.read(times_ptr, 32))
        if not (0 <= a_us < 10**6 and 0 <= m_us < 10**6):
            return -errno.EINVAL
        times = ((a_sec, a_us * 1000), (m_sec, m_us * 1000))
    return _utimens(ctx, _CWD, path_ptr, times, 0)


@syscall("utime")
def sys_utime(ctx: SyscallContext, path_ptr: int, times_ptr: int, *_: int) -> int:
    """utime(2) (x86-64 only): struct utimbuf, NULL for now."""
    times = None
    if times_ptr:
        actime, modtime = struct.unpack("<qq", ctx.mem.read(times_ptr, 16))
        times = ((actime, 0), (modtime, 0))
    return _utimens(ctx, _CWD, path_ptr, times, 0)


# ---- file-system status ----

def pack_statfs(guest_path: str, vfs: os.statvfs_result, st: os.stat_result) -> bytes:
    """struct statfs (asm-generic, 64-bit words: the same on x86-64 and AArch64)."""
    if stat_mod.S_ISFIFO(st.st_mode):
        f_type = PIPEFS_MAGIC
    elif stat_mod.S_ISSOCK(st.st_mode):
        f_type = SOCKFS_MAGIC
    elif any(guest_path == d or guest_path.startswith(d + "/") for d in _TMPFS_DIRS):
        f_type = TMPFS_MAGIC
    else:
        f_type = EXT4_SUPER_MAGIC
    return struct.pack("<7Q2I3Q4Q", f_type, vfs.f_bsize, vfs.f_blocks, vfs.f_bfree,
                       vfs.f_bavail, vfs.f_files, vfs.f_ffree, st.st_dev & 0xFFFFFFFF,
                       (st.st_dev >> 32) & 0xFFFFFFFF, vfs.f_namemax, vfs.f_frsize,
                       vfs.f_flag | ST_VALID, 0, 0, 0, 0)


@syscall("statfs")
def sys_statfs(ctx: SyscallContext, path_ptr: int, buf: int, *_: int) -> int:
    """Status of the file system holding a path."""
    canon, host = resolve_arg(ctx, _CWD, path_ptr)
    ctx.mem.write(buf, pack_statfs(canon, os.statvfs(host), os.stat(host)))
    return 0


@syscall("fstatfs")
def sys_fstatfs(ctx: SyscallContext, fd: int, buf: int, *_: int) -> int:
    """Status of the file system holding an open file."""
    file = ctx.proc.fds.get(to_int32(fd))
    ctx.mem.write(buf, pack_statfs(file.guest_path, os.fstatvfs(file.host_fd),
                                   os.fstat(file.host_fd)))
    return 0


# ---- truncate and mknod ----

@syscall("truncate")
def sys_truncate(ctx: SyscallContext, path_ptr: int, length: int, *_: int) -> int:
    """Set the size of a file named by path (negative: EINVAL)."""
    length = to_signed(length)
    _, host = resolve_arg(ctx, _CWD, path_ptr)
    st = os.stat(host)
    if stat_mod.S_ISDIR(st.st_mode):
        return -errno.EISDIR
    if length < 0 or not stat_mod.S_ISREG(st.st_mode):
        return -errno.EINVAL
    if not may_access(ctx, st, MAY_WRITE):
        return -errno.EACCES
    if exceeds_fsize(ctx, length):
        return -errno.EFBIG
    os.truncate(host, length)
    return 0


@syscall("mknodat")
def sys_mknodat(ctx: SyscallContext, dirfd: int, path_ptr: int, mode: int, dev: int,
                *_: int) -> int:
    """Create a regular file, FIFO or socket node (devices: EPERM)."""
    mode &= 0xFFFFFFFF
    kind = stat_mod.S_IFMT(mode) or stat_mod.S_IFREG
    if kind in (stat_mod.S_IFCHR, stat_mod.S_IFBLK, stat_mod.S_IFDIR):
        return -errno.EPERM                 # (devices: emu has none to offer)
    if kind not in (stat_mod.S_IFREG, stat_mod.S_IFIFO, stat_mod.S_IFSOCK):
        return -errno.EINVAL
    _, host = resolve_arg(ctx, dirfd, path_ptr, follow=False)
    perm = mode & 0o7777 & ~ctx.proc.umask
    if kind == stat_mod.S_IFIFO:
        os.mkfifo(host, perm)
    elif kind == stat_mod.S_IFREG:
        os.close(os.open(host, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC
                         | os.O_NOFOLLOW, perm))
    else:
        os.mknod(host, kind | perm)
    adopt_created(ctx, host, perm)          # exactly the guest's umask, not the host's
    return 0


@syscall("mknod")
def sys_mknod(ctx: SyscallContext, path_ptr: int, mode: int, dev: int, *_: int) -> int:
    """mknod(2) (x86-64 only)."""
    return sys_mknodat(ctx, _CWD, path_ptr, mode, dev)
