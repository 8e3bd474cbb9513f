"""File system calls: descriptors (open, close, dup, fcntl, pipes, ioctl...) over the guest root;
reading and writing them is in rw.py."""
from __future__ import annotations

import errno
import fcntl
import os
import posixpath
import stat as stat_mod
import struct
import termios
from dataclasses import dataclass

from emu.kernel.devices import is_device, open_device
from emu.kernel.files import O_CLOEXEC, O_NONBLOCK, OpenFile, host_open_flags
from emu.kernel.locks import F_RDLCK, F_UNLCK, F_WRLCK, OFFSET_MAX, LockOwner, LockTable
from emu.kernel.perms import W_OK, X_OK, may, may_search, open_access
from emu.kernel.pipes import MAX_PIPE_SIZE, Pipe, PipeEnd, pipe_size_for
from emu.kernel.process import ThreadState
from emu.kernel.procfs import ProcFs
from emu.kernel.synthetic import is_magic_link
from emu.kernel.signals import Restart
from emu.kernel.syscalls import SyscallContext, syscall, to_int32, to_signed
from emu.mm.uaccess import BadAddress

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW, AT_REMOVEDIR, AT_EMPTY_PATH = 0x100, 0x200, 0x1000
F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC = 0, 1, 2, 3, 4, 1030
F_SETPIPE_SZ, F_GETPIPE_SZ = 1031, 1032
F_GETLK, F_SETLK, F_SETLKW, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW = 5, 6, 7, 36, 37, 38
_LOCK_COMMANDS = (F_GETLK, F_SETLK, F_SETLKW, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW)
O_DIRECT_ANY = 0o40000 | 0o200000     # O_DIRECT (x86-64 / AArch64): packet pipes, ignored
FD_CLOEXEC = 1
TCGETS, TIOCGWINSZ, FIONREAD = 0x5401, 0x5413, 0x541B
SEEK_END = 2


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
    device = posixpath.normpath(posixpath.join(_base_dir(ctx, dirfd), path_arg(ctx, path_ptr)))
    if is_device(device):
        file = open_device(device, flags, host_flags, ctx.proc.fds, ctx.threads.random_bytes)
    elif ProcFs.covers(device) and not is_magic_link(device):
        file = _open_proc(ctx, device, flags, host_flags)
    else:
        canon, host = resolve_arg(ctx, dirfd, path_ptr, follow=not nofollow)
        creates = bool(host_flags & os.O_CREAT) and not os.path.lexists(host)
        _check_open_permission(ctx, host, flags, creates)
        if not creates and _is_fifo(host) and not host_flags & (os.O_DIRECTORY | os.O_PATH):
            return _open_fifo(ctx, canon, host, flags)     # (O_DIRECTORY: ENOTDIR at once)
        fd = os.open(host, host_flags | os.O_CLOEXEC, mode & 0o7777 & ~ctx.proc.umask)
        file = OpenFile(fd, canon, flags)
        if creates:
            from emu.kernel.syscalls.fsextra import adopt_created   # (it imports this module)
            adopt_created(ctx, host)        # the guest's fsuid and fsgid own it
    try:
        return ctx.proc.fds.install(file, cloexec=bool(flags & O_CLOEXEC))
    except OSError:
        file.close()
        raise


def _check_open_permission(ctx: SyscallContext, host: str, flags: int, creates: bool) -> None:
    """EACCES if the guest's credentials may not open `host` so (or create it in its
    directory); root with CAP_DAC_OVERRIDE may (perms.py)."""
    creds = ctx.proc.creds
    if creds.fsuid == 0 and getattr(creds, "cap_effective", 1):
        return                                  # the common case: a privileged guest
    root = ctx.proc.root
    if not may_search(creds, root, root.guest_path_of(host) or "/"):
        raise OSError(errno.EACCES, "cannot search a directory on the way")
    if creates:
        parent = os.stat(os.path.dirname(host) or "/")
        if not may(creds, parent, root.owner_of(parent), W_OK | X_OK):
            raise OSError(errno.EACCES, "cannot create there")
        return
    try:
        st = os.stat(host)
    except OSError:
        return                                  # the open itself reports it
    if flags & 0o10000000:                      # O_PATH: no access to the file itself
        return
    if not may(creds, st, root.owner_of(st), open_access(flags)):
        raise OSError(errno.EACCES, "permission denied")


def _is_fifo(host: str) -> bool:
    try:
        return stat_mod.S_ISFIFO(os.stat(host).st_mode)
    except OSError:
        return False


@dataclass
class FifoOpen:
    """A FIFO open waiting for the other end (kept in `Thread.resume` across retries)."""

    file: OpenFile
    peer_opens: int             # the other end's open count when this open began


