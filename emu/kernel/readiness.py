"""Readiness of an open file for poll, select and epoll, and the wait queues that tell of a
change: one answer for pipes, epoll instances, host descriptors and regular files."""
from __future__ import annotations

from emu.kernel.files import OpenFile
from emu.kernel.hostio import (POLLERR, POLLHUP, POLLIN, POLLOUT, POLLPRI, POLLRDNORM,
                               POLLWRNORM, HostPoller, host_events)
from emu.kernel.pipes import PipeEnd
from emu.kernel.waitq import WaitQueue

READ_EVENTS = POLLIN | POLLRDNORM
WRITE_EVENTS = POLLOUT | POLLWRNORM


class Watchable:
    """A kernel object poll can ask (an epoll instance)."""

    def events(self, wanted: int) -> int:
        """The poll events among `wanted` that hold now."""
        raise NotImplementedError

    def queues(self, wanted: int) -> list[WaitQueue]:
        """The queues woken when one of `wanted` may have come to hold."""
        raise NotImplementedError


def events_of(file: OpenFile, wanted: int) -> int:
    """The poll(2) revents of `file` now for requested `wanted` (POLLERR and POLLHUP always
    count)."""
    obj = file.kernel_object
    if isinstance(obj, PipeEnd):
        revents = 0
        if obj.reads:
            pipe = obj.rpipe
            if pipe.data:
                revents |= READ_EVENTS
            if pipe.writers == 0 and pipe.writer_opens:
                revents |= POLLHUP
        if obj.writes:
            pipe = obj.wpipe
            if pipe.readers == 0:
                revents |= POLLERR
            elif pipe.writable_now():
                revents |= WRITE_EVENTS
        return revents & (wanted | POLLERR | POLLHUP)
    if isinstance(obj, Watchable):
        return obj.events(wanted)
    if file.may_block:
        return host_events(file.host_fd, wanted & (READ_EVENTS | WRITE_EVENTS | POLLPRI))
    return wanted & (READ_EVENTS | WRITE_EVENTS)    # regular files and devices never wait


def queues_of(file: OpenFile, wanted: int, host: HostPoller) -> list[WaitQueue]:
    """The wait queues a poller of `file` for `wanted` sleeps on."""
    obj = file.kernel_object
    if isinstance(obj, PipeEnd):
        queues = []
        if obj.reads:
            queues.append(obj.rpipe.readable)
        if obj.writes:
            queues.append(obj.wpipe.writable)
        return queues
    if isinstance(obj, Watchable):
        return obj.queues(wanted)
    if file.may_block:
        queues = []
        if wanted & (READ_EVENTS | POLLPRI):
            queues.append(host.queue(file.host_fd, POLLIN | POLLPRI))
        if wanted & WRITE_EVENTS:
            queues.append(host.queue(file.host_fd, POLLOUT))
        return queues
    return []
