"""File system calls: descriptors (open, close, dup, pipes, lseek, ioctl...) over the guest
root; reading and writing them is in rw.py, fcntl in fcntlcmds.py, opening FIFOs and /proc
in openspecial.py."""
from __future__ import annotations

import errno
import fcntl
import os
import posixpath
import stat
import struct
import termios

from emu.kernel.devices import is_device, open_device
from emu.kernel.files import O_CLOEXEC, O_NONBLOCK, OpenFile, host_open_flags
from emu.kernel.perms import may_search
from emu.kernel.pipes import Pipe, PipeEnd
from emu.kernel.procfs import ProcFs
from emu.kernel.synthetic import is_magic_link
from emu.kernel.syscalls import SyscallContext, syscall, to_int32, to_signed
from emu.kernel.syscalls.fcntlcmds import release_locks
from emu.kernel.syscalls.openspecial import check_open_permission, is_fifo, open_fifo, open_proc
from emu.kernel.syscalls.rw import exceeds_fsize
from emu.mm.uaccess import BadAddress

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW, AT_REMOVEDIR, AT_EMPTY_PATH = 0x100, 0x200, 0x1000
O_DIRECT_ANY = 0o40000 | 0o200000     # O_DIRECT (x86-64 / AArch64): packet pipes, ignored
TCGETS, TIOCGWINSZ, FIONREAD = 0x5401, 0x5413, 0x541B
SEEK_END, SEEK_HOLE = 2, 4


# ---- paths ----

def _base_dir(ctx: SyscallContext, dirfd: int) -> str:
    dirfd = to_int32(dirfd)
    if dirfd == AT_FDCWD:
        return ctx.proc.cwd
    return ctx.proc.fds.get(dirfd).guest_path


PATH_MAX, NAME_MAX = 4096, 255


def path_arg(ctx: SyscallContext, path_ptr: int) -> str:
    """A path argument (ENAMETOOLONG past PATH_MAX or for a component past NAME_MAX)."""
    try:
        raw = ctx.mem.read_cstring(path_ptr, limit=PATH_MAX)
    except BadAddress:
        ctx.mem.read(path_ptr, 1)               # EFAULT if it is not readable at all
        raise OSError(errno.ENAMETOOLONG, "path too long") from None
    if any(len(part) > NAME_MAX for part in raw.split(b"/")):
        raise OSError(errno.ENAMETOOLONG, "name too long")
    return raw.decode("utf-8", "surrogateescape")


def resolve_arg(ctx: SyscallContext, dirfd: int, path_ptr: int, follow: bool = True,
                real_ids: bool = False) -> tuple[str, str]:
    """(guest canonical path, host path) of a path argument relative to `dirfd`; EACCES
    when the guest may not search a directory on the way (with its real ids for access(2),
    else its file-system ids)."""
    path = path_arg(ctx, path_ptr)
    root = ctx.proc.root
    canon = root.canonical(path, _base_dir(ctx, dirfd), follow, exe=ctx.proc.exe_path)
    if ctx.proc.creds.fsuid != 0 or ctx.proc.creds.uid != 0:
        if not may_search(ctx.proc.creds, root, canon, real=real_ids):
            raise OSError(errno.EACCES, "cannot search a directory on the way")
    return canon, root.host_path(canon)


# ---- open / close / dup ----

