"""Waiting for descriptors: poll, ppoll, select, pselect6 and the epoll family.

Readiness comes from emu/kernel/readiness.py (pipes, epoll instances, host
descriptors, regular files). A caller with nothing ready blocks its thread on the
wait queues of every descriptor it asked about (QNX: a client of the resource
managers, in REPLY), with a timer for its timeout, and runs the call again when
one is woken; the deadline it chose the first time is kept in `Thread.resume`, so
a retried call does not wait longer than asked. A signal ends the wait with
EINTR (poll and select are not restarted after a handler, as on Linux:
-ERESTARTNOHAND). ppoll and pselect6 install their signal mask for the wait.

epoll entries are level-triggered unless EPOLLET: an edge-triggered entry is reported
again only after one of its wait queues was woken since (a write, a read, a close: see
WaitQueue.generation). EPOLLONESHOT disarms an entry once it is reported, and reported
entries go to the back of the list, so that a caller with a small `maxevents` sees every
ready descriptor in turn (Linux's ready-list rotation). A waiter on an EPOLLEXCLUSIVE
entry is woken alone.
"""
from __future__ import annotations

import errno
import struct
from dataclasses import dataclass, field

from emu.kernel.files import O_CLOEXEC, OpenFile
from emu.kernel.hostio import POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, POLLPRI, HostPoller
from emu.kernel.process import ThreadState
from emu.kernel.readiness import Watchable, events_of, queues_of
from emu.kernel.signals import Restart
from emu.kernel.syscalls import SyscallContext, syscall, to_int32
from emu.kernel.syscalls.threads import read_timespec
from emu.kernel.waitq import WaitQueue

MAX_FDS = 1024
EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD = 1, 2, 3
_UNPOLLABLE = ("/dev/null", "/dev/zero", "/dev/full")     # Linux's mem devices: no ->poll
EPOLLONESHOT, EPOLLET, EPOLLEXCLUSIVE = 1 << 30, 1 << 31, 1 << 28
_EVENT_SIZE = {"x86_64": 12, "aarch64": 16}     # struct epoll_event is packed on x86-64
_SELECT_READ = POLLIN | POLLHUP | POLLERR
_SELECT_WRITE = POLLOUT | POLLERR


def _no_restart() -> tuple[int, Restart | None]:
    return -errno.EINTR, Restart.RESTARTNOHAND


@dataclass
class PollCall:
    """What a blocked poll-family call keeps across its retries."""

    deadline: int | None                  # cycles; None: no timeout
    mask_set: bool = False                # its signal mask was installed


def _begin(ctx: SyscallContext, timeout_ns: int | None, mask: int | None) -> PollCall:
    """The call's state: the one of its first attempt if it is being retried."""
    call = ctx.thread.resume
    if isinstance(call, PollCall):
        return call
    deadline = None if timeout_ns is None else ctx.clock.cycles(ctx.clock.now_ns() + timeout_ns)
    call = PollCall(deadline)
    if mask is not None:
        sig = ctx.thread.sig
        sig.saved_mask = sig.mask
        ctx.signals.set_mask(ctx.thread, mask)
        call.mask_set = True
    return call


def _finish(ctx: SyscallContext, call: PollCall) -> None:
    """The call returns without a signal: its mask goes back."""
    sig = ctx.thread.sig
    if call.mask_set and sig.saved_mask is not None:
        ctx.signals.set_mask(ctx.thread, sig.saved_mask)
        sig.saved_mask = None


def _wait_or_finish(ctx: SyscallContext, call: PollCall, queues: list[WaitQueue],
                    exclusive: frozenset[int] = frozenset()) -> bool:
    """Block the caller (True; alone on the queues in `exclusive`), or finish the call if
    its time is up (False)."""
    if call.deadline is not None and ctx.clock.now() >= call.deadline:
        _finish(ctx, call)
        return False
    ctx.thread.resume = call
    ctx.blocking.wait(ctx.thread, queues, ThreadState.REPLY, call.deadline, _no_restart,
                      exclusive)
    return True


