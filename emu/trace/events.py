"""Kernel events and the instrument protocol that tracers and statistics subscribe to.

Every event carries the simulated timestamp (cycles) at which it happened, so
the event stream of a run is reproducible. The kernel emits through one
`EventBus`; instruments only observe, they never change the run.
"""
from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import IO, Any, Protocol


class EventKind(str, enum.Enum):
    """What happened."""

    STATE = "state"                 # thread state transition: data from, to
    SWITCH = "switch"               # context switch: data from_pid, from_tid (to = pid, tid)
    PREEMPT = "preempt"             # running thread put back on the ready queue: data reason
    FAULT_BEGIN = "fault_begin"     # data vaddr, access, cause, origin
    FAULT_END = "fault_end"         # data vaddr, cause, outcome
    PULSE = "pulse"                 # fault pulse sent: data priority, server_pid, server_tid
    SIGNAL = "signal"               # data signal, code, vaddr, action (handler/default/ignore)
    THREAD_CREATE = "thread_create"
    THREAD_EXIT = "thread_exit"


@dataclass(slots=True)
class Event:
    """One kernel event."""

    ts: int                         # simulated cycles
    kind: EventKind
    pid: int
    tid: int
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """One JSON line (keys in a fixed order)."""
        return json.dumps({"ts": self.ts, "kind": self.kind.value, "pid": self.pid,
                           "tid": self.tid, **self.data}, separators=(",", ":"))


class Instrument(Protocol):
    """Anything that wants to see kernel events."""

    def on_event(self, event: Event) -> None:
        """Observe one event."""


class EventBus:
    """Fans kernel events out to the subscribed instruments."""

    def __init__(self) -> None:
        """A bus with no subscribers."""
        self._handlers: tuple[Any, ...] = ()

    def subscribe(self, instrument: Instrument) -> None:
        """Deliver every later event to `instrument`."""
        self._handlers += (instrument.on_event,)

    def emit(self, ts: int, kind: EventKind, pid: int, tid: int, **data: Any) -> None:
        """Publish one event."""
        self.publish(Event(ts, kind, pid, tid, data))

    def publish(self, event: Event) -> None:
        """Publish a ready-made event."""
        for handler in self._handlers:
            handler(event)


class JsonLinesWriter:
    """An instrument that writes each event as one JSON line (`emu run --events FILE`)."""

    def __init__(self, stream: IO[str]) -> None:
        """Write to an open text stream."""
        self._stream = stream

    def on_event(self, event: Event) -> None:
        """Append the event's JSON line."""
        self._stream.write(event.to_json())
        self._stream.write("\n")
