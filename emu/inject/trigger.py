"""Triggers: counting a fault's occurrences and deciding which one it hits.

An occurrence is offered with what is known of it (the cycle, and the file, cause,
address or direction its stream has); the filters of the spec keep or drop it, and a
kept one is numbered (1, 2, ...). The fault fires at the occurrence its trigger names —
`nth`, the first at or after `cycle`, or the first whose draw is below `p` — and then
hits every kept occurrence for `duration` cycles (0: only the one it fired at).

The draw of occurrence n is a hash of (seed, the fault's canonical text, n), not a stream
of random numbers: whether an occurrence is hit depends only on its number, so a run resumed from
a snapshot taken after k occurrences (`seen=k`) decides exactly as the run from the
start does.

Recording (a golden run): every kept occurrence is logged with the cycle the kernel step
that contained it started at and the count at that moment, which is where a run can be
forked to meet the occurrence in the same state (`emu/campaign/`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from emu.inject.spec import FaultSpec


def draw(seed: int, fault: str, occurrence: int) -> float:
    """A number in [0, 1) that depends only on its three arguments (`fault`: the fault's
    canonical text)."""
    digest = hashlib.blake2b(f"{seed}:{fault}:{occurrence}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0 ** 64


@dataclass(frozen=True, slots=True)
class Occurrence:
    """A kept occurrence, as a golden run records it."""

    number: int             # 1, 2, ... among the kept ones
    cycle: int              # when it happened
    step_start: int         # when the kernel step that contained it started
    seen_at_step: int       # kept occurrences before that step


@dataclass
class Trigger:
    """One fault's trigger: its count of kept occurrences and when it fired."""

    spec: FaultSpec
    seed: int = 0
    seen: int = 0                   # kept occurrences so far
    fired_at: int | None = None     # the cycle it fired at
    record: list[Occurrence] | None = None      # recording: every kept occurrence
    _step: tuple[int, int, int] = (-1, 0, 0)    # (step number, its start, seen then)

    def keeps(self, file: str | None = None, cause: str | None = None,
              addr: int | None = None, write: bool | None = None) -> bool:
        """Whether the spec's filters keep an occurrence with these attributes."""
        spec = self.spec
        if spec.file is not None and file != spec.file:
            return False
        if spec.cause is not None and cause != spec.cause:
            return False
        if spec.addr is not None and (addr is None or not spec.addr[0] <= addr < spec.addr[1]):
            return False
        if spec.dir is not None and write is not None and write != (spec.dir == "write"):
            return False
        return True

    def offer(self, now: int, step: tuple[int, int] = (0, 0)) -> bool:
        """A kept occurrence at cycle `now`, in the kernel step (number, start cycle)
        `step`: whether the fault hits it (fires now, or is still active)."""
        if self.record is not None and step[0] != self._step[0]:
            self._step = (step[0], step[1], self.seen)
        self.seen += 1
        if self.record is not None:
            self.record.append(Occurrence(self.seen, now, self._step[1], self._step[2]))
            return False
        if self.fired_at is not None:
            return now < self.fired_at + self.spec.duration
        if self.fires(self.seen, now):
            self.fired_at = now
            return True
        return False

    def fires(self, number: int, now: int) -> bool:
        """Whether kept occurrence `number`, at cycle `now`, is the one the trigger names."""
        spec = self.spec
        if spec.cycle is not None:
            return now >= spec.cycle
        if spec.p is not None:
            return draw(self.seed, spec.text(), number) < spec.p
        return number == (spec.nth or 1)

    def active(self, now: int) -> bool:
        """Whether the fault has fired and its duration has not run out at `now`."""
        return self.fired_at is not None and now < self.fired_at + self.spec.duration

    def firing_occurrence(self, occurrences: list[Occurrence]) -> Occurrence | None:
        """Of a golden run's kept occurrences, the one this trigger would fire at."""
        return next((o for o in occurrences if self.fires(o.number, o.cycle)), None)
