"""More file calls: hard links, vectored positioned I/O (preadv/pwritev and their v2
forms), extended attributes (none are kept: a guest file has no xattrs) and mount (a
guest may not mount: EPERM)."""
from __future__ import annotations

import errno
import os

from emu.kernel.perms import may_change_entry
from emu.kernel.syscalls import SyscallContext, syscall, to_int32, to_signed
from emu.kernel.syscalls.fs import AT_EMPTY_PATH, AT_FDCWD, path_arg, resolve_arg
from emu.kernel.syscalls.rw import IO_CHUNK, SSIZE_MAX, iovecs, read_from, scatter, write_to

AT_SYMLINK_FOLLOW = 0x400
O_PATH = 0o10000000
RWF_HIPRI, RWF_DSYNC, RWF_SYNC, RWF_NOWAIT, RWF_APPEND = 1, 2, 4, 8, 16
_RWF_ALL = RWF_HIPRI | RWF_DSYNC | RWF_SYNC | RWF_NOWAIT | RWF_APPEND
XATTR_NAME_MAX, XATTR_SIZE_MAX = 255, 65536


# ---- hard links ----

@syscall("linkat")
def sys_linkat(ctx: SyscallContext, olddirfd: int, old_ptr: int, newdirfd: int, new_ptr: int,
               flags: int, *_: int) -> int:
    """A new name for a file, both under the guest root (AT_SYMLINK_FOLLOW, AT_EMPTY_PATH)."""
    flags = to_int32(flags)
    if flags & ~(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH):
        return -errno.EINVAL
    follow = bool(flags & AT_SYMLINK_FOLLOW)
    if flags & AT_EMPTY_PATH and not path_arg(ctx, old_ptr):
        source = f"/proc/self/fd/{ctx.proc.fds.get(to_int32(olddirfd)).host_fd}"
        follow = True
    else:
        _, source = resolve_arg(ctx, olddirfd, old_ptr, follow=follow)
    canon, target = resolve_arg(ctx, newdirfd, new_ptr, follow=False)
    if not may_change_entry(ctx.proc.creds, ctx.proc.root, canon):
        return -errno.EACCES
    if os.path.isdir(source) and not os.path.islink(source):
        return -errno.EPERM                 # no hard links to directories
    os.link(source, target, follow_symlinks=follow)
    return 0


@syscall("link")
def sys_link(ctx: SyscallContext, old_ptr: int, new_ptr: int, *_: int) -> int:
    """link(2) (x86-64 only)."""
    cwd = AT_FDCWD & 0xFFFFFFFF
    return sys_linkat(ctx, cwd, old_ptr, cwd, new_ptr, 0)


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
