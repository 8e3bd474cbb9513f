"""Sockets: AF_UNIX socketpair as two kernel pipes, one each way; no networking.

A socketpair end reads one pipe and writes the other (emu/kernel/pipes.py), so it blocks,
polls and ends (EOF, EPIPE) as a pipe does; SOCK_DGRAM pairs are carried the same way
(message boundaries are not kept). shutdown closes one direction. `socket` gives
EAFNOSUPPORT for every family: a guest has no network, and no AF_UNIX name space (bind
and connect of named sockets) is modelled.
"""
from __future__ import annotations

import errno
import os
import socket
import struct

from emu.kernel.files import O_CLOEXEC, O_NONBLOCK, OpenFile
from emu.kernel.pipes import Pipe, PipeEnd
from emu.kernel.syscalls import SyscallContext, syscall, to_int32
from emu.kernel.syscalls.fs import hand_out_pair
from emu.kernel.syscalls.rw import read_from, write_to

AF_UNIX = 1
SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET = 1, 2, 5
SOCK_TYPE_MASK = 0xF
SHUT_RD, SHUT_WR, SHUT_RDWR = 0, 1, 2


@syscall("socket")
def sys_socket(ctx: SyscallContext, family: int, kind: int, protocol: int, *_: int) -> int:
    """No address family is offered (a guest has no network)."""
    return -errno.EAFNOSUPPORT


@syscall("socketpair")
def sys_socketpair(ctx: SyscallContext, family: int, kind: int, protocol: int, sv: int,
                   *_: int) -> int:
    """Two connected AF_UNIX sockets."""
    family, kind = to_int32(family), to_int32(kind)
    if family != AF_UNIX:
        return -errno.EAFNOSUPPORT
    if kind & SOCK_TYPE_MASK not in (SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET) or \
            kind & ~(SOCK_TYPE_MASK | O_CLOEXEC | O_NONBLOCK):
        return -errno.EINVAL
    if to_int32(protocol) not in (0, AF_UNIX):
        return -errno.EPROTONOSUPPORT
    a_to_b, b_to_a = Pipe(ctx.blocking.wake), Pipe(ctx.blocking.wake)
    ends = []
    for rx, tx in ((b_to_a, a_to_b), (a_to_b, b_to_a)):
        rx.open_end(write=False)
        tx.open_end(write=True)
        anchor = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # fstat: S_IFSOCK
        fd = anchor.detach()
        ends.append(OpenFile(fd, "socket:[%d]" % os.fstat(fd).st_ino, 2 | (kind & O_NONBLOCK),
                             kernel_object=PipeEnd(rx, reads=True, writes=True, peer=tx)))
    return hand_out_pair(ctx, ends[0], ends[1], bool(kind & O_CLOEXEC), sv)


def _socket_end(ctx: SyscallContext, fd: int) -> tuple[OpenFile, PipeEnd]:
    file = ctx.proc.fds.get(to_int32(fd))
    end = file.kernel_object
    if not isinstance(end, PipeEnd) or end.peer is None:
        raise OSError(errno.ENOTSOCK, "not a socket")
    return file, end


@syscall("shutdown")
def sys_shutdown(ctx: SyscallContext, fd: int, how: int, *_: int) -> int:
    """Stop reading (SHUT_RD), writing (SHUT_WR) or both."""
    how = to_int32(how)
    if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
        return -errno.EINVAL
    _file, end = _socket_end(ctx, fd)
    end.shutdown(read=how in (SHUT_RD, SHUT_RDWR), write=how in (SHUT_WR, SHUT_RDWR))
    return 0


@syscall("sendto")
def sys_sendto(ctx: SyscallContext, fd: int, buf: int, length: int, flags: int, addr: int,
               addrlen: int) -> int | None:
    """send/sendto on a connected socket (an address is EISCONN)."""
    file, _end = _socket_end(ctx, fd)
    if addr:
        return -errno.EISCONN
    return write_to(ctx, file, ctx.mem.read(buf, min(length, 1 << 20)))


@syscall("recvfrom")
def sys_recvfrom(ctx: SyscallContext, fd: int, buf: int, length: int, flags: int, addr: int,
                 addrlen: int) -> int | None:
    """recv/recvfrom on a connected socket (no peer address is reported)."""
    file, _end = _socket_end(ctx, fd)
    data = read_from(ctx, file, length)
    if data is None:
        return None
    ctx.mem.write(buf, data)
    if addrlen:
        ctx.mem.write(addrlen, struct.pack("<I", 0))
    return len(data)


@syscall("connect", "bind", "listen", "accept", "accept4", "getsockname", "getpeername",
         "setsockopt", "getsockopt", "sendmsg", "recvmsg")
def sys_socket_other(ctx: SyscallContext, fd: int, *_: int) -> int:
    """Calls on named or listening sockets: ENOTSOCK for other descriptors, else EOPNOTSUPP."""
    _socket_end(ctx, fd)
    return -errno.EOPNOTSUPP