@syscall("openat")
def sys_openat(ctx: SyscallContext, dirfd: int, path_ptr: int, flags: int, mode: int, *_: int) -> int:
    """Open a file under the guest root."""
    host_flags, _dir, nofollow = host_open_flags(ctx.arch, flags)
    device = posixpath.normpath(posixpath.join(_base_dir(ctx, dirfd), path_arg(ctx, path_ptr)))
    if device.startswith("/dev/fd/"):            # Linux's /dev/fd is /proc/self/fd (bash's <(...))
        device = "/proc/self/fd/" + device[len("/dev/fd/"):]
    if is_device(device):
        file = open_device(device, flags, host_flags, ctx.proc.fds, ctx.threads.random_bytes)
    elif ProcFs.covers(device) and not is_magic_link(device):
        file = open_proc(ctx, device, flags, host_flags)
    else:
        canon, host = resolve_arg(ctx, dirfd, path_ptr, follow=not nofollow)
        creates = bool(host_flags & os.O_CREAT) and not os.path.lexists(host)
        check_open_permission(ctx, canon, host, flags, creates)
        if not creates and is_fifo(host) and not host_flags & (os.O_DIRECTORY | os.O_PATH):
            return open_fifo(ctx, canon, host, flags)     # (O_DIRECTORY: ENOTDIR at once)
        perm = mode & 0o7777 & ~ctx.proc.umask
        fd = os.open(host, host_flags | os.O_CLOEXEC, perm)
        file = OpenFile(fd, canon, flags)
        if creates:                     # the guest's fsuid and fsgid own it, with its mode
            from emu.kernel.syscalls.fsextra import adopt_created   # (it imports this module)
            adopt_created(ctx, host, perm)
    try:
        return ctx.proc.fds.install(file, cloexec=bool(flags & O_CLOEXEC))
    except OSError:
        file.close()
        raise


@syscall("open")
def sys_open(ctx: SyscallContext, path_ptr: int, flags: int, mode: int, *_: int) -> int:
    """open(2) (x86-64 only): openat relative to the cwd."""
    return sys_openat(ctx, AT_FDCWD & 0xFFFFFFFF, path_ptr, flags, mode)


@syscall("creat")
def sys_creat(ctx: SyscallContext, path_ptr: int, mode: int, *_: int) -> int | None:
    """creat(2) (x86-64 only): open(path, O_CREAT|O_WRONLY|O_TRUNC, mode)."""
    return sys_openat(ctx, AT_FDCWD & 0xFFFFFFFF, path_ptr, 0o1101, mode)


@syscall("close")
def sys_close(ctx: SyscallContext, fd: int, *_: int) -> int:
    """Close a descriptor (dropping the process's record locks on its file, as POSIX says,
    and an OFD's locks with its last descriptor)."""
    fd = to_int32(fd)
    release_locks(ctx, ctx.proc.fds.get(fd))
    ctx.proc.fds.close(fd)
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
    _closing(ctx, old, new)
    return ctx.proc.fds.dup_to(old, new)


def _closing(ctx: SyscallContext, old: int, new: int) -> None:
    """dup2/dup3 are about to close `new`: its record locks go (once `old` is known good)."""
    ctx.proc.fds.get(old)
    try:
        target = ctx.proc.fds.get(new)
    except OSError:
        return
    release_locks(ctx, target)


@syscall("dup3")
def sys_dup3(ctx: SyscallContext, old: int, new: int, flags: int, *_: int) -> int:
    """dup2 with O_CLOEXEC; old == new is EINVAL."""
    old, new = to_int32(old), to_int32(new)
    if old == new or flags & ~O_CLOEXEC:
        return -errno.EINVAL
    _closing(ctx, old, new)
    return ctx.proc.fds.dup_to(old, new, cloexec=bool(flags & O_CLOEXEC))


@syscall("pipe2")
def sys_pipe2(ctx: SyscallContext, fds_ptr: int, flags: int, *_: int) -> int:
    """A kernel pipe (emu/kernel/pipes.py) as two guest descriptors."""
    if flags & ~(O_CLOEXEC | O_NONBLOCK | O_DIRECT_ANY):
        return -errno.EINVAL
    pipe = Pipe(ctx.blocking.wake)
    cloexec = bool(flags & O_CLOEXEC)
    nonblock = flags & O_NONBLOCK
    anchor_r, anchor_w = os.pipe2(os.O_CLOEXEC)    # host pipe ends: fstat and lseek only
    ends = []
    for anchor, write in ((anchor_r, False), (anchor_w, True)):
        pipe.open_end(write)
        ends.append(OpenFile(anchor, "pipe:[%d]" % os.fstat(anchor).st_ino, int(write) | nonblock,
                             kernel_object=PipeEnd(pipe, reads=not write, writes=write)))
    return hand_out_pair(ctx, ends[0], ends[1], cloexec, fds_ptr)


