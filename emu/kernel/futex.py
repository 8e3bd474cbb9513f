"""Futex wait queues: threads blocked on a word of guest memory, woken in FIFO order.

The kernel checks the word's value before a thread blocks; this table only
keeps who waits where (keyed by address space and address) and wakes them.
"""
from __future__ import annotations

import errno
from collections import deque
from dataclasses import dataclass

from emu.kernel.process import Process, Thread, ThreadState
from emu.kernel.sched import Scheduler
from emu.kernel.timers import Timer
from emu.mm.vmspace import Share

FUTEX_BITSET_MATCH_ANY = 0xFFFFFFFF
PAGE_MASK_LOW = 0xFFF
FutexKey = tuple[object, ...]


@dataclass(eq=False)
class Waiter:
    """One blocked thread and what it waits for."""

    thread: Thread
    token: object
    bitset: int
    key: FutexKey
    timer: Timer | None = None


class FutexTable:
    """Every futex wait queue of the machine."""

    def __init__(self, sched: Scheduler) -> None:
        """No waiters."""
        self.sched = sched
        self._queues: dict[FutexKey, deque[Waiter]] = {}

    @staticmethod
    def key(proc: Process, addr: int, private: bool = True) -> FutexKey:
        """The queue key of a futex word of `proc`: its address space and address, or — for a
        shared futex (no FUTEX_PRIVATE_FLAG) in a MAP_SHARED mapping — the memory object and
        offset, so that processes mapping the same memory wait on the same queue (as Linux
        keys shared futexes by inode and page)."""
        if not private:
            mapping = proc.space.find(addr)
            if mapping is not None and mapping.share is Share.SHARED:
                obj = mapping.obj
                ident = id(obj.file) if obj.cached else id(obj)
                return ("shared", ident, mapping.object_offset(addr) + (addr & PAGE_MASK_LOW))
        return ("mm", id(proc.space), addr)

    def wait(self, thread: Thread, key: FutexKey, bitset: int, state: ThreadState) -> Waiter:
        """Block the running `thread` on `key` in `state` (JOIN or MUTEX)."""
        token = self.sched.block(thread, state)
        waiter = Waiter(thread, token, bitset, key)
        self._queues.setdefault(key, deque()).append(waiter)
        return waiter

    def wake(self, key: FutexKey, count: int, bitset: int = FUTEX_BITSET_MATCH_ANY) -> int:
        """Wake up to `count` waiters of `key` whose bitset matches; returns how many woke."""
        queue = self._queues.get(key)
        woken = 0
        while queue and woken < count:
            waiter = next((w for w in queue if w.bitset & bitset), None)
            if waiter is None:
                break
            queue.remove(waiter)
            self._release(waiter, 0)
            woken += 1
        if queue is not None and not queue:
            del self._queues[key]
        return woken

    def requeue(self, src: FutexKey, dst: FutexKey, wake: int, move: int) -> int:
        """Wake `wake` waiters of `src` and move up to `move` more to `dst`; returns both counts summed."""
        woken = self.wake(src, wake)
        queue = self._queues.get(src)
        moved = 0
        while queue and moved < move:
            waiter = queue.popleft()
            waiter.key = dst
            self._queues.setdefault(dst, deque()).append(waiter)
            moved += 1
        if queue is not None and not queue:
            del self._queues[src]
        return woken + moved

    def time_out(self, waiter: Waiter) -> None:
        """The waiter's timeout expired: it leaves its queue with ETIMEDOUT."""
        queue = self._queues.get(waiter.key)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._queues[waiter.key]
            waiter.timer = None
            self._release(waiter, -errno.ETIMEDOUT)

    def forget(self, proc: Process) -> None:
        """Drop every waiter belonging to `proc` (it is exiting)."""
        for key in list(self._queues):
            queue = deque(w for w in self._queues[key] if w.thread.process is not proc)
            if queue:
                self._queues[key] = queue
            else:
                del self._queues[key]

    def _release(self, waiter: Waiter, result: int) -> None:
        if waiter.timer is not None:
            waiter.timer.cancel()
        self.sched.wake(waiter.thread, waiter.token, result)
