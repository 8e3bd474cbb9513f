"""Opening what is not a plain file: named FIFOs (the kernel pipe behind them), /proc
entries, and the permission checks an unprivileged guest's open must pass."""
from __future__ import annotations

import errno
import os
import stat as stat_mod
from dataclasses import dataclass

from emu.kernel.files import O_CLOEXEC, O_NONBLOCK, OpenFile
from emu.kernel.perms import CAP_FOWNER, W_OK, X_OK, may, may_search, open_access
from emu.kernel.pipes import PipeEnd
from emu.kernel.process import ThreadState
from emu.kernel.signals import Restart
from emu.kernel.syscalls import SyscallContext


O_NOATIME = 0o1000000                   # the same value on x86-64 and AArch64


def check_open_permission(ctx: SyscallContext, canon: str, host: str, flags: int,
                           creates: bool) -> None:
    """EACCES if the guest's credentials may not open `host` so (or create it in its
    directory); root with CAP_DAC_OVERRIDE may (perms.py)."""
    creds = ctx.proc.creds
    if creds.fsuid == 0 and getattr(creds, "cap_effective", 1):
        return                                  # the common case: a privileged guest
    root = ctx.proc.root
    if not may_search(creds, root, canon):
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
    if flags & O_NOATIME and creds.fsuid != root.owner_of(st)[0] \
            and not getattr(creds, "cap_effective", 0) >> CAP_FOWNER & 1:
        raise OSError(errno.EPERM, "O_NOATIME on a file one does not own")
    if not may(creds, st, root.owner_of(st), open_access(flags)):
        raise OSError(errno.EACCES, "permission denied")


def is_fifo(host: str) -> bool:
    try:
        return stat_mod.S_ISFIFO(os.stat(host).st_mode)
    except OSError:
        return False


@dataclass
class FifoOpen:
    """A FIFO open waiting for the other end (kept in `Thread.resume` across retries)."""

    file: OpenFile
    peer_opens: int             # the other end's open count when this open began


def open_fifo(ctx: SyscallContext, canon: str, host: str, flags: int) -> int | None:
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


def open_proc(ctx: SyscallContext, path: str, flags: int, host_flags: int) -> OpenFile:
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
    if entry.kind == "sparse":                  # (pagemap) mostly holes, read as zeros
        os.ftruncate(fd, entry.size)
        for offset, chunk in entry.chunks:
            os.pwrite(fd, chunk, offset)
    os.write(fd, entry.data)
    os.lseek(fd, 0, os.SEEK_SET)
    return OpenFile(fd, path, flags)