def _left_ns(ctx: SyscallContext, call: PollCall) -> int:
    assert call.deadline is not None
    return max(0, ctx.clock.nanoseconds(call.deadline - ctx.clock.now()))


def _read_mask(ctx: SyscallContext, addr: int, size: int) -> int | None:
    if not addr:
        return None
    if size != 8:
        raise OSError(errno.EINVAL, "sigset size")
    return struct.unpack("<Q", ctx.mem.read(addr, 8))[0]


# ---- poll ----

def _poll(ctx: SyscallContext, fds_ptr: int, nfds: int, timeout_ns: int | None,
          mask: int | None) -> int | None:
    if nfds > MAX_FDS:
        return -errno.EINVAL
    raw = bytearray(ctx.mem.read(fds_ptr, 8 * nfds))
    call = _begin(ctx, timeout_ns, mask)
    table, ready, queues = ctx.proc.fds, 0, []
    for i in range(nfds):
        fd, events = struct.unpack_from("<ih", raw, 8 * i)
        events &= 0xFFFF
        revents = 0
        if fd >= 0:
            try:
                file = table.get(fd)
            except OSError:
                revents = POLLNVAL
            else:
                revents = events_of(file, events)
                if not revents:
                    queues += queues_of(file, events, ctx.host)
        struct.pack_into("<H", raw, 8 * i + 6, revents)
        ready += revents != 0
    if ready or timeout_ns == 0 or not _wait_or_finish(ctx, call, queues):
        _finish(ctx, call)
        ctx.mem.write(fds_ptr, bytes(raw))
        return ready
    return None


@syscall("poll")
def sys_poll(ctx: SyscallContext, fds: int, nfds: int, timeout_ms: int, *_: int) -> int | None:
    """Wait for events on descriptors (timeout in ms; negative: none)."""
    ms = to_int32(timeout_ms)
    return _poll(ctx, fds, nfds, None if ms < 0 else ms * 1_000_000, None)


@syscall("ppoll")
def sys_ppoll(ctx: SyscallContext, fds: int, nfds: int, tsp: int, sigmask: int, sigsetsize: int,
              *_: int) -> int | None:
    """poll with a timespec timeout and a signal mask for the wait."""
    timeout = None if not tsp else read_timespec(ctx, tsp)
    result = _poll(ctx, fds, nfds, timeout, _read_mask(ctx, sigmask, sigsetsize))
    _write_left(ctx, result, tsp, usec=False)
    return result


# ---- select ----

def _select(ctx: SyscallContext, nfds: int, sets: tuple[int, int, int], timeout_ns: int | None,
            mask: int | None) -> int | None:
    nfds = to_int32(nfds)
    if nfds < 0:
        return -errno.EINVAL
    nfds = min(nfds, MAX_FDS)
    words = (nfds + 63) // 64
    bits = [int.from_bytes(ctx.mem.read(addr, 8 * words), "little") if addr else 0
            for addr in sets]
    call = _begin(ctx, timeout_ns, mask)
    out = [0, 0, 0]
    ready, queues = 0, []
    for fd in range(nfds):
        want = [(b >> fd) & 1 for b in bits]
        if not any(want):
            continue
        try:
            file = ctx.proc.fds.get(fd)
        except OSError:
            _finish(ctx, call)
            return -errno.EBADF
        events = (POLLIN if want[0] else 0) | (POLLOUT if want[1] else 0) | \
                 (POLLPRI if want[2] else 0)
        revents = events_of(file, events)
        got = [want[0] and revents & _SELECT_READ, want[1] and revents & _SELECT_WRITE,
               want[2] and revents & POLLPRI]
        for k in range(3):
            if got[k]:
                out[k] |= 1 << fd
                ready += 1
        if not any(got):
            queues += queues_of(file, events, ctx.host)
    if ready or timeout_ns == 0 or not _wait_or_finish(ctx, call, queues):
        _finish(ctx, call)
        for addr, value in zip(sets, out):
            if addr:
                ctx.mem.write(addr, value.to_bytes(8 * words, "little"))
        return ready
    return None


