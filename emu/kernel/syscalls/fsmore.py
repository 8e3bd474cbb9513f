"""More file calls: hard links, vectored positioned I/O (preadv/pwritev and their v2
forms), fallocate, extended attributes (none are kept: a guest file has no xattrs) and
mount (a guest may not mount: EPERM)."""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import stat as stat_mod

from emu.kernel.perms import may_change_entry
from emu.kernel.syscalls import SyscallContext, syscall, to_int32, to_signed
from emu.kernel.syscalls.fs import AT_EMPTY_PATH, AT_FDCWD, path_arg, resolve_arg
from emu.kernel.syscalls.rw import (IO_CHUNK, SSIZE_MAX, exceeds_fsize, iovecs, read_from,
                                    scatter, write_to)
from emu.mm.frames import PAGE_SHIFT, PAGE_SIZE

AT_SYMLINK_FOLLOW = 0x400
O_PATH = 0o10000000
RWF_HIPRI, RWF_DSYNC, RWF_SYNC, RWF_NOWAIT, RWF_APPEND = 1, 2, 4, 8, 16
_RWF_ALL = RWF_HIPRI | RWF_DSYNC | RWF_SYNC | RWF_NOWAIT | RWF_APPEND
XATTR_NAME_MAX, XATTR_SIZE_MAX = 255, 65536
_FD_LINK = re.compile(r"/proc/(?:self|thread-self)/fd/(\d+)")


# ---- hard links ----

@syscall("linkat")
def sys_linkat(ctx: SyscallContext, olddirfd: int, old_ptr: int, newdirfd: int, new_ptr: int,
               flags: int, *_: int) -> int:
    """A new name for a file, both under the guest root (AT_SYMLINK_FOLLOW, AT_EMPTY_PATH)."""
    flags = to_int32(flags)
    if flags & ~(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH):
        return -errno.EINVAL
    follow = bool(flags & AT_SYMLINK_FOLLOW)
    old_path = path_arg(ctx, old_ptr)
    fd_link = _FD_LINK.fullmatch(old_path)
    if flags & AT_EMPTY_PATH and not old_path:
        source = f"/proc/self/fd/{ctx.proc.fds.get(to_int32(olddirfd)).host_fd}"
        follow = True
    elif fd_link and follow:        # the way to give an O_TMPFILE file a name
        source = f"/proc/self/fd/{ctx.proc.fds.get(int(fd_link.group(1))).host_fd}"
    else:
        _, source = resolve_arg(ctx, olddirfd, old_ptr, follow=follow)
    canon, target = resolve_arg(ctx, newdirfd, new_ptr, follow=False)
    if not may_change_entry(ctx.proc.creds, ctx.proc.root, canon):
        return -errno.EACCES
    if os.path.isdir(source) and not os.path.islink(source):
        return -errno.EPERM                 # no hard links to directories
    # (os.link without a directory descriptor calls link(2), which never follows: give it
    # one, so that linkat(2) runs with AT_SYMLINK_FOLLOW as asked; the paths are absolute)
    anchor = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(source, target, src_dir_fd=anchor, follow_symlinks=follow)
    finally:
        os.close(anchor)
    return 0


@syscall("link")
def sys_link(ctx: SyscallContext, old_ptr: int, new_ptr: int, *_: int) -> int:
    """link(2) (x86-64 only)."""
    cwd = AT_FDCWD & 0xFFFFFFFF
    return sys_linkat(ctx, cwd, old_ptr, cwd, new_ptr, 0)


# ---- fallocate ----

FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_COLLAPSE_RANGE = 0x01, 0x02, 0x08
FALLOC_FL_ZERO_RANGE, FALLOC_FL_INSERT_RANGE = 0x10, 0x20
_FALLOC_ALL = (FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_COLLAPSE_RANGE
               | FALLOC_FL_ZERO_RANGE | FALLOC_FL_INSERT_RANGE)
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)


@syscall("fallocate")
def sys_fallocate(ctx: SyscallContext, fd: int, mode: int, offset: int, length: int,
                  *_: int) -> int:
    """Allocate, punch or zero a range of a regular file (the host file system does it, with
    its errno, EOPNOTSUPP included); pages that mappings cache see the zeros."""
    file = ctx.proc.fds.get(to_int32(fd))
    mode, offset, length = to_int32(mode), to_signed(offset), to_signed(length)
    if offset < 0 or length <= 0 or mode & ~_FALLOC_ALL:
        return -errno.EINVAL
    if mode & FALLOC_FL_PUNCH_HOLE and mode & ~FALLOC_FL_PUNCH_HOLE != FALLOC_FL_KEEP_SIZE:
        return -errno.EOPNOTSUPP            # a hole keeps the size, and is nothing else
    if not file.guest_flags & 0o3 or file.guest_flags & O_PATH:
        return -errno.EBADF
    if file.kernel_object is not None:
        return -errno.ESPIPE
    st = os.fstat(file.host_fd)
    if stat_mod.S_ISDIR(st.st_mode):
        return -errno.EISDIR
    if not stat_mod.S_ISREG(st.st_mode):
        return -errno.ENODEV
    if offset + length > SSIZE_MAX:
        return -errno.EFBIG
    if not mode & FALLOC_FL_KEEP_SIZE and exceeds_fsize(ctx, offset + length):
        return -errno.EFBIG
    cached = ctx.memory.page_cache.lookup(file.host_fd)
    if cached is not None and mode & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE):
        return -errno.EOPNOTSUPP            # (pages mapped: emu does not shift them)
    if _libc.fallocate(file.host_fd, mode, offset, length) != 0:
        return -ctypes.get_errno()
    if cached is not None and mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE):
        end = offset + length
        for index in range(offset >> PAGE_SHIFT, (end + PAGE_SIZE - 1) >> PAGE_SHIFT):
            if cached.is_cached(index):
                lo, hi = max(offset, index << PAGE_SHIFT), min(end, (index + 1) << PAGE_SHIFT)
                cached.update(lo, bytes(hi - lo))
    return 0


