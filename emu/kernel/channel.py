"""Channels and pulses: how the kernel hands work to server threads (QNX MsgReceive/MsgSendPulse).

Pulses are delivered highest priority first, in send order within a priority.
A server blocked in RECEIVE gets the next pulse directly.
"""
from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from emu.kernel.process import Thread


@dataclass(order=True)
class Pulse:
    """A small asynchronous message carrying its sender's priority."""

    sort_key: tuple[int, int] = field(init=False, repr=False)
    priority: int = field(compare=False)
    payload: Any = field(compare=False)
    seq: int = field(compare=False, default=0)

    def __post_init__(self) -> None:
        self.sort_key = (-self.priority, self.seq)


class Channel:
    """Pending pulses and the server threads waiting to receive them."""

    def __init__(self) -> None:
        """An empty channel."""
        self._pending: list[Pulse] = []
        self._seq = itertools.count()
        self.receivers: deque[Thread] = deque()
        self.pulses_sent = 0

    def send(self, priority: int, payload: Any) -> Thread | None:
        """Queue a pulse; returns a waiting receiver that should be woken to take it, if any."""
        self.pulses_sent += 1
        heapq.heappush(self._pending, Pulse(priority=priority, payload=payload, seq=next(self._seq)))
        return self.receivers.popleft() if self.receivers else None

    def receive(self) -> Pulse | None:
        """The highest-priority pending pulse, or None."""
        return heapq.heappop(self._pending) if self._pending else None

    def peek_priority(self) -> int | None:
        """Priority of the next pulse, or None."""
        return self._pending[0].priority if self._pending else None
