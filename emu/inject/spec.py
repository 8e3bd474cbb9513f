"""Fault specifications: what to inject, when, and where — parsed, checked, canonical.

One `FaultSpec` is one fault: a kind, a trigger, filters and a target. It comes from
the shorthand of `emu run --fault KIND[@TRIGGER][:key=value,...]` (the part after `@`
and the part after `:` are both `key=value` lists; `@` is for reading), from a plan
file's `[[fault]]` table, or from a campaign sweep; all three go through
`FaultSpec.from_mapping`, so they accept the same keys and give the same errors.

Every fault watches one stream of *occurrences* and fires at one of them:

- the memory manager's and the backing store's kinds watch the kernel operation they
  break (a frame demand, a read of the backing store, a fault served...), and act
  inside it;
- the CPU, memory and scheduling kinds watch executions of a PC (`pc=`), system-call
  entries of one name (`syscall=`), ends of deferred faults of one cause (`fault=`), or
  the clock alone (`cycle=`), and act at the first stop point after it.

Triggers: `nth=N` (the Nth occurrence; the default, 1), `cycle=T` (the first occurrence at
or after cycle T; for the clock alone, the first block boundary), `p=P` (the first
occurrence whose seeded draw is below P). Filters narrow the stream: `file=`, `cause=`,
`addr=LO-HI`, `dir=`. `duration=CYCLES` (or `inf`) keeps a fault active that long after it
fires: every occurrence in the window is hit (a stuck-at bit is re-asserted before every
block). `docs/INJECTION.md` documents every kind and key.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

from emu.errors import EmuError

INFINITE = math.inf
FOREVER = 1 << 62               # a duration of `inf`, in cycles


class FaultKind(enum.Enum):
    """The fault models (the values are the names users write)."""

    FRAME_ALLOC = "frame-alloc"     # a frame demand fails: ENOMEM at mmap, SIGBUS at a touch
    MM_DELAY = "mm-delay"           # procnto takes `cycles` longer to start on a fault
    PULSE_LOSS = "pulse-loss"       # a fault pulse is lost and re-sent after `timeout`
    READ_ERROR = "read-error"       # a read of the backing store fails (SIGBUS, EIO)
    WRITE_ERROR = "write-error"     # a write to the backing store fails (EIO, data kept/lost)
    LATENCY = "latency"             # a device transfer takes `cycles` longer
    BITFLIP = "bitflip"             # invert a bit (or a mask) of a register, memory or a PTE
    SET0 = "set0"                   # stuck-at 0
    SET1 = "set1"                   # stuck-at 1
    OVERWRITE = "overwrite"         # replace with `value`
    SKIP = "skip"                   # skip `count` instructions at a PC
    HOG = "hog"                     # a CPU-bound thread at `prio` appears

    @property
    def family(self) -> str:
        """'mm', 'store', 'cpu' or 'sched'."""
        return _FAMILY[self]


_FAMILY = {FaultKind.FRAME_ALLOC: "mm", FaultKind.MM_DELAY: "mm", FaultKind.PULSE_LOSS: "mm",
           FaultKind.READ_ERROR: "store", FaultKind.WRITE_ERROR: "store",
           FaultKind.LATENCY: "store", FaultKind.BITFLIP: "cpu", FaultKind.SET0: "cpu",
           FaultKind.SET1: "cpu", FaultKind.OVERWRITE: "cpu", FaultKind.SKIP: "cpu",
           FaultKind.HOG: "sched"}
KIND_BY_NAME = {k.value: k for k in FaultKind}
VALUE_KINDS = (FaultKind.BITFLIP, FaultKind.SET0, FaultKind.SET1, FaultKind.OVERWRITE)
FRAME_PURPOSES = ("commit", "lazy_alloc", "cow", "page_in")
FAULT_CAUSES = ("zero_fill", "lazy_alloc", "page_in", "cached", "write_track", "cow")


class Stream(enum.Enum):
    """What a fault's trigger counts."""

    FRAME_DEMAND = "frame demands"
    SERVED_FAULT = "faults served by procnto"
    PULSE = "fault pulses"
    STORE_READ = "reads of the backing store"
    STORE_WRITE = "writes to the backing store"
    TRANSFER = "device transfers"
    PC = "executions of the PC"
    SYSCALL = "system calls"
    FAULT_END = "deferred faults"
    CLOCK = "the clock"


