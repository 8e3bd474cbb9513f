"""Reading and writing descriptors: read, write, readv, writev, pread64, pwrite64.

Pipes are kernel objects (emu/kernel/pipes.py): a reader of an empty pipe or a
writer of a full one blocks its thread in REPLY, and the other threads run. A host
descriptor that can wait (the emulator's stdin, a terminal, a host pipe) is asked
first; if it is not ready the thread waits the same way (emu/kernel/hostio.py).
Regular files go through the page cache and never wait.

Every count is bounded as Linux bounds it (MAX_RW_COUNT), and an emulator call moves
at most 1 MiB (a short read or write, which POSIX allows) — except a blocking pipe
write, which returns only when everything is written.
"""
from __future__ import annotations

import errno
import os
import signal
import stat as stat_mod
import struct

from emu.kernel.devices import SeededRandom
from emu.kernel.files import OpenFile
from emu.kernel.hostio import POLLIN, POLLOUT, host_events
from emu.kernel.pipes import BrokenPipe, PipeEnd
from emu.kernel.process import ThreadState
from emu.kernel.resources import RLIM_INFINITY, RLIMIT_FSIZE
from emu.kernel.signals import SI_KERNEL, SI_USER, SigInfo
from emu.kernel.syscalls import SyscallContext, syscall, to_int32, to_signed
from emu.kernel.waitq import eintr

IO_CHUNK = 1 << 20          # host memory one read or write step uses (regular files take many)
MAX_RW_COUNT = 0x7FFFF000   # Linux's cap on one read or write
IOV_MAX = 1024
SSIZE_MAX = (1 << 63) - 1
O_PATH = 0o10000000
O_APPEND = 0o2000                  # the same value on x86-64 and AArch64


def _file(ctx: SyscallContext, fd: int) -> OpenFile:
    """The open file of `fd` (EBADF if none, or an O_PATH descriptor)."""
    file = ctx.proc.fds.get(to_int32(fd))
    if file.guest_flags & O_PATH:
        raise OSError(errno.EBADF, "an O_PATH descriptor")
    return file


def read_from(ctx: SyscallContext, file: OpenFile, count: int,
              offset: int | None = None) -> bytes | None:
    """Up to `count` bytes of `file` (at `offset`, if given); None if the thread now waits."""
    count = min(count, MAX_RW_COUNT, IO_CHUNK)
    obj = file.kernel_object
    if isinstance(obj, PipeEnd):
        if offset is not None:
            raise OSError(errno.ESPIPE, "pipe")
        if not obj.reads:
            raise OSError(errno.EBADF, "write end")
        data = obj.rpipe.read(count)
        if data is None:
            if file.nonblocking:
                raise OSError(errno.EAGAIN, "empty")
            ctx.blocking.wait(ctx.thread, [obj.rpipe.readable], ThreadState.REPLY)
        return data
    if isinstance(obj, SeededRandom):
        return obj.read(count)
    if obj is not None:
        raise OSError(errno.EINVAL, "not readable")
    if count and offset is None and file.may_block and not host_events(file.host_fd, POLLIN):
        if file.nonblocking:
            raise OSError(errno.EAGAIN, "nothing to read")
        ctx.blocking.wait(ctx.thread, [ctx.host.queue(file.host_fd, POLLIN)], ThreadState.REPLY)
        return None
    error = count and ctx.memory.store.check(ctx.proc.pid, ctx.thread.tid, False, "read",
                                             file.guest_path, file.host_fd)
    if error:
        raise OSError(error, "the backing store failed the read")
    return ctx.memory.page_cache.read(file.host_fd, count, offset)


def write_to(ctx: SyscallContext, file: OpenFile, data: bytes,
             offset: int | None = None) -> int | None:
    """Write `data` to `file` (at `offset`, if given): the count, or None if the thread now
    waits (a pipe write that does not fit; the part written is kept in `Thread.resume`)."""
    obj = file.kernel_object
    if isinstance(obj, PipeEnd):
        if offset is not None:
            raise OSError(errno.ESPIPE, "pipe")
        if not obj.writes:
            raise OSError(errno.EBADF, "read end")
        return _pipe_write(ctx, file, obj, data)
    if isinstance(obj, SeededRandom):
        return obj.write(data)
    if obj is not None:
        raise OSError(errno.EINVAL, "not writable")
    if data and offset is None and file.may_block and not host_events(file.host_fd, POLLOUT):
        if file.nonblocking:
            raise OSError(errno.EAGAIN, "no room")
        ctx.blocking.wait(ctx.thread, [ctx.host.queue(file.host_fd, POLLOUT)], ThreadState.REPLY)
        return None
    data = within_fsize(ctx, file, data, offset)
    return ctx.memory.page_cache.write(file.host_fd, data, offset)


