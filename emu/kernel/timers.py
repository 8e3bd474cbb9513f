"""Timers on the simulated clock: callbacks due at a cycle count, fired in (time, order) order."""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Callable


@dataclass(order=True)
class Timer:
    """A pending callback; `cancel` makes it a no-op."""

    when: int
    seq: int
    callback: Callable[[], None] | None = field(compare=False)

    def cancel(self) -> None:
        """Never fire."""
        self.callback = None


class TimerQueue:
    """Pending timers, earliest first; ties fire in the order they were set."""

    def __init__(self) -> None:
        """No timers."""
        self._heap: list[Timer] = []
        self._seq = itertools.count()

    def at(self, when: int, callback: Callable[[], None]) -> Timer:
        """Run `callback` once the clock reaches `when` cycles."""
        timer = Timer(when, next(self._seq), callback)
        heapq.heappush(self._heap, timer)
        return timer

    def next_due(self) -> int | None:
        """When the earliest live timer fires, or None."""
        while self._heap and self._heap[0].callback is None:
            heapq.heappop(self._heap)
        return self._heap[0].when if self._heap else None

    def fire_due(self, now: int) -> int:
        """Run every timer due at or before `now`; returns how many ran."""
        fired = 0
        while self._heap and self._heap[0].when <= now:
            timer = heapq.heappop(self._heap)
            if timer.callback is not None:
                callback, timer.callback = timer.callback, None
                callback()
                fired += 1
        return fired
