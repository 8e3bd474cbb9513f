"""Waiting for host descriptors (the emulator's stdin, a terminal, a host pipe) without
stalling the guest.

A guest read of a host descriptor that has nothing to read — or a write to one that
is full — must not block the emulator: the thread blocks in REPLY (it waits for the
"device", as a QNX client waits for a resource manager), the descriptor is watched,
and the other threads run. The kernel polls the watched descriptors between steps
(without waiting), and waits on the host only when no guest thread can run and no
timer is due. Regular files never wait.
"""
from __future__ import annotations

import errno
import os
import select
import stat

from emu.kernel.waitq import Blocking, WaitQueue

POLLIN, POLLPRI, POLLOUT, POLLERR, POLLHUP, POLLNVAL = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20
POLLRDNORM, POLLWRNORM = 0x40, 0x100


def host_may_block(host_fd: int) -> bool:
    """Whether reads or writes of `host_fd` can wait (a pipe, socket or terminal)."""
    try:
        mode = os.fstat(host_fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)


def host_events(host_fd: int, events: int) -> int:
    """The poll(2) events of `host_fd` now, among `events` (POLLERR/HUP/NVAL always)."""
    poller = select.poll()
    poller.register(host_fd, events)
    try:
        ready = poller.poll(0)
    except OSError as exc:
        if exc.errno == errno.EINTR:
            return 0
        raise
    return ready[0][1] if ready else 0


class HostPoller:
    """Host descriptors guest threads wait for, and their wait queues."""

    def __init__(self, blocking: Blocking) -> None:
        """No descriptor watched."""
        self.blocking = blocking
        self._watched: dict[tuple[int, int], WaitQueue] = {}

    def queue(self, host_fd: int, events: int) -> WaitQueue:
        """The wait queue woken when `host_fd` has one of `events` (POLLIN/POLLOUT)."""
        key = (host_fd, events)
        queue = self._watched.get(key)
        if queue is None:
            queue = self._watched[key] = WaitQueue()
        return queue

    def __bool__(self) -> bool:
        """Whether some thread waits for a host descriptor (a queue looked up without a
        waiter, as an edge-triggered epoll entry's, does not count)."""
        return any(self._watched.values())

    def poll(self, timeout_ms: int | None) -> None:
        """Wake the queues of descriptors that became ready, waiting up to `timeout_ms` on
        the host (None: until one does); queues nobody waits on are dropped."""
        self._watched = {key: queue for key, queue in self._watched.items() if queue}
        if not self._watched:
            return
        poller = select.poll()
        masks: dict[int, int] = {}
        for host_fd, events in self._watched:
            masks[host_fd] = masks.get(host_fd, 0) | events
        for host_fd, mask in masks.items():
            poller.register(host_fd, mask)
        try:
            ready = poller.poll(timeout_ms)
        except InterruptedError:
            return
        by_fd: dict[int, int] = {}
        for host_fd, revents in ready:
            by_fd[host_fd] = by_fd.get(host_fd, 0) | revents
        for key in list(self._watched):
            host_fd, events = key
            revents = by_fd.get(host_fd, 0)
            if revents & (events | POLLERR | POLLHUP | POLLNVAL):
                self.blocking.wake(self._watched.pop(key))
