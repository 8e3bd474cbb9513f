"""Mappings (virtual memory areas) and the sorted set of one address space's mappings.

Pure bookkeeping over address ranges: what is mapped where, with which protection
and backing object; where a new mapping fits; and the splitting primitives that
place, take out and change ranges. No frames, no page table: keeping those
consistent with the mappings is AddressSpace's job (vmspace.py).

Invariants: mappings are page-aligned, non-empty and never overlap.
"""
from __future__ import annotations

import bisect
import enum
from dataclasses import dataclass, replace
from typing import Iterator

from emu.mm.frames import PAGE_MASK, PAGE_SIZE
from emu.mm.objects import MemoryObject
from emu.mm.pagetable import PTE_EXEC, PTE_READ, PTE_WRITE

PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0, 1, 2, 4     # Linux's; == the PTE bits
USER_END = 1 << 64
assert (PROT_READ, PROT_WRITE, PROT_EXEC) == (PTE_READ, PTE_WRITE, PTE_EXEC), "fastpath.h disagrees"

# Layout (no randomisation: runs are reproducible). 47-bit user space on both arches.
STACK_TOP = 0x7FFF_FFFF_F000
STACK_SIZE = 8 << 20
MMAP_BASE = STACK_TOP - STACK_SIZE - (1 << 30)   # top-down mmap area starts below a 1 GiB gap
MMAP_MIN = 0x10000


class Share(enum.Enum):
    """Whether writes are private to the mapping or shared with the object."""

    PRIVATE = "private"
    SHARED = "shared"


@dataclass(frozen=True)
class Mapping:
    """A page-aligned range of virtual memory backed by one memory object."""

    start: int
    end: int
    prot: int
    share: Share
    obj: MemoryObject
    offset: int                 # object offset of `start`
    name: str = ""
    lazy: bool = False          # MAP_LAZY / MAP_NORESERVE: frames at first touch, no commit
    locked: bool = False        # mlock / MAP_LOCKED / mlockall: resident since set up
    may_write: bool = True      # Linux's VM_MAYWRITE: False for a shared mapping of a file
                                # opened read-only (mprotect(PROT_WRITE) is then EACCES)
    @property
    def commits(self) -> bool:
        """Whether the mapping's frames are committed when it is created: memory that is not
        lazy and has pages of its own — anonymous memory and file images (a program's text
        and data), as QNX allocates them at mmap. (Page-cache mappings are not: their pages
        are the cache's, and private copies come from free memory.)"""
        return not self.lazy and not self.obj.cached

    def object_offset(self, vaddr: int) -> int:
        """Object offset of the page containing `vaddr`."""
        return self.offset + ((vaddr & PAGE_MASK) - self.start)

    def clipped(self, start: int, end: int) -> Mapping:
        """The part of this mapping inside [start, end)."""
        return Mapping(start, end, self.prot, self.share, self.obj,
                       self.offset + (start - self.start), self.name, self.lazy, self.locked,
                       self.may_write)

    def continued_by(self, other: Mapping) -> bool:
        """Whether `other` starts where this ends and is the same in everything else (the two
        can be one mapping, as Linux merges VMAs)."""
        return (self.end == other.start and self.prot == other.prot
                and self.share is other.share and self.obj is other.obj
                and self.offset + (self.end - self.start) == other.offset
                and self.name == other.name and self.lazy == other.lazy
                and self.locked == other.locked and self.may_write == other.may_write)

    @property
    def length(self) -> int:
        """Size in bytes."""
        return self.end - self.start


def page_align_up(value: int) -> int:
    """`value` rounded up to a page boundary."""
    return (value + PAGE_SIZE - 1) & PAGE_MASK


def placement_alignment(length: int, large_shifts: tuple[int, ...]) -> int:
    """Where a mapping of `length` bytes is best placed: aligned to the largest of the
    large pages (page-size shifts `large_shifts`) it can hold, so that its pages can
    coalesce, else to a page."""
    fitting = [1 << s for s in large_shifts if (1 << s) <= length]
    return max(fitting, default=PAGE_SIZE)


