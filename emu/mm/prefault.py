"""The prefault heuristic: how many pages around a fault the memory manager sets up too.

The seed describes procnto setting up "a certain amount, depending on heuristics based on
the type of mapping" when a fault is served. This is that policy, made a knob: for each
kind of mapping, how many pages after the faulting one (before it, for the stack, which
grows down) are set up while the server is at it — only pages that need no backing-store
read (zero-fill, a lazy allocation with a frame free, a page already in the page cache),
like Linux's fault-around, which maps only what the page cache holds.

Default: 0 pages for every kind. QNX's documented demand paging sets a PTE on first touch
(the seed's table: "PTEs are set on first touch"), and that is what emu's conformance rows
check; a prefault is a trade (fewer faults for pages that may never be used), which
`emu demo` measures and `--policy prefault=...` lets a user choose.

Whether a prefaulted page was ever used is read from the page table's accessed bit (set
by the walker on its first fill), when the page is unmapped.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable

from emu.errors import EmuError
from emu.mm.fault import (Access, Deliver, FaultCause, NeedsPage, PageRequest, Resolved,
                          resolve_fault)
from emu.mm.frames import PAGE_SHIFT, PAGE_SIZE
from emu.mm.mappings import PROT_EXEC, PROT_WRITE, Mapping, Share
from emu.mm.vmspace import AddressSpace

ServeRequest = Callable[[AddressSpace, PageRequest], "Resolved | Deliver"]

MAX_PREFAULT = 512          # pages: one 2 MiB range at most


class MappingKind(enum.Enum):
    """The kinds of mapping the heuristic tells apart."""

    TEXT = "text"           # executable (program and library text)
    DATA = "data"           # the program's other segments, private file mappings
    HEAP = "heap"           # brk
    STACK = "stack"         # the main stack (grows down)
    ANON = "anon"           # anonymous mmap
    SHARED = "shared"       # shared file mappings

    @classmethod
    def of(cls, mapping: Mapping) -> MappingKind:
        """The kind of `mapping`."""
        if mapping.name == "[stack]":
            return cls.STACK
        if mapping.name == "[heap]":
            return cls.HEAP
        if mapping.prot & PROT_EXEC:
            return cls.TEXT
        if mapping.obj.cached:
            return cls.SHARED if mapping.share is Share.SHARED else cls.DATA
        return cls.DATA if mapping.name and not mapping.name.startswith("[") else cls.ANON


@dataclass(frozen=True)
class PrefaultPolicy:
    """Pages set up around a fault, per kind of mapping (0: demand paging)."""

    text: int = 0
    data: int = 0
    heap: int = 0
    stack: int = 0
    anon: int = 0
    shared: int = 0

    def pages(self, kind: MappingKind) -> int:
        """How many extra pages a fault in a mapping of `kind` sets up."""
        return int(getattr(self, kind.value))

    @property
    def most(self) -> int:
        """The largest number of extra pages any fault sets up."""
        return max(self.pages(kind) for kind in MappingKind)

    @classmethod
    def parse(cls, text: str) -> PrefaultPolicy:
        """'anon=15,heap=15' or 'all=7' (then per-kind overrides): EmuError if malformed."""
        values: dict[str, int] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, number = item.partition("=")
            kinds = [k.value for k in MappingKind] if name == "all" else [name]
            if not sep or (name != "all" and name not in {k.value for k in MappingKind}):
                raise EmuError(f"prefault: expected KIND=PAGES with KIND one of all, "
                               f"{', '.join(k.value for k in MappingKind)}; got {item!r}")
            try:
                pages = int(number, 0)
            except ValueError:
                raise EmuError(f"prefault: {number!r} is not a number of pages") from None
            if not 0 <= pages <= MAX_PREFAULT:
                raise EmuError(f"prefault: {name} must be 0..{MAX_PREFAULT} pages")
            values.update({k: pages for k in kinds})
        return cls(**values)


# the causes of a first set-up: what a prefault may do in the fault's stead
_SET_UP = frozenset({FaultCause.ZERO_FILL, FaultCause.LAZY_ALLOC, FaultCause.PAGE_IN})


class Prefaulter:
    """Sets up the pages a policy says around a served fault, and counts what that did."""

    def __init__(self, policy: PrefaultPolicy, serve_request: ServeRequest) -> None:
        """`serve_request(space, request)` carries out a page request (Pager.service)."""
        self.policy = policy
        self._service = serve_request
        self.pages_set_up = 0

    def around(self, space: AddressSpace, vaddr: int, access: Access) -> list[FaultCause]:
        """After the fault at `vaddr` was resolved: set up the policy's pages next to it that
        need no read and no signal; their causes (for charging the work)."""
        mapping = space.find(vaddr)
        if mapping is None:
            return []
        kind = MappingKind.of(mapping)
        count = self.policy.pages(kind)
        if count == 0:
            return []
        step = -PAGE_SIZE if kind is MappingKind.STACK else PAGE_SIZE
        wanted = access if access is Access.WRITE and mapping.prot & PROT_WRITE else Access.READ
        done: list[FaultCause] = []
        page = (vaddr & ~(PAGE_SIZE - 1)) + step
        for _ in range(count):
            if not mapping.start <= page < mapping.end:
                break
            if space.page_table.lookup(page >> PAGE_SHIFT) is None:
                verdict = resolve_fault(space, page, wanted)
                if not isinstance(verdict, NeedsPage) or verdict.request.needs_read \
                        or verdict.cause not in _SET_UP:
                    break
                outcome = self._service(space, verdict.request)
                if not isinstance(outcome, Resolved):
                    break                               # no frame left: stop, no signal
                space.note_prefaulted(page >> PAGE_SHIFT)
                done.append(outcome.cause)
            page += step
        self.pages_set_up += len(done)
        return done