def exceeds_fsize(ctx: SyscallContext, end: int) -> bool:
    """Whether a file would grow past the caller's RLIMIT_FSIZE to `end` bytes; if so the
    thread gets SIGXFSZ (the call then fails with EFBIG, as Linux's)."""
    limit = ctx.proc.res.limits[RLIMIT_FSIZE][0]
    if end <= limit:
        return False
    ctx.signals.send(ctx.proc, SigInfo(signal.SIGXFSZ, SI_KERNEL), ctx.thread)
    return True


def within_fsize(ctx: SyscallContext, file: OpenFile, data: bytes,
                 offset: int | None) -> bytes:
    """The part of a write to a regular file that RLIMIT_FSIZE allows: all of it, the part
    below the limit (a short write), or EFBIG with SIGXFSZ when it starts at the limit."""
    limit = ctx.proc.res.limits[RLIMIT_FSIZE][0]
    if limit == RLIM_INFINITY or not data:
        return data
    start = offset if offset is not None else (
        os.fstat(file.host_fd).st_size if file.guest_flags & O_APPEND
        else os.lseek(file.host_fd, 0, os.SEEK_CUR))
    if start + len(data) <= limit or not stat_mod.S_ISREG(os.fstat(file.host_fd).st_mode):
        return data
    if start >= limit:
        exceeds_fsize(ctx, start + len(data))
        raise OSError(errno.EFBIG, "file size limit")
    return data[:limit - start]


def _pipe_write(ctx: SyscallContext, file: OpenFile, end: PipeEnd, data: bytes) -> int | None:
    thread = ctx.thread
    done = thread.resume or 0               # bytes this call already put in the pipe
    while done < len(data):
        try:
            n = end.wpipe.write(data[done:])
        except BrokenPipe:
            if done:
                return done
            ctx.signals.send(ctx.proc, SigInfo(signal.SIGPIPE, SI_USER, pid=ctx.proc.pid,
                                               uid=ctx.proc.uid), thread)
            return -errno.EPIPE
        if n is None:
            if file.nonblocking:
                return done or -errno.EAGAIN
            thread.resume = done
            progress = done
            ctx.blocking.wait(thread, [end.wpipe.writable], ThreadState.REPLY,
                              interrupted=lambda: (progress, None) if progress else eintr())
            return None
        done += n
    return done


def _count(count: int) -> int:
    if count > SSIZE_MAX:
        raise OSError(errno.EINVAL, "count")
    return count


def _offset(offset: int) -> int:
    offset = to_signed(offset)
    if offset < 0:
        raise OSError(errno.EINVAL, "negative offset")
    return offset


def _is_regular(file: OpenFile) -> bool:
    """A regular file (or directory): its reads and writes are whole, done chunk by chunk."""
    return file.kernel_object is None and not file.may_block


def _read_whole(ctx: SyscallContext, file: OpenFile, buf: int, count: int,
                offset: int | None) -> int | None:
    """read/pread of `count` bytes into `buf`: all of them from a regular file (up to its
    end), IO_CHUNK bytes of host memory at a time; one partial read from anything else."""
    count = min(count, MAX_RW_COUNT)
    done = 0
    while True:
        want = min(count - done, IO_CHUNK)
        data = read_from(ctx, file, want, None if offset is None else offset + done)
        if data is None:
            return None
        ctx.mem.write(buf + done, data)
        done += len(data)
        if len(data) < want or done >= count or not _is_regular(file):
            return done