def hand_out_pair(ctx: SyscallContext, first: OpenFile, second: OpenFile, cloexec: bool,
                  out: int) -> int:
    """Install two new open files (pipe, socketpair) and store their descriptors as two
    ints at `out`; on any failure (EMFILE, EFAULT) neither stays open."""
    fds = ctx.proc.fds
    installed: list[int] = []
    try:
        for file in (first, second):
            installed.append(fds.install(file, cloexec=cloexec))
        ctx.mem.write(out, struct.pack("<ii", *installed))
    except (OSError, BadAddress):
        for fd in installed:
            fds.close(fd)
        for file in (first, second)[len(installed):]:
            file.close()
        raise
    return 0


@syscall("pipe")
def sys_pipe(ctx: SyscallContext, fds_ptr: int, *_: int) -> int:
    """pipe(2) (x86-64 only)."""
    return sys_pipe2(ctx, fds_ptr, 0)


@syscall("lseek")
def sys_lseek(ctx: SyscallContext, fd: int, offset: int, whence: int, *_: int) -> int:
    """Move the file position (SEEK_SET, SEEK_CUR, SEEK_END, SEEK_DATA, SEEK_HOLE)."""
    if whence > SEEK_HOLE:
        return -errno.EINVAL
    return os.lseek(ctx.proc.fds.get(to_int32(fd)).host_fd, to_signed(offset), whence)


@syscall("ftruncate")
def sys_ftruncate(ctx: SyscallContext, fd: int, length: int, *_: int) -> int:
    """Set a file's size (EINVAL: negative, not a regular file open for writing; EFBIG and
    SIGXFSZ past RLIMIT_FSIZE)."""
    file = ctx.proc.fds.get(to_int32(fd))
    length = to_signed(length)
    if length < 0 or file.kernel_object is not None or file.guest_flags & 0o3 == 0 \
            or not stat.S_ISREG(os.fstat(file.host_fd).st_mode):
        return -errno.EINVAL
    if exceeds_fsize(ctx, length):
        return -errno.EFBIG
    os.ftruncate(file.host_fd, length)
    return 0


@syscall("fsync", "fdatasync")
def sys_fsync(ctx: SyscallContext, fd: int, *_: int) -> int:
    """Flush a file to the host's storage (EIO if the backing store fails the write)."""
    file = ctx.proc.fds.get(to_int32(fd))
    if not file.is_std:
        error = ctx.memory.store.check(ctx.proc.pid, ctx.thread.tid, True, "fsync",
                                       file.guest_path, file.host_fd)
        if error:
            return -error
        os.fsync(file.host_fd)
    return 0


@syscall("ioctl")
def sys_ioctl(ctx: SyscallContext, fd: int, request: int, arg: int, *_: int) -> int:
    """Terminal queries on a tty (TCGETS, TIOCGWINSZ); anything else is ENOTTY."""
    file = ctx.proc.fds.get(to_int32(fd))
    if file.guest_flags & 0o10000000:               # O_PATH: no operations on the file
        return -errno.EBADF
    request &= 0xFFFFFFFF
    if request == FIONREAD:
        end = file.kernel_object
        if isinstance(end, PipeEnd):
            waiting = len(end.rpipe.data)
        elif file.kernel_object is None:
            waiting = struct.unpack("<i", fcntl.ioctl(file.host_fd, termios.FIONREAD,
                                                      bytes(4)))[0]
        else:
            return -errno.ENOTTY
        ctx.mem.write(arg, struct.pack("<i", waiting))
        return 0
    if request not in (TCGETS, TIOCGWINSZ) or not os.isatty(file.host_fd):
        return -errno.ENOTTY
    size = 36 if request == TCGETS else 8       # struct termios (kernel) / struct winsize
    host_req = termios.TCGETS if request == TCGETS else termios.TIOCGWINSZ
    ctx.mem.write(arg, fcntl.ioctl(file.host_fd, host_req, bytes(size)))
    return 0