@syscall("select")
def sys_select(ctx: SyscallContext, nfds: int, rd: int, wr: int, ex: int, tvp: int,
               *_: int) -> int | None:
    """Wait for descriptors in fd_sets; the timeval left is written back, as Linux does."""
    timeout = None
    if tvp:
        sec, usec = struct.unpack("<qq", ctx.mem.read(tvp, 16))
        if sec < 0 or not 0 <= usec < 1_000_000:
            return -errno.EINVAL
        timeout = sec * 10**9 + usec * 1000
    result = _select(ctx, nfds, (rd, wr, ex), timeout, None)
    _write_left(ctx, result, tvp, usec=True)
    return result


@syscall("pselect6")
def sys_pselect6(ctx: SyscallContext, nfds: int, rd: int, wr: int, ex: int, tsp: int,
                 sigdata: int) -> int | None:
    """select with a timespec and a signal mask (passed as {pointer, size})."""
    mask = None
    if sigdata:
        ptr, size = struct.unpack("<QQ", ctx.mem.read(sigdata, 16))
        mask = _read_mask(ctx, ptr, size)
    timeout = None if not tsp else read_timespec(ctx, tsp)
    result = _select(ctx, nfds, (rd, wr, ex), timeout, mask)
    _write_left(ctx, result, tsp, usec=False)
    return result


STICKY_TIMEOUTS = 0x4000000        # personality(2): select leaves its timeout alone