def _write_whole(ctx: SyscallContext, file: OpenFile, buf: int, count: int,
                 offset: int | None) -> int | None:
    """write/pwrite of `count` bytes from `buf`: all of them to a regular file (unless a
    limit cuts it short), IO_CHUNK bytes at a time; a pipe's write whole (its own rules)."""
    count = min(count, MAX_RW_COUNT)
    if isinstance(file.kernel_object, PipeEnd) or not _is_regular(file):
        limit = count if isinstance(file.kernel_object, PipeEnd) else min(count, IO_CHUNK)
        return write_to(ctx, file, ctx.mem.read(buf, limit), offset)
    done = 0
    while True:
        want = min(count - done, IO_CHUNK)
        try:
            n = write_to(ctx, file, ctx.mem.read(buf + done, want),
                         None if offset is None else offset + done)
        except OSError:
            if done:
                return done                 # (EFBIG, ENOSPC after some bytes: a short write)
            raise
        assert n is not None, "a regular file never waits"
        done += n
        if n < want or done >= count:
            return done


@syscall("read")
def sys_read(ctx: SyscallContext, fd: int, buf: int, count: int, *_: int) -> int | None:
    """Read from a descriptor into guest memory."""
    return _read_whole(ctx, _file(ctx, fd), buf, _count(count), None)


@syscall("write")
def sys_write(ctx: SyscallContext, fd: int, buf: int, count: int, *_: int) -> int | None:
    """Write guest memory to a descriptor."""
    return _write_whole(ctx, _file(ctx, fd), buf, _count(count), None)


@syscall("pread64")
def sys_pread64(ctx: SyscallContext, fd: int, buf: int, count: int, offset: int, *_: int) -> int:
    """Read at an offset without moving the file position."""
    n = _read_whole(ctx, _file(ctx, fd), buf, _count(count), _offset(offset))
    assert n is not None, "a positioned read never waits"
    return n


@syscall("pwrite64")
def sys_pwrite64(ctx: SyscallContext, fd: int, buf: int, count: int, offset: int, *_: int) -> int:
    """Write at an offset without moving the file position."""
    file = _file(ctx, fd)
    offset = _offset(offset)
    count = _count(count)
    if offset + min(count, IO_CHUNK) > SSIZE_MAX:
        raise OSError(errno.EFBIG, "past the largest offset")
    written = _write_whole(ctx, file, buf, count, offset)
    assert written is not None, "a positioned write never waits"
    return written


def iovecs(ctx: SyscallContext, iov: int, iovcnt: int, limit: int) -> list[tuple[int, int]]:
    """The (base, length) buffers of an iovec array, cut to `limit` bytes in all (EINVAL for a
    bad count or a total past SSIZE_MAX, as Linux checks)."""
    iovcnt = to_int32(iovcnt)
    if not 0 <= iovcnt <= IOV_MAX:
        raise OSError(errno.EINVAL, "bad iovcnt")
    raw = ctx.mem.read(iov, 16 * iovcnt)
    vecs = [struct.unpack_from("<QQ", raw, 16 * i) for i in range(iovcnt)]
    total, out = 0, []
    for base, length in vecs:
        if length > SSIZE_MAX or total + length > SSIZE_MAX:
            raise OSError(errno.EINVAL, "iovec length")
        total += length
    left = limit
    for base, length in vecs:
        take = min(length, left)
        if take:
            out.append((base, take))
            left -= take
    return out


@syscall("writev")
def sys_writev(ctx: SyscallContext, fd: int, iov: int, iovcnt: int, *_: int) -> int | None:
    """Gather-write: one write of all the buffers."""
    file = _file(ctx, fd)
    limit = MAX_RW_COUNT if isinstance(file.kernel_object, PipeEnd) else IO_CHUNK
    data = b"".join(ctx.mem.read(base, length) for base, length in iovecs(ctx, iov, iovcnt, limit))
    return write_to(ctx, file, data)


@syscall("readv")
def sys_readv(ctx: SyscallContext, fd: int, iov: int, iovcnt: int, *_: int) -> int | None:
    """Scatter-read: one read spread over the buffers."""
    file = _file(ctx, fd)
    vecs = iovecs(ctx, iov, iovcnt, IO_CHUNK)
    data = read_from(ctx, file, sum(n for _, n in vecs))
    return None if data is None else scatter(ctx, vecs, data)


def scatter(ctx: SyscallContext, vecs: list[tuple[int, int]], data: bytes) -> int:
    """Spread `data` over the (base, length) buffers in order; the bytes placed."""
    done = 0
    for base, length in vecs:
        part = data[done:done + length]
        if not part:
            break
        ctx.mem.write(base, part)
        done += len(part)
    return done


# ---- copying between descriptors ----

