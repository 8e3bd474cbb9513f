"""The simulated clock as the kernel reads it: cycles from the CPU, converted by the profile."""
from __future__ import annotations

from typing import Callable


class Clock:
    """Simulated time: the CPU's cycle counter and the machine's frequency."""

    def __init__(self, now: Callable[[], int], frequency_hz: int) -> None:
        """A clock reading cycles from `now()` at `frequency_hz`."""
        assert frequency_hz > 0
        self.now = now
        self.frequency_hz = frequency_hz

    def cycles(self, nanoseconds: int) -> int:
        """Nanoseconds of simulated time as cycles."""
        return nanoseconds * self.frequency_hz // 1_000_000_000

    def nanoseconds(self, cycles: int) -> int:
        """Cycles as nanoseconds of simulated time."""
        return cycles * 1_000_000_000 // self.frequency_hz

    def now_ns(self) -> int:
        """Simulated nanoseconds since boot."""
        return self.nanoseconds(self.now())