class MappingSet:
    """One address space's mappings, sorted by start address.

    Every change keeps the invariants: page-aligned, non-empty, non-overlapping.
    Splitting a mapping keeps each part's object offset in step with its start.
    """

    def __init__(self) -> None:
        """An empty set."""
        self._starts: list[int] = []        # self._maps[i].start, for bisection
        self._maps: list[Mapping] = []

    def __len__(self) -> int:
        """Number of mappings."""
        return len(self._maps)

    # ---- queries ----

    def find(self, vaddr: int) -> Mapping | None:
        """The mapping containing `vaddr`, if any."""
        i = bisect.bisect_right(self._starts, vaddr) - 1
        if i >= 0 and vaddr < self._maps[i].end:
            return self._maps[i]
        return None

    def mappings(self) -> Iterator[Mapping]:
        """All mappings in address order (a snapshot: the set may change meanwhile)."""
        return iter(list(self._maps))

    def overlaps(self, start: int, end: int) -> bool:
        """Whether any mapping intersects [start, end)."""
        return any(True for _ in self._overlapping(start, end))

    def is_free(self, start: int, end: int) -> bool:
        """Whether [start, end) is unmapped and inside user space."""
        return MMAP_MIN <= start < end <= STACK_TOP and not self.overlaps(start, end)

    def find_free(self, length: int, below: int = MMAP_BASE, align: int = PAGE_SIZE) -> int | None:
        """Highest `align`-aligned start of a free gap of `length` bytes ending at or below
        `below`."""
        top = below
        for m in reversed(self._maps):
            if m.start >= top:
                continue
            if m.end <= (top - length) & ~(align - 1):
                break
            top = m.start
        start = (top - length) & ~(align - 1)
        return start if start >= MMAP_MIN else None

    def mappings_in(self, start: int, end: int) -> list[Mapping]:
        """The parts of mappings inside [start, end), in address order."""
        return [self._maps[i].clipped(max(self._maps[i].start, start), min(self._maps[i].end, end))
                for i in self._overlapping(start, end)]

    def _overlapping(self, start: int, end: int) -> Iterator[int]:
        """Indices of the mappings intersecting [start, end), ascending."""
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        while i < len(self._maps) and self._maps[i].start < end:
            if self._maps[i].end > start:
                yield i
            i += 1

    # ---- changes ----

    def place(self, mapping: Mapping) -> None:
        """Put a mapping over a free range into the set."""
        assert mapping.start % PAGE_SIZE == 0 and mapping.end % PAGE_SIZE == 0, "not page-aligned"
        assert mapping.start < mapping.end, "empty mapping"
        i = bisect.bisect_left(self._starts, mapping.start)
        assert i == len(self._maps) or self._maps[i].start >= mapping.end, "overlaps the next"
        assert i == 0 or self._maps[i - 1].end <= mapping.start, "overlaps the previous"
        self._starts.insert(i, mapping.start)
        self._maps.insert(i, mapping)

    def take_out(self, start: int, end: int) -> list[Mapping]:
        """Remove [start, end) from the set, re-placing the parts of mappings outside it;
        returns the removed parts, in descending address order."""
        removed: list[Mapping] = []
        for i in reversed(list(self._overlapping(start, end))):
            m = self._maps.pop(i)
            self._starts.pop(i)
            for piece in (m.clipped(m.start, start) if m.start < start else None,
                          m.clipped(end, m.end) if m.end > end else None):
                if piece is not None:
                    self.place(piece)
            removed.append(m.clipped(max(m.start, start), min(m.end, end)))
        return removed

    def change(self, start: int, end: int, **changes: object) -> list[Mapping]:
        """Apply `changes` (Mapping fields) to the mapping pages in [start, end), splitting
        mappings at the edges; returns the affected parts as they were before, in descending
        address order."""
        before = []
        for i in reversed(list(self._overlapping(start, end))):
            m = self._maps.pop(i)
            self._starts.pop(i)
            lo, hi = max(m.start, start), min(m.end, end)
            before.append(m.clipped(lo, hi))
            for piece in (m.clipped(m.start, lo) if m.start < lo else None,
                          replace(m.clipped(lo, hi), **changes),
                          m.clipped(hi, m.end) if m.end > hi else None):
                if piece is not None:
                    self.place(piece)
        self._merge_around(start, end)
        return before

    def merge_around(self, start: int, end: int) -> None:
        """Join the mappings in and next to [start, end) that continue each other (after a
        mapping grew in place)."""
        self._merge_around(start, end)

    def _merge_around(self, start: int, end: int) -> None:
        """Join the mappings in and next to [start, end) that continue each other, so that
        changing a range back and forth does not leave ever more pieces."""
        i = max(bisect.bisect_right(self._starts, start) - 2, 0)
        while i + 1 < len(self._maps) and self._maps[i].start <= end:
            a, b = self._maps[i], self._maps[i + 1]
            if a.continued_by(b):
                self._maps[i] = Mapping(a.start, b.end, a.prot, a.share, a.obj, a.offset,
                                        a.name, a.lazy, a.locked, a.may_write)
                del self._maps[i + 1]
                del self._starts[i + 1]
            else:
                i += 1