def _room_for(ctx: SyscallContext, out: OpenFile, count: int) -> int | None:
    """How much may be written to `out` without waiting (None: the thread now waits for
    room), so that data taken from the input is never lost to a blocked write."""
    obj = out.kernel_object
    if isinstance(obj, PipeEnd):
        pipe = obj.wpipe
        if pipe.readers == 0 or pipe.room:
            return min(count, pipe.room) if pipe.readers else count
        if out.nonblocking:
            raise OSError(errno.EAGAIN, "no room")
        ctx.blocking.wait(ctx.thread, [pipe.writable], ThreadState.REPLY)
        return None
    if out.may_block and not host_events(out.host_fd, POLLOUT):
        if out.nonblocking:
            raise OSError(errno.EAGAIN, "no room")
        ctx.blocking.wait(ctx.thread, [ctx.host.queue(out.host_fd, POLLOUT)], ThreadState.REPLY)
        return None
    return count


def _copy(ctx: SyscallContext, src: OpenFile, dst: OpenFile, count: int, in_off: int | None,
          out_off: int | None) -> int | None:
    """Copy up to `count` bytes: between files all of it (up to MAX_RW_COUNT, 1 MiB at a
    time); to or from anything that can wait, what can move now without losing data."""
    count = min(_count(count), MAX_RW_COUNT)
    if count == 0:
        return 0
    if _plain(src) and _plain(dst):
        done = 0
        while done < count:
            data = read_from(ctx, src, min(count - done, IO_CHUNK),
                             None if in_off is None else in_off + done)
            if not data:
                break
            written = write_to(ctx, dst, data, None if out_off is None else out_off + done)
            assert written is not None
            done += written
            if written < len(data):
                break
        return done
    count = min(count, IO_CHUNK)
    room = _room_for(ctx, dst, count)
    if room is None:
        return None
    data = read_from(ctx, src, room, in_off)
    if data is None:
        return None
    if not data:
        return 0
    written = write_to(ctx, dst, data, out_off)
    assert written is not None, "the room was checked first"
    return written


def _plain(file: OpenFile) -> bool:
    """A file that never waits (not a pipe, socket, terminal or the emulator's stdio)."""
    return file.kernel_object is None and not file.may_block and not file.is_std


@syscall("sendfile")
def sys_sendfile(ctx: SyscallContext, out_fd: int, in_fd: int, offset_ptr: int, count: int,
                 *_: int) -> int | None:
    """Copy from one descriptor to another in the kernel (at *offset, which moves, if given)."""
    src, dst = _file(ctx, in_fd), _file(ctx, out_fd)
    if src.guest_flags & 0o3 == 1 or dst.guest_flags & 0o3 == 0:
        return -errno.EBADF                 # in_fd not readable, out_fd not writable
    if dst.guest_flags & os.O_APPEND:
        return -errno.EINVAL
    if isinstance(src.kernel_object, PipeEnd) and offset_ptr:
        return -errno.ESPIPE
    offset = None
    if offset_ptr:
        offset = _offset(struct.unpack("<Q", ctx.mem.read(offset_ptr, 8))[0])
    done = _copy(ctx, src, dst, count, offset, None)
    if done is not None and offset_ptr and done >= 0:
        ctx.mem.write(offset_ptr, struct.pack("<q", offset + done))
    return done


@syscall("copy_file_range")
def sys_copy_file_range(ctx: SyscallContext, in_fd: int, in_off: int, out_fd: int, out_off: int,
                        count: int, flags: int) -> int | None:
    """Copy a range between two regular files (EINVAL for flags or anything else)."""
    if flags:
        return -errno.EINVAL
    src, dst = _file(ctx, in_fd), _file(ctx, out_fd)
    for file in (src, dst):
        if file.kernel_object is not None or file.may_block or file.is_std:
            return -errno.EINVAL
    if dst.guest_flags & os.O_APPEND:
        return -errno.EBADF
    offsets = [None if not p else _offset(struct.unpack("<Q", ctx.mem.read(p, 8))[0])
               for p in (in_off, out_off)]
    done = _copy(ctx, src, dst, count, offsets[0], offsets[1])
    for ptr, off in zip((in_off, out_off), offsets):
        if ptr and off is not None and done:
            ctx.mem.write(ptr, struct.pack("<q", off + done))
    return done