def _open_fifo(ctx: SyscallContext, canon: str, host: str, flags: int) -> int | None:
    """Open a named FIFO: the kernel pipe behind it (pipes.py). A reader waits for a writer
    and a writer for a reader (REPLY), unless O_NONBLOCK (a writer then gets ENXIO);
    O_RDWR never waits."""
    thread, mode = ctx.thread, flags & 0o3
    pending = thread.resume
    if not isinstance(pending, FifoOpen):
        st = os.stat(host)
        pipe = ctx.fifos.pipe_of((st.st_dev, st.st_ino), ctx.blocking.wake)
        reads, writes = mode in (0, 2), mode in (1, 2)
        if mode == 1 and pipe.readers == 0 and flags & O_NONBLOCK:
            return -errno.ENXIO
        # the anchor: the host FIFO itself, opened so that it never blocks (fstat, lseek)
        anchor = os.open(host, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        file = OpenFile(anchor, canon, flags, kernel_object=PipeEnd(pipe, reads, writes))
        for end in ((False,) if reads else ()) + ((True,) if writes else ()):
            pipe.open_end(end)
        pending = FifoOpen(file, pipe.writer_opens if mode == 0 else pipe.reader_opens)
    end = pending.file.kernel_object
    assert isinstance(end, PipeEnd)
    pipe = end.pipe
    peer_now = pipe.writer_opens if mode == 0 else pipe.reader_opens
    peers = pipe.writers if mode == 0 else pipe.readers
    if mode != 2 and not flags & O_NONBLOCK and not peers and peer_now == pending.peer_opens:
        thread.resume = pending
        file = pending.file

        def interrupted() -> tuple[int, Restart | None]:
            file.close()                        # this end was never handed out
            return -errno.EINTR, Restart.RESTARTSYS
        ctx.blocking.wait(thread, [pipe.opens], ThreadState.REPLY, interrupted=interrupted)
        return None
    try:
        return ctx.proc.fds.install(pending.file, cloexec=bool(flags & O_CLOEXEC))
    except OSError:
        pending.file.close()
        raise


def _open_proc(ctx: SyscallContext, path: str, flags: int, host_flags: int) -> OpenFile:
    """An open file of a /proc entry: a snapshot of a file, a directory listing, or one of
    the process's descriptors opened again (fd/N)."""
    entry = ctx.procfs.lookup(path, ctx.proc, ctx.thread)
    if entry is None:
        raise OSError(errno.ENOENT, "no such /proc entry")
    if entry.kind == "fd":
        assert entry.owner is not None
        source = entry.owner.fds.get(entry.fd)
        if source.kernel_object is not None or source.is_std:
            source.refs += 1
            return source
        return OpenFile(os.open(f"/proc/self/fd/{source.host_fd}", host_flags | os.O_CLOEXEC),
                        source.guest_path, flags)
    if flags & 0o3:
        raise OSError(errno.EACCES, "/proc is read-only")
    if entry.kind == "dir":
        anchor = os.open(ctx.proc.root.host_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        file = OpenFile(anchor, path, flags)
        file.dir_entries = [(name, 1, dtype) for name, dtype in
                            (*entry.entries[::-1], ("..", 4), (".", 4))]
        return file
    if host_flags & os.O_DIRECTORY:
        raise OSError(errno.ENOTDIR, "not a directory")
    fd = os.memfd_create("proc", os.MFD_CLOEXEC)
    os.write(fd, entry.data)
    os.lseek(fd, 0, os.SEEK_SET)
    return OpenFile(fd, path, flags)


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


def release_locks(ctx: SyscallContext, file: OpenFile) -> None:
    """`file` is about to lose a descriptor: release the record locks that go with it."""
    if not ctx.locks or file.kernel_object is not None or file.is_std:
        return
    key = LockTable.key(file)
    for owner in (LockOwner(ctx.proc.pid), *((LockOwner(0, file),) if file.refs == 1 else ())):
        woken = ctx.locks.drop(key, owner)
        if woken is not None:
            ctx.blocking.wake(woken)


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
    if cmd in _LOCK_COMMANDS:
        return _record_lock(ctx, fds.get(fd), cmd, arg)
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


def _pipe_size(ctx: SyscallContext, file: OpenFile, cmd: int, arg: int) -> int:
    """F_GETPIPE_SZ / F_SETPIPE_SZ: the capacity (a power of two pages up to pipe-max-size;
    more needs root; EBUSY if the data would not fit)."""
    end = file.kernel_object
    if not isinstance(end, PipeEnd):
        return -errno.EBADF
    if cmd == F_GETPIPE_SZ:
        return end.pipe.capacity
    request = arg & 0xFFFFFFFF
    if request > 1 << 31:
        return -errno.EINVAL
    size = pipe_size_for(request)
    if size > MAX_PIPE_SIZE and ctx.proc.creds.euid != 0:
        return -errno.EPERM
    if not end.pipe.resize(size):
        return -errno.EBUSY
    return size


@syscall("pipe2")
def sys_pipe2(ctx: SyscallContext, fds_ptr: int, flags: int, *_: int) -> int:
    """A kernel pipe (emu/kernel/pipes.py) as two guest descriptors."""
    if flags & ~(O_CLOEXEC | O_NONBLOCK | O_DIRECT_ANY):
        return -errno.EINVAL
    fds = ctx.proc.fds
    pipe = Pipe(ctx.blocking.wake)
    cloexec = bool(flags & O_CLOEXEC)
    nonblock = flags & O_NONBLOCK
    anchor_r, anchor_w = os.pipe2(os.O_CLOEXEC)    # host pipe ends: fstat and lseek only
    ends = []
    for anchor, write in ((anchor_r, False), (anchor_w, True)):
        pipe.open_end(write)
        ends.append(OpenFile(anchor, "pipe:[%d]" % os.fstat(anchor).st_ino, int(write) | nonblock,
                             kernel_object=PipeEnd(pipe, reads=not write, writes=write)))
    try:
        rfd = fds.install(ends[0], cloexec=cloexec)
    except OSError:
        for end in ends:
            end.close()
        raise
    try:
        wfd = fds.install(ends[1], cloexec=cloexec)
    except OSError:
        fds.close(rfd)
        ends[1].close()
        raise
    try:
        ctx.mem.write(fds_ptr, struct.pack("<ii", rfd, wfd))
    except BadAddress:
        fds.close(rfd)
        fds.close(wfd)
        raise
    return 0


@syscall("pipe")
def sys_pipe(ctx: SyscallContext, fds_ptr: int, *_: int) -> int:
    """pipe(2) (x86-64 only)."""
    return sys_pipe2(ctx, fds_ptr, 0)


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