@dataclass(frozen=True)
class FaultSpec:
    """One fault, checked. Unset keys are None (their defaults are the kind's)."""

    kind: FaultKind
    # trigger
    nth: int | None = None
    cycle: int | None = None
    p: float | None = None
    pc: str | None = None               # an address, or SYMBOL[+OFFSET] (resolved at arm time)
    syscall: str | None = None
    fault: str | None = None            # a fault cause: the stream of deferred faults of it
    # filters
    file: str | None = None
    cause: str | None = None
    addr: tuple[int, int] | None = None     # [lo, hi)
    dir: str | None = None              # latency: "read" or "write"
    duration: int = 0                   # cycles active after firing (0: once)
    # targets and parameters
    reg: str | None = None
    vaddr: int | str | None = None      # an address, or SYMBOL[+OFFSET]
    paddr: int | None = None
    pte: int | str | None = None        # the leaf page-table entry mapping this address
    bit: int | None = None
    mask: int | None = None
    value: int | None = None
    width: int | None = None            # bytes of memory (1, 2, 4 or 8)
    pid: int | None = None              # the process whose memory (default: the first)
    tid: int | None = None              # whose register (default: the thread at the trigger)
    count: int | None = None            # skip: instructions
    cycles: int | None = None           # mm-delay, latency: extra cycles
    timeout: int | None = None          # pulse-loss: cycles until the pulse is re-sent
    prio: int | None = None             # hog: its priority
    errno: int | None = None            # read-error, write-error: the error (default EIO)

    # ---- building ----

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """`KIND[@TRIGGER][:key=value,...]`, e.g. `frame-alloc@nth=100`,
        `bitflip@pc=0x4019b0:vaddr=0x4a82e0,bit=0`; EmuError with one line if malformed."""
        head, _, rest = text.partition(":")
        kind, at, trigger = head.partition("@")
        if at and not trigger:
            raise EmuError(f"--fault {text!r}: nothing after '@'")
        items: dict[str, str] = {}
        for part in filter(None, (trigger, rest)):
            for item in part.split(","):
                key, eq, value = item.partition("=")
                key = key.strip()
                if not eq or not key:
                    raise EmuError(f"--fault {text!r}: expected key=value, got {item!r}")
                if key in items:
                    raise EmuError(f"--fault {text!r}: {key} given twice")
                items[key] = value.strip()
        return cls.from_mapping(kind.strip(), items, where=f"--fault {text!r}")

    @classmethod
    def from_mapping(cls, kind: str, items: Mapping[str, Any], where: str = "") -> FaultSpec:
        """A spec of `kind` from keys and values (strings, or numbers from TOML), checked."""
        where = where or f"fault {kind!r}"
        found = KIND_BY_NAME.get(kind)
        if found is None:
            raise EmuError(f"{where}: unknown fault kind {kind!r} (known: "
                           f"{', '.join(KIND_BY_NAME)})")
        values: dict[str, Any] = {}
        for key, raw in items.items():
            conv = _CONVERTERS.get(key)
            if conv is None:
                raise EmuError(f"{where}: unknown key {key!r} (known: "
                               f"{', '.join(sorted(_CONVERTERS))})")
            try:
                values[key] = conv(raw)
            except (ValueError, TypeError) as exc:
                raise EmuError(f"{where}: {key}={raw!r}: {exc}") from None
        spec = cls(found, **values)
        spec.check(where)
        return spec

    # ---- checking ----

    def check(self, where: str) -> None:
        """EmuError naming `where` unless the keys make sense for the kind."""
        kind = self.kind
        allowed = _KEYS[kind.family] | _KIND_KEYS.get(kind, frozenset())
        if kind is FaultKind.LATENCY:
            allowed -= {"errno"}
        given = {f.name for f in fields(self)
                 if f.name not in ("kind", "duration") and getattr(self, f.name) is not None}
        if self.duration:
            given.add("duration")
        extra = given - allowed
        if extra:
            raise EmuError(f"{where}: {kind.value} does not take {', '.join(sorted(extra))}")
        triggers = [k for k in ("nth", "cycle", "p") if getattr(self, k) is not None]
        if len(triggers) > 1:
            raise EmuError(f"{where}: give one of nth=, cycle=, p=, not {' and '.join(triggers)}")
        if self.nth is not None and self.nth < 1:
            raise EmuError(f"{where}: nth counts from 1")
        if self.p is not None and not 0.0 < self.p <= 1.0:
            raise EmuError(f"{where}: p must be in (0, 1]")
        if self.cycle is not None and self.cycle < 0:
            raise EmuError(f"{where}: cycle must not be negative")
        if self.duration < 0:
            raise EmuError(f"{where}: duration must not be negative")
        if self.addr is not None and self.addr[0] >= self.addr[1]:
            raise EmuError(f"{where}: addr=LO-HI needs LO < HI")
        if kind is FaultKind.FRAME_ALLOC and self.cause is not None \
                and self.cause not in FRAME_PURPOSES:
            raise EmuError(f"{where}: frame-alloc cause is one of {', '.join(FRAME_PURPOSES)}")
        if kind in (FaultKind.MM_DELAY, FaultKind.PULSE_LOSS) and self.cause is not None \
                and self.cause not in FAULT_CAUSES:
            raise EmuError(f"{where}: cause is one of {', '.join(FAULT_CAUSES)}")
        if self.fault is not None and self.fault not in FAULT_CAUSES + ("sigbus", "sigsegv"):
            raise EmuError(f"{where}: fault= is a fault cause: "
                           f"{', '.join(FAULT_CAUSES + ('sigbus', 'sigsegv'))}")
        if self.dir is not None and self.dir not in ("read", "write"):
            raise EmuError(f"{where}: dir is read or write")
        if kind in (FaultKind.MM_DELAY, FaultKind.LATENCY) and not self.cycles:
            raise EmuError(f"{where}: {kind.value} needs cycles=N (N > 0)")
        if kind.family in ("cpu", "sched"):
            self._check_cpu(where)

    def _check_cpu(self, where: str) -> None:
        kind = self.kind
        selectors = [k for k in ("pc", "syscall", "fault") if getattr(self, k) is not None]
        if len(selectors) > 1:
            raise EmuError(f"{where}: give one of pc=, syscall=, fault=, not "
                           f"{' and '.join(selectors)}")
        if not selectors and (self.nth is not None or self.p is not None):
            raise EmuError(f"{where}: nth= and p= count pc=, syscall= or fault= occurrences")
        if not selectors and self.cycle is None:
            raise EmuError(f"{where}: {kind.value} needs a trigger: cycle=, pc=, syscall= or "
                           "fault=")
        if kind is FaultKind.SKIP:
            if self.count is not None and not 1 <= self.count <= 64:
                raise EmuError(f"{where}: skip count is 1-64")
            return
        if kind is FaultKind.HOG:
            if self.prio is not None and not 1 <= self.prio <= 255:
                raise EmuError(f"{where}: hog prio is 1-255")
            return
        targets = [k for k in ("reg", "vaddr", "paddr", "pte") if getattr(self, k) is not None]
        if len(targets) != 1:
            raise EmuError(f"{where}: {kind.value} needs exactly one target: reg=, vaddr=, "
                           "paddr= or pte=")
        if kind is FaultKind.OVERWRITE:
            if self.value is None:
                raise EmuError(f"{where}: overwrite needs value=")
            if self.bit is not None or self.mask is not None:
                raise EmuError(f"{where}: overwrite takes value=, not bit= or mask=")
        elif (self.bit is None) == (self.mask is None):
            raise EmuError(f"{where}: {kind.value} needs bit=N or mask=M (one of them)")
        if self.bit is not None and not 0 <= self.bit < 64 * 8:
            raise EmuError(f"{where}: bit must be 0-511")
        if self.mask is not None and self.mask <= 0:
            raise EmuError(f"{where}: mask must be positive")
        if self.width is not None:
            if self.width not in (1, 2, 4, 8):
                raise EmuError(f"{where}: width is 1, 2, 4 or 8 bytes")
            if self.reg is not None:
                raise EmuError(f"{where}: width= is for memory targets")
        if self.kind is FaultKind.BITFLIP and self.duration:
            raise EmuError(f"{where}: a bit flip is transient; use set0 or set1 for a "
                           "stuck-at bit that lasts")
        if self.tid is not None and self.reg is None:
            raise EmuError(f"{where}: tid= is for register targets")

    # ---- derived ----

    @property
    def stream(self) -> Stream:
        """The occurrences this fault's trigger counts."""
        if self.kind.family in ("cpu", "sched"):
            if self.pc is not None:
                return Stream.PC
            if self.syscall is not None:
                return Stream.SYSCALL
            if self.fault is not None:
                return Stream.FAULT_END
            return Stream.CLOCK
        return _STREAM[self.kind]

    @property
    def memory_width(self) -> int:
        """Bytes a memory or PTE target covers (PTEs are 8 bytes)."""
        if self.pte is not None:
            return 8
        if self.width is not None:
            return self.width
        if self.kind is FaultKind.OVERWRITE:
            return 8
        top = self.bit if self.bit is not None else (self.mask or 1).bit_length() - 1
        return next(w for w in (1, 2, 4, 8, 16, 32, 64) if top < 8 * w)

    @property
    def bits(self) -> int:
        """The mask of bits the fault changes (bit= as a mask)."""
        return (1 << self.bit) if self.bit is not None else (self.mask or 0)

    def text(self) -> str:
        """The canonical shorthand: `kind@trigger:key=value,...` (keys in a fixed order),
        which parses back to an equal spec."""
        trigger: list[str] = []
        rest: list[str] = []
        for f in fields(self):
            name = f.name
            value = getattr(self, name)
            if name == "kind" or value is None or (name == "duration" and not value):
                continue
            item = f"{name}={_format(name, value)}"
            (trigger if name in _TRIGGER_KEYS else rest).append(item)
        out = self.kind.value
        if trigger:
            out += "@" + ",".join(trigger)
        if rest:
            out += ":" + ",".join(rest)
        return out

    def to_mapping(self) -> dict[str, Any]:
        """The keys that are set, as JSON-friendly values (the inverse of from_mapping)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "kind" or value is None or (f.name == "duration" and not value):
                continue
            out[f.name] = _format(f.name, value)
        return out


_TRIGGER_KEYS = ("nth", "cycle", "p", "pc", "syscall", "fault")
_STREAM = {FaultKind.FRAME_ALLOC: Stream.FRAME_DEMAND, FaultKind.MM_DELAY: Stream.SERVED_FAULT,
           FaultKind.PULSE_LOSS: Stream.PULSE, FaultKind.READ_ERROR: Stream.STORE_READ,
           FaultKind.WRITE_ERROR: Stream.STORE_WRITE, FaultKind.LATENCY: Stream.TRANSFER}
_COMMON = frozenset({"nth", "cycle", "p", "duration"})
_KEYS = {
    "mm": _COMMON | {"cause", "addr"},
    "store": _COMMON | {"file", "errno"},
    "cpu": _COMMON | {"pc", "syscall", "fault", "addr", "pid"},
    "sched": _COMMON | {"pc", "syscall", "fault", "addr", "prio"},
}
_KIND_KEYS = {
    FaultKind.MM_DELAY: frozenset({"cycles"}),
    FaultKind.PULSE_LOSS: frozenset({"timeout"}),
    FaultKind.LATENCY: frozenset({"cycles", "dir"}),
    FaultKind.SKIP: frozenset({"count"}),
    **{k: frozenset({"reg", "vaddr", "paddr", "pte", "bit", "mask", "value", "width", "tid"})
       for k in VALUE_KINDS},
}


def _int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError("not a number")
    if isinstance(raw, int):
        return raw
    text = str(raw).strip().replace("_", "")
    if not text:
        raise ValueError("empty")
    return int(text, 0)


def _nonneg(raw: Any) -> int:
    value = _int(raw)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _duration(raw: Any) -> int:
    if isinstance(raw, float) and math.isinf(raw) or str(raw).strip() in ("inf", "forever"):
        return FOREVER
    return _nonneg(raw)


def _prob(raw: Any) -> float:
    return float(raw)


def _range(raw: Any) -> tuple[int, int]:
    if isinstance(raw, (list, tuple)) and len(raw) == 2:
        return _nonneg(raw[0]), _nonneg(raw[1])
    lo, sep, hi = str(raw).partition("-")
    if not sep:
        raise ValueError("expected LO-HI")
    return _nonneg(lo), _nonneg(hi)


def _name(raw: Any) -> str:
    text = str(raw).strip()
    if not text:
        raise ValueError("empty")
    return text


def _pc(raw: Any) -> str:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return hex(raw)
    text = _name(raw)
    try:
        return hex(int(text, 0))
    except ValueError:
        return text             # a symbol, resolved against the program at arm time


def _address(raw: Any) -> int | str:
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 0:
            raise ValueError("must not be negative")
        return raw
    text = _name(raw)
    try:
        return _nonneg(text)
    except ValueError:
        return text             # a symbol, resolved against the program at arm time


def _path(raw: Any) -> str:
    text = _name(raw)
    if not text.startswith("/"):
        raise ValueError("a guest path starts with /")
    return text


_CONVERTERS: dict[str, Any] = {
    "nth": _nonneg, "cycle": _nonneg, "p": _prob, "pc": _pc, "syscall": _name, "fault": _name,
    "file": _path, "cause": _name, "addr": _range, "dir": _name, "duration": _duration,
    "reg": lambda raw: _name(raw).lower(), "vaddr": _address, "paddr": _nonneg, "pte": _address,
    "bit": _nonneg, "mask": _nonneg, "value": _nonneg, "width": _nonneg, "pid": _nonneg,
    "tid": _nonneg, "count": _nonneg, "cycles": _nonneg, "timeout": _nonneg, "prio": _nonneg,
    "errno": _nonneg,
}

_HEX_KEYS = frozenset({"vaddr", "paddr", "pte", "mask", "value"})


def _format(name: str, value: Any) -> Any:
    if name == "addr":
        return f"{value[0]:#x}-{value[1]:#x}"
    if name == "duration" and value >= FOREVER:
        return "inf"
    if name in _HEX_KEYS and isinstance(value, int):
        return hex(value)
    return value