# ---- vectored positioned I/O ----

def _positioned(ctx: SyscallContext, fd: int, iov: int, iovcnt: int, offset: int, flags: int,
                write: bool) -> int | None:
    if flags & ~_RWF_ALL:
        return -errno.EOPNOTSUPP
    file = ctx.proc.fds.get(to_int32(fd))
    if file.guest_flags & O_PATH:
        return -errno.EBADF
    pos = to_signed(offset)
    if pos < -1:
        return -errno.EINVAL
    at = None if pos == -1 else pos          # -1 (the v2 forms): the file position
    vecs = iovecs(ctx, iov, iovcnt, IO_CHUNK)
    if write:
        data = b"".join(ctx.mem.read(base, length) for base, length in vecs)
        if at is not None and at + len(data) > SSIZE_MAX:
            return -errno.EINVAL
        return write_to(ctx, file, data, at)
    got = read_from(ctx, file, sum(n for _, n in vecs), at)
    return None if got is None else scatter(ctx, vecs, got)


@syscall("preadv")
def sys_preadv(ctx: SyscallContext, fd: int, iov: int, iovcnt: int, pos: int, *_: int) -> int | None:
    """Scatter-read at an offset (which must not be negative)."""
    if to_signed(pos) < 0:
        return -errno.EINVAL
    return _positioned(ctx, fd, iov, iovcnt, pos, 0, write=False)


@syscall("pwritev")
def sys_pwritev(ctx: SyscallContext, fd: int, iov: int, iovcnt: int, pos: int,
                *_: int) -> int | None:
    """Gather-write at an offset (which must not be negative)."""
    if to_signed(pos) < 0:
        return -errno.EINVAL
    return _positioned(ctx, fd, iov, iovcnt, pos, 0, write=True)


@syscall("preadv2")
def sys_preadv2(ctx: SyscallContext, fd: int, iov: int, iovcnt: int, pos: int, _pos_high: int,
                flags: int) -> int | None:
    """preadv with RWF_* flags; offset -1 reads at the file position."""
    return _positioned(ctx, fd, iov, iovcnt, pos, to_int32(flags), write=False)


@syscall("pwritev2")
def sys_pwritev2(ctx: SyscallContext, fd: int, iov: int, iovcnt: int, pos: int, _pos_high: int,
                 flags: int) -> int | None:
    """pwritev with RWF_* flags; offset -1 writes at the file position."""
    return _positioned(ctx, fd, iov, iovcnt, pos, to_int32(flags), write=True)


# ---- extended attributes: none are kept ----

def _xattr_target(ctx: SyscallContext, kind: str, target: int) -> None:
    """Check the file an xattr call names (path, link or descriptor): ENOENT, EBADF..."""
    if kind == "f":
        file = ctx.proc.fds.get(to_int32(target))
        if file.guest_flags & O_PATH:
            raise OSError(errno.EBADF, "an O_PATH descriptor")
        return
    _, host = resolve_arg(ctx, AT_FDCWD & 0xFFFFFFFF, target, follow=kind == "")
    os.stat(host, follow_symlinks=kind == "")


def _xattr_name(ctx: SyscallContext, name_ptr: int) -> None:
    name = ctx.mem.read_cstring(name_ptr, limit=XATTR_NAME_MAX + 1)
    if not name or len(name) > XATTR_NAME_MAX:
        raise OSError(errno.ERANGE, "bad attribute name")


def _register_xattrs() -> None:
    for kind in ("", "l", "f"):
        def getxattr(ctx: SyscallContext, target: int, name: int, *_: int, k: str = kind) -> int:
            """No extended attribute exists (ENODATA)."""
            _xattr_target(ctx, k, target)
            _xattr_name(ctx, name)
            return -errno.ENODATA

        def setxattr(ctx: SyscallContext, target: int, name: int, value: int, size: int,
                     flags: int, *_: int, k: str = kind) -> int:
            """Extended attributes are not supported on guest files (EOPNOTSUPP)."""
            _xattr_target(ctx, k, target)
            _xattr_name(ctx, name)
            if size > XATTR_SIZE_MAX:
                return -errno.E2BIG
            return -errno.EOPNOTSUPP

        def listxattr(ctx: SyscallContext, target: int, *_: int, k: str = kind) -> int:
            """The list of names is empty."""
            _xattr_target(ctx, k, target)
            return 0

        def removexattr(ctx: SyscallContext, target: int, name: int, *_: int,
                        k: str = kind) -> int:
            """There is nothing to remove (ENODATA)."""
            _xattr_target(ctx, k, target)
            _xattr_name(ctx, name)
            return -errno.ENODATA
        syscall(f"{kind}getxattr")(getxattr)
        syscall(f"{kind}setxattr")(setxattr)
        syscall(f"{kind}listxattr")(listxattr)
        syscall(f"{kind}removexattr")(removexattr)


_register_xattrs()


@syscall("mount", "umount2")
def sys_mount(ctx: SyscallContext, *_: int) -> int:
    """A guest may not mount or unmount file systems."""
    return -errno.EPERM
