"""A fault of a run's plan as the injector holds it: its spec, its trigger, and how a hit
is reported."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from emu.inject.spec import FaultSpec
from emu.inject.trigger import Trigger


class Subject(Protocol):
    """The thread a fault hit (emu.kernel.process.Thread has these)."""

    tid: int
    pc: int

    @property
    def process(self) -> object:
        """Its process (with a `pid`)."""


Report = Callable[["ArmedFault", "Subject | None", str], None]
"""(fault, the thread it hit or None, what it did): publish an InjectFired event."""


@dataclass
class ArmedFault:
    """Fault number `number` (1-based, the plan's order) and its trigger."""

    number: int
    spec: FaultSpec
    trigger: Trigger

    @property
    def recording(self) -> bool:
        """Whether it only records its occurrences (a golden run): it never fires."""
        return self.trigger.record is not None