def _write_left(ctx: SyscallContext, result: int | None, addr: int, usec: bool) -> None:
    call = ctx.thread.resume
    if result is None or not addr or not isinstance(call, PollCall) or call.deadline is None \
            or ctx.proc.res.personality & STICKY_TIMEOUTS:
        return
    sec, ns = divmod(_left_ns(ctx, call), 10**9)
    ctx.mem.write(addr, struct.pack("<qq", sec, ns // 1000 if usec else ns))


# ---- epoll ----

@dataclass
class Interest:
    """One descriptor an epoll instance watches."""

    file: OpenFile
    events: int
    data: int
    armed: bool = True
    seen: int = -1          # EPOLLET: the queues' generation when it was last reported


@dataclass(eq=False)
class Epoll(Watchable):
    """An epoll instance: the descriptors it watches, keyed by descriptor number."""

    host: HostPoller
    interests: dict[int, Interest] = field(default_factory=dict)

    def ready(self, fds: dict[int, OpenFile]) -> list[tuple[int, Interest, int]]:
        """(fd, interest, revents) of each armed entry that is ready now, and for EPOLLET has
        had an event since it was last reported (entries whose descriptor was closed or reused
        are dropped)."""
        out = []
        for fd, interest in list(self.interests.items()):
            if fds.get(fd) is not interest.file:
                del self.interests[fd]
                continue
            if interest.armed:
                revents = events_of(interest.file, interest.events)
                if revents and not (interest.events & EPOLLET
                                    and self.generation(interest) == interest.seen):
                    out.append((fd, interest, revents))
        return out

    def generation(self, interest: Interest) -> int:
        """How many wakes the queues of `interest`'s descriptor have seen."""
        return sum(q.generation for q in queues_of(interest.file, interest.events, self.host))

    def reported(self, fd: int, interest: Interest) -> None:
        """`interest` was handed to the caller: disarm (EPOLLONESHOT), note the edge
        (EPOLLET), and move it to the back of the list."""
        if interest.events & EPOLLONESHOT:
            interest.armed = False
        if interest.events & EPOLLET:
            interest.seen = self.generation(interest)
        del self.interests[fd]
        self.interests[fd] = interest

    def events(self, wanted: int) -> int:
        """POLLIN when an entry is ready."""
        ready = any(i.armed and events_of(i.file, i.events) for i in self.interests.values())
        return wanted & (POLLIN | 0x40) if ready else 0

    def queues(self, wanted: int) -> list[WaitQueue]:
        """Every watched descriptor's queues."""
        return [q for i in self.interests.values() if i.armed
                for q in queues_of(i.file, i.events, self.host)]

    def exclusive_queues(self) -> frozenset[int]:
        """id() of the queues of EPOLLEXCLUSIVE entries (a waiter there is woken alone)."""
        return frozenset(id(q) for i in self.interests.values()
                         if i.armed and i.events & EPOLLEXCLUSIVE
                         for q in queues_of(i.file, i.events, self.host))

    def release(self) -> None:
        """The instance's last descriptor closed."""
        self.interests.clear()


@syscall("epoll_create1")
def sys_epoll_create1(ctx: SyscallContext, flags: int, *_: int) -> int:
    """A new epoll instance (EPOLL_CLOEXEC is O_CLOEXEC)."""
    if flags & ~O_CLOEXEC:
        return -errno.EINVAL
    import os
    anchor = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    file = OpenFile(anchor, "anon_inode:[eventpoll]", 2, kernel_object=Epoll(ctx.host))
    try:
        return ctx.proc.fds.install(file, cloexec=bool(flags & O_CLOEXEC))
    except OSError:
        file.close()
        raise


@syscall("epoll_create")
def sys_epoll_create(ctx: SyscallContext, size: int, *_: int) -> int:
    """epoll_create(2) (x86-64 only): size must be positive."""
    if to_int32(size) <= 0:
        return -errno.EINVAL
    return sys_epoll_create1(ctx, 0)


def _epoll(ctx: SyscallContext, epfd: int) -> Epoll:
    """The epoll instance of `epfd` (EBADF, or EINVAL for another kind of descriptor)."""
    obj = ctx.proc.fds.get(to_int32(epfd)).kernel_object
    if not isinstance(obj, Epoll):
        raise OSError(errno.EINVAL, "not an epoll descriptor")
    return obj


EP_MAX_NESTS = 4                # Linux: epoll instances nested deeper than this are ELOOP


def _nested(ep: Epoll) -> list[Epoll]:
    return [i.file.kernel_object for i in ep.interests.values()
            if isinstance(i.file.kernel_object, Epoll)]


def _depth(ep: Epoll, seen: frozenset[int] = frozenset()) -> int:
    """How many epoll instances lie below `ep` at most (a cycle counts as too deep)."""
    if id(ep) in seen:
        return EP_MAX_NESTS + 1
    below = [_depth(inner, seen | {id(ep)}) for inner in _nested(ep)]
    return 1 + max(below, default=0)


def _reaches(start: Epoll, goal: Epoll) -> bool:
    stack, seen = [start], set()
    while stack:
        ep = stack.pop()
        if ep is goal:
            return True
        if id(ep) not in seen:
            seen.add(id(ep))
            stack += _nested(ep)
    return False


@syscall("epoll_ctl")
def sys_epoll_ctl(ctx: SyscallContext, epfd: int, op: int, fd: int, event: int, *_: int) -> int:
    """Add, change or remove a watched descriptor (Linux's checks, in Linux's order)."""
    epoll_file = ctx.proc.fds.get(to_int32(epfd))
    fd = to_int32(fd)
    file = ctx.proc.fds.get(fd)
    if (epoll_file.guest_flags | file.guest_flags) & 0o10000000:     # O_PATH
        return -errno.EBADF
    op = to_int32(op)
    raw = b""
    if op != EPOLL_CTL_DEL:
        raw = ctx.mem.read(event, _EVENT_SIZE[ctx.arch])
    if file.kernel_object is None and (not file.may_block or file.guest_path in _UNPOLLABLE):
        return -errno.EPERM                     # regular files and mem devices cannot be polled
    ep = epoll_file.kernel_object
    if file is epoll_file or not isinstance(ep, Epoll):
        return -errno.EINVAL
    if op == EPOLL_CTL_DEL:
        if ep.interests.pop(fd, None) is None:
            return -errno.ENOENT
        return 0
    if op not in (EPOLL_CTL_ADD, EPOLL_CTL_MOD):
        return -errno.EINVAL
    events, data = struct.unpack_from("<I", raw)[0], struct.unpack_from(
        "<Q", raw, 4 if ctx.arch == "x86_64" else 8)[0]
    present = fd in ep.interests and ep.interests[fd].file is file
    target = file.kernel_object
    if events & EPOLLEXCLUSIVE and (op == EPOLL_CTL_MOD or isinstance(target, Epoll)
                                    or events & EPOLLONESHOT):
        return -errno.EINVAL
    if op == EPOLL_CTL_ADD:
        if present:
            return -errno.EEXIST
        if isinstance(target, Epoll) and (_reaches(target, ep) or
                                          _depth(target) + 1 > EP_MAX_NESTS + 1):
            return -errno.ELOOP
    elif not present:
        return -errno.ENOENT
    elif ep.interests[fd].events & EPOLLEXCLUSIVE:
        return -errno.EINVAL
    ep.interests[fd] = Interest(file, events | POLLERR | POLLHUP, data)
    return 0


def _epoll_wait(ctx: SyscallContext, epfd: int, events: int, maxevents: int,
                timeout_ns: int | None, mask: int | None) -> int | None:
    maxevents = to_int32(maxevents)
    if maxevents <= 0 or maxevents > (1 << 31) // 16:
        return -errno.EINVAL
    ep = _epoll(ctx, epfd)
    call = _begin(ctx, timeout_ns, mask)
    table = {fd: file for fd in ep.interests
             if (file := _get_or_none(ctx, fd)) is not None}
    ready = ep.ready(table)[:maxevents]
    if ready or timeout_ns == 0 or not _wait_or_finish(ctx, call, ep.queues(POLLIN),
                                                       ep.exclusive_queues()):
        _finish(ctx, call)
        size = _EVENT_SIZE[ctx.arch]
        out = bytearray(size * len(ready))
        for k, (_fd, interest, revents) in enumerate(ready):
            struct.pack_into("<I", out, k * size, revents)
            struct.pack_into("<Q", out, k * size + (4 if size == 12 else 8), interest.data)
        ctx.mem.write(events, bytes(out))
        for fd, interest, _revents in ready:
            ep.reported(fd, interest)
        return len(ready)
    return None


def _get_or_none(ctx: SyscallContext, fd: int) -> OpenFile | None:
    try:
        return ctx.proc.fds.get(fd)
    except OSError:
        return None


@syscall("epoll_wait")
def sys_epoll_wait(ctx: SyscallContext, epfd: int, events: int, maxevents: int, timeout: int,
                   *_: int) -> int | None:
    """Wait for watched descriptors (x86-64 only; timeout in ms, negative: none)."""
    ms = to_int32(timeout)
    return _epoll_wait(ctx, epfd, events, maxevents, None if ms < 0 else ms * 10**6, None)


@syscall("epoll_pwait")
def sys_epoll_pwait(ctx: SyscallContext, epfd: int, events: int, maxevents: int, timeout: int,
                    sigmask: int, sigsetsize: int) -> int | None:
    """epoll_wait with a signal mask for the wait."""
    ms = to_int32(timeout)
    return _epoll_wait(ctx, epfd, events, maxevents, None if ms < 0 else ms * 10**6,
                       _read_mask(ctx, sigmask, sigsetsize))


@syscall("epoll_pwait2")
def sys_epoll_pwait2(ctx: SyscallContext, epfd: int, events: int, maxevents: int, timeout: int,
                     sigmask: int, sigsetsize: int) -> int | None:
    """epoll_pwait with a struct timespec timeout (NULL: none)."""
    ns = None if not timeout else read_timespec(ctx, timeout)
    return _epoll_wait(ctx, epfd, events, maxevents, ns, _read_mask(ctx, sigmask, sigsetsize))
