"""Kernel events: one frozen dataclass per kind, and the bus instruments subscribe to.

Every event carries the simulated timestamp (`ts`, cycles) and the (pid, tid) it is
about, so the event stream of a run is reproducible. A fault's events share one
`fault_id`: FaultBegin -> Pulse -> FaultServe (the server takes it) -> FaultEnd.
Instruments subscribe per kind; the kernel asks `bus.wants(Kind)` before building
an event nobody would see, so an unwatched kind costs nothing. Instruments only
observe, they never change the run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import IO, Any, Callable, ClassVar, Iterable


@dataclass(frozen=True, slots=True)
class Event:
    """What every event has: when (simulated cycles) and which thread it is about."""

    kind: ClassVar[str] = "event"
    ts: int
    pid: int
    tid: int

    def to_json(self) -> str:
        """One JSON line: ts, kind, pid, tid, then the kind's own fields in order."""
        record: dict[str, Any] = {"ts": self.ts, "kind": self.kind, "pid": self.pid,
                                  "tid": self.tid}
        renames = _JSON_NAMES.get(type(self), {})
        for f in fields(self)[3:]:
            value = getattr(self, f.name)
            record[renames.get(f.name, f.name)] = getattr(value, "value", value)
        return json.dumps(record, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class StateChange(Event):
    """A thread's state changed (`old`, `new`: ThreadState values)."""

    kind: ClassVar[str] = "state"
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Switch(Event):
    """The CPU switched to (pid, tid) from another thread (None at the first switch)."""

    kind: ClassVar[str] = "switch"
    from_pid: int | None
    from_tid: int | None


@dataclass(frozen=True, slots=True)
class Preempt(Event):
    """The running thread went back to its ready queue: reason "priority" or "slice"."""

    kind: ClassVar[str] = "preempt"
    reason: str


@dataclass(frozen=True, slots=True)
class PriorityChange(Event):
    """A thread's current priority changed: reason "inherit" (a pulse's priority),
    "restore" (back to its base) or "set" (sched_setscheduler & co)."""

    kind: ClassVar[str] = "priority"
    old: int
    new: int
    reason: str


@dataclass(frozen=True, slots=True)
class SchedParams(Event):
    """A thread's own (base) priority and policy were set."""

    kind: ClassVar[str] = "sched_params"
    policy: str
    priority: int


@dataclass(frozen=True, slots=True)
class FaultBegin(Event):
    """A fault the fast path could not resolve: origin "user" (the guest's access, slow
    path) or "kernel" (a copy-in/out on the thread's behalf)."""

    kind: ClassVar[str] = "fault_begin"
    fault_id: int
    vaddr: int
    access: str
    origin: str


@dataclass(frozen=True, slots=True)
class Pulse(Event):
    """The fault pulse went to the memory manager at `priority` (the server woken or raised)."""

    kind: ClassVar[str] = "pulse"
    fault_id: int
    priority: int
    server_pid: int | None
    server_tid: int | None


@dataclass(frozen=True, slots=True)
class FaultServe(Event):
    """A memory-manager thread (pid, tid) took the fault's pulse and starts on it."""

    kind: ClassVar[str] = "fault_serve"
    fault_id: int


@dataclass(frozen=True, slots=True)
class FaultEnd(Event):
    """The fault was resolved (`signal` 0) or turned into a signal; `cause` is a FaultCause
    value."""

    kind: ClassVar[str] = "fault_end"
    fault_id: int
    vaddr: int
    cause: str
    signal: int
    origin: str


@dataclass(frozen=True, slots=True)
class DeviceRequest(Event):
    """A transfer was queued on the backing-store device; it completes at `done_at`, `ok`
    or with `errno`. reason: "page_in", "msync", "write_back" or "populate"."""

    kind: ClassVar[str] = "device_request"
    request_id: int
    write: bool
    pages: int
    reason: str
    done_at: int
    ok: bool
    errno: int


@dataclass(frozen=True, slots=True)
class DeviceComplete(Event):
    """A device transfer finished at `done_at`; the kernel noticed at `ts` (its next timer
    check, at or after done_at)."""

    kind: ClassVar[str] = "device_complete"
    request_id: int
    done_at: int
    ok: bool


@dataclass(frozen=True, slots=True)
class SignalAction(Event):
    """A signal was acted on: action "handler", "default" or "ignore"."""

    kind: ClassVar[str] = "signal"
    signal: int
    code: int
    vaddr: int
    action: str


@dataclass(frozen=True, slots=True)
class ThreadCreate(Event):
    """A thread came to be, in `state` (READY, or RECEIVE for a server)."""

    kind: ClassVar[str] = "thread_create"
    state: str
    priority: int
    policy: str
    name: str


@dataclass(frozen=True, slots=True)
class ThreadExit(Event):
    """A thread ended (exit code, or 0 when its process was killed)."""

    kind: ClassVar[str] = "thread_exit"
    code: int


@dataclass(frozen=True, slots=True)
class ProcessCreate(Event):
    """A process came to be (tid 0): `parent` pid (None for the first), guest path of its
    program."""

    kind: ClassVar[str] = "process_create"
    parent: int | None
    exe: str


@dataclass(frozen=True, slots=True)
class ProcessExec(Event):
    """A process replaced its image (execve) with the program at `exe`."""

    kind: ClassVar[str] = "process_exec"
    exe: str


@dataclass(frozen=True, slots=True)
class ProcessExit(Event):
    """A process ended with an exit `code`, or was killed by `signal` (then code is 128+N)."""

    kind: ClassVar[str] = "process_exit"
    code: int
    signal: int


@dataclass(frozen=True, slots=True)
class Lock(Event):
    """`pages` pages of [start, end) became locked (mlock & co, MAP_LOCKED, -ml)."""

    kind: ClassVar[str] = "lock"
    start: int
    end: int
    pages: int


@dataclass(frozen=True, slots=True)
class Populate(Event):
    """Residency set pages up ahead of use (lock, MAP_POPULATE, superlock): how many of each
    cause (FaultCause values), and how many were read from the backing store."""

    kind: ClassVar[str] = "populate"
    start: int
    end: int
    causes: tuple[tuple[str, int], ...]
    reads: int


@dataclass(frozen=True, slots=True)
class LargePage(Event):
    """A large page formed (`formed`) or was split back into small pages."""

    kind: ClassVar[str] = "large_page"
    vaddr: int
    size: int
    formed: bool


@dataclass(frozen=True, slots=True)
class Prefault(Event):
    """Serving fault `fault_id` at `vaddr` also set up `pages` pages next to it (the
    prefault heuristic)."""

    kind: ClassVar[str] = "prefault"
    fault_id: int
    vaddr: int
    pages: int


@dataclass(frozen=True, slots=True)
class SyscallEnter(Event):
    """A thread entered system call `nr` (`name`) with the six argument registers; a call
    retried after a wait (a pipe, poll, a lock) enters again."""

    kind: ClassVar[str] = "syscall_enter"
    nr: int
    name: str
    args: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SyscallExit(Event):
    """The call entered last by this thread returned `result` (the return register's value,
    -errno on failure), or blocked (None: its result comes when the thread is woken)."""

    kind: ClassVar[str] = "syscall_exit"
    nr: int
    name: str
    result: int | None


@dataclass(frozen=True, slots=True)
class Deadlock(Event):
    """Every guest thread was blocked with nothing left to wake one: the run is ended (the
    guests are killed); `blocked` names each thread and its state."""

    kind: ClassVar[str] = "deadlock"
    blocked: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LimitReached(Event):
    """The run hit a limit of its options (`limit` "instructions" or "cycles", at `value`):
    its guests are killed with SIGXCPU."""

    kind: ClassVar[str] = "limit"
    limit: str
    value: int


@dataclass(frozen=True, slots=True)
class InjectArmed(Event):
    """Fault number `fault` of the run's plan (`spec`, its canonical shorthand) is armed
    (tid 0: before the guest runs, or where a campaign resumed the run)."""

    kind: ClassVar[str] = "inject_armed"
    fault: int
    fault_kind: str
    spec: str


@dataclass(frozen=True, slots=True)
class InjectFired(Event):
    """Fault number `fault` hit (pid, tid), whose PC was `pc`: what it did (`detail`)."""

    kind: ClassVar[str] = "inject_fired"
    fault: int
    fault_kind: str
    pc: int
    detail: str


@dataclass(frozen=True, slots=True)
class Diagnostic(Event):
    """A line the kernel has for the user (shown on stderr by the CLI)."""

    kind: ClassVar[str] = "diagnostic"
    message: str


@dataclass(frozen=True, slots=True)
class RunStart(Event):
    """The machine is about to run `program` (pid is the first guest process)."""

    kind: ClassVar[str] = "run_start"
    arch: str
    program: str
    frames_total: int


@dataclass(frozen=True, slots=True)
class RunEnd(Event):
    """The machine stopped for good: the CPU's own counters at that moment."""

    kind: ClassVar[str] = "run_end"
    instructions: int
    cycles: int
    tlb_fills: int
    tlb_flushes: int
    tlb_page_flushes: int
    frames_peak: int
    syscalls: tuple[tuple[str, int], ...] = field(default=())
    walks: int = 0                  # page walks that found a leaf
    walk_cycles: int = 0            # cycles charged for them (fill cost included)
    walks_by_levels: tuple[int, int, int, int] = (0, 0, 0, 0)   # walks reading 1..4 entries
    fills_by_size: tuple[int, int, int] = (0, 0, 0)             # 4 KiB, 64 KiB, 2 MiB entries
    page_table_frames_peak: int = 0
    page_table_frames_end: int = 0
    prefault_unused: int = 0        # prefaulted pages unmapped without ever being used
    tlb_model: tuple[tuple[str, int], ...] = field(default=())  # detailed TLB model counters
    bad_page_states: int = 0        # bookkeeping inconsistencies after injected corruption


EVENT_KINDS: tuple[type[Event], ...] = (
    StateChange, Switch, Preempt, PriorityChange, SchedParams, FaultBegin, Pulse, FaultServe,
    FaultEnd, DeviceRequest, DeviceComplete, SignalAction, ThreadCreate, ThreadExit,
    ProcessCreate, ProcessExec, ProcessExit, Lock, Populate, LargePage, Prefault, SyscallEnter,
    SyscallExit, Deadlock, LimitReached, InjectArmed, InjectFired, Diagnostic, RunStart, RunEnd)
KIND_BY_NAME = {cls.kind: cls for cls in EVENT_KINDS}
_JSON_NAMES: dict[type[Event], dict[str, str]] = {StateChange: {"old": "from", "new": "to"}}

Handler = Callable[[Any], None]


class EventBus:
    """Fans kernel events out to the handlers subscribed to their kind."""

    def __init__(self) -> None:
        """A bus with no subscribers."""
        self._handlers: dict[type[Event], tuple[Handler, ...]] = {}

    def subscribe(self, handler: Handler, kinds: Iterable[type[Event]] | None = None) -> None:
        """Deliver every later event of `kinds` (default: all kinds) to `handler`."""
        for kind in EVENT_KINDS if kinds is None else kinds:
            self._handlers[kind] = self._handlers.get(kind, ()) + (handler,)

    def unsubscribe(self, handler: Handler) -> None:
        """Deliver nothing more to `handler`."""
        for kind in list(self._handlers):
            remaining = tuple(h for h in self._handlers[kind] if h is not handler)
            if remaining:
                self._handlers[kind] = remaining
            else:
                del self._handlers[kind]

    def wants(self, kind: type[Event]) -> bool:
        """Whether anyone listens to `kind` (build the event only then)."""
        return kind in self._handlers

    def publish(self, event: Event) -> None:
        """Deliver one event to its kind's handlers."""
        for handler in self._handlers.get(type(event), ()):
            handler(event)


class JsonLinesWriter:
    """An instrument that writes each event as one JSON line (`emu run --events FILE`)."""

    def __init__(self, stream: IO[str]) -> None:
        """Write to an open text stream."""
        self._stream = stream

    def __call__(self, event: Event) -> None:
        """Append the event's JSON line."""
        self._stream.write(event.to_json())
        self._stream.write("\n")
