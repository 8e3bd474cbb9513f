"""Address spaces: the mappings (virtual memory areas) of a process and its page table.

This module is mechanism only: place, split, protect and remove mappings, and
keep the page table consistent with them. What a fault should do is decided
in fault.py; the work is done by the pager.

Invariants: mappings are page-aligned, non-empty and never overlap; every PTE
lies inside a mapping and grants no permission the mapping lacks.
"""
from __future__ import annotations

import bisect
import enum
from dataclasses import dataclass, replace
from typing import Callable, Iterator

from emu.mm.frames import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, FrameAllocator, OutOfFrames
from emu.mm.objects import MemoryObject
from emu.mm.pagetable import PTE_EXEC, PTE_READ, PTE_WRITE, PageTable, Pte

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
    @property
    def commits(self) -> bool:
        """Whether the mapping's frames are committed when it is created: anonymous memory
        that is not lazy. (Private file mappings are not: their copies come from free memory.)"""
        return not self.lazy and not self.obj.is_file

    def object_offset(self, vaddr: int) -> int:
        """Object offset of the page containing `vaddr`."""
        return self.offset + ((vaddr & PAGE_MASK) - self.start)

    def clipped(self, start: int, end: int) -> Mapping:
        """The part of this mapping inside [start, end)."""
        return replace(self, start=start, end=end, offset=self.offset + (start - self.start))

    @property
    def length(self) -> int:
        """Size in bytes."""
        return self.end - self.start


@dataclass(eq=False)
class LargeBlock:
    """Contiguous, aligned frames set aside for one large-page range of committed memory,
    handed to its pages as they are first touched, so that they can coalesce."""

    shift: int
    base_frame: int
    owned: bytearray            # per page: 1 while the block still holds its frame


def page_align_up(value: int) -> int:
    """`value` rounded up to a page boundary."""
    return (value + PAGE_SIZE - 1) & PAGE_MASK


class AddressSpace:
    """One process's mappings and page table."""

    def __init__(self, frames: FrameAllocator,
                 on_translations_removed: Callable[[AddressSpace, int, int], None],
                 on_write_back: Callable[[AddressSpace, int], None] = lambda space, pages: None,
                 large_shifts: tuple[int, ...] = (),
                 on_large_page: Callable[[AddressSpace, int, int, bool], None] | None = None,
                 ) -> None:
        """An empty space; `on_translations_removed(space, start, end)` is called after
        translations of [start, end) were removed or lowered, `on_write_back(space, pages)`
        after file pages went to the backing store, `on_large_page(space, vaddr, size,
        formed)` when a large page formed or split; with `large_shifts`, committed memory
        coalesces into large pages of those sizes."""
        hook = (None if on_large_page is None else
                lambda vaddr, size, formed: on_large_page(self, vaddr, size, formed))
        self.page_table = PageTable(large_shifts, hook, frames.mark_code)
        self.owner = 0                  # pid of the owning process (for its events)
        self._blocks: dict[tuple[int, int], LargeBlock] = {}
        self._on_write_back = on_write_back
        self._frames = frames
        self._starts: list[int] = []
        self._maps: list[Mapping] = []
        self._on_removed = on_translations_removed
        self.brk_start = 0
        self.brk = 0

    # ---- queries ----

    def find(self, vaddr: int) -> Mapping | None:
        """The mapping containing `vaddr`, if any."""
        i = bisect.bisect_right(self._starts, vaddr) - 1
        if i >= 0 and vaddr < self._maps[i].end:
            return self._maps[i]
        return None

    def mappings(self) -> Iterator[Mapping]:
        """All mappings in address order."""
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

    def placement_alignment(self, length: int) -> int:
        """Where a mapping of `length` bytes is best placed: aligned to the largest large page
        it can hold (so that its pages can coalesce), else to a page."""
        fitting = [1 << s for s in self.page_table.large_shifts if (1 << s) <= length]
        return max(fitting, default=PAGE_SIZE)

    def _overlapping(self, start: int, end: int) -> Iterator[int]:
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        while i < len(self._maps) and self._maps[i].start < end:
            if self._maps[i].end > start:
                yield i
            i += 1

    # ---- changes ----

    def insert(self, mapping: Mapping) -> None:
        """Add a mapping over a free range, committing its frames if it commits
        (OutOfFrames, and nothing inserted, when RAM cannot cover them)."""
        assert mapping.start % PAGE_SIZE == 0 and mapping.end % PAGE_SIZE == 0
        assert mapping.start < mapping.end and not self.overlaps(mapping.start, mapping.end)
        if mapping.commits:
            self._frames.reserve(mapping.length >> PAGE_SHIFT)
        self._place(mapping)

    def _place(self, mapping: Mapping) -> None:
        """Put a mapping in the sorted list (no commit accounting: splits keep theirs)."""
        i = bisect.bisect_left(self._starts, mapping.start)
        self._starts.insert(i, mapping.start)
        self._maps.insert(i, mapping)

    def remove(self, start: int, end: int) -> list[Mapping]:
        """Unmap [start, end): free its frames, split mappings at the edges; returns what was removed."""
        removed: list[Mapping] = []
        for i in reversed(list(self._overlapping(start, end))):
            m = self._maps.pop(i)
            self._starts.pop(i)
            for piece in (m.clipped(m.start, start) if m.start < start else None,
                          m.clipped(end, m.end) if m.end > end else None):
                if piece is not None:
                    self._place(piece)
            removed.append(m.clipped(max(m.start, start), min(m.end, end)))
        written = 0
        for m in removed:
            written += self._write_back(m, m.start, m.end, clean=False)
            resident = self._drop_pages(m.start, m.end)
            held = self._release_block_frames(m.start, m.end) if self._blocks else 0
            if m.commits:
                self._frames.unreserve((m.length >> PAGE_SHIFT) - resident - held)
        if written:
            self._on_write_back(self, written)
        if removed:
            self._on_removed(self, min(m.start for m in removed), max(m.end for m in removed))
        return removed

    def _write_back(self, m: Mapping, start: int, end: int, clean: bool) -> int:
        """Write the modified pages of a shared file mapping in [start, end) to the file;
        with `clean`, map them read-only and unmodified again (tracking starts over).
        Returns how many pages were written (none with MAP_NOSYNCFILE)."""
        obj = m.obj
        if not obj.cached or m.share is not Share.SHARED:
            return 0
        written = 0
        for vpn, pte in list(self.page_table.entries(start >> PAGE_SHIFT, end >> PAGE_SHIFT)):
            if not pte.modified:
                continue
            index = m.object_offset(vpn << PAGE_SHIFT) >> PAGE_SHIFT
            if not obj.nosync and obj.file.write_back(index):
                written += 1
            if clean:
                self.page_table.map(vpn, pte._replace(perms=pte.perms & ~PROT_WRITE, modified=False))
        return written

    def dirty_file_pages(self, start: int, end: int) -> int:
        """How many modified pages of shared file mappings in [start, end) msync would write."""
        count = 0
        for m in self.mappings_in(start, end):
            if m.obj.cached and m.share is Share.SHARED and not m.obj.nosync:
                count += sum(1 for _, pte in self.page_table.entries(m.start >> PAGE_SHIFT,
                                                                     m.end >> PAGE_SHIFT)
                             if pte.modified)
        return count

    def sync(self, start: int, end: int, invalidate: bool) -> int:
        """msync: write modified shared file pages of [start, end) back and re-protect them;
        with `invalidate`, also drop clean pages so they are read from the file again.
        Returns the number of pages written."""
        written = 0
        for m in self.mappings_in(start, end):
            written += self._write_back(m, m.start, m.end, clean=True)
            if invalidate and m.obj.cached:
                for vpn, pte in list(self.page_table.entries(m.start >> PAGE_SHIFT,
                                                             m.end >> PAGE_SHIFT)):
                    index = m.object_offset(vpn << PAGE_SHIFT) >> PAGE_SHIFT
                    if not pte.modified and m.obj.file.pages.get(index) == pte.frame:
                        self.page_table.unmap(vpn)
                        self._frames.release(pte.frame)
                        m.obj.file.drop(index)
        self._on_removed(self, start, end)
        return written

    def _change(self, start: int, end: int, **changes: object) -> list[Mapping]:
        """Apply `changes` to the mapping pages in [start, end), splitting mappings at the
        edges; returns the affected parts as they were before."""
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
                    self._place(piece)
        return before

    def fork_into(self, child: AddressSpace) -> None:
        """Give an empty `child` space this one's mappings and pages (fork): shared mappings
        share their frames; private pages become copy-on-write in both spaces (the frame
        shared, write permission removed). The child's mappings commit nothing: its copies
        come from free memory, and it inherits no locks."""
        assert not child._maps, "fork into a space that is not empty"
        for m in self._maps:
            child._place(replace(m, locked=False, lazy=True) if m.commits else
                         replace(m, locked=False))
        lowered = False
        for vpn, pte in list(self.page_table.entries(0, 1 << 52)):
            mapping = self.find(vpn << PAGE_SHIFT)
            assert mapping is not None
            self._frames.share(pte.frame)
            if mapping.share is Share.PRIVATE and pte.perms & PROT_WRITE:
                pte = pte._replace(perms=pte.perms & ~PROT_WRITE)
                self.page_table.map(vpn, pte)
                lowered = True
            child.page_table.map(vpn, pte)
        child.brk_start, child.brk = self.brk_start, self.brk
        if lowered:
            self._on_removed(self, 0, USER_END)

    def frame_shared(self, frame: int) -> bool:
        """Whether a frame is mapped or held by more than one user (copy-on-write pending)."""
        return self._frames.refcount(frame) > 1

    # ---- large pages ----

    def block_frame(self, mapping: Mapping, vaddr: int) -> int | None:
        """The frame a first touch of `vaddr` should get so that its large-page range can
        coalesce: from the range's block, which is set up (with frames the range's pages had
        reserved) on the first touch of a wholly untouched range. None: allocate as usual."""
        if not self.page_table.large_shifts or not mapping.commits:
            return None
        vpn = vaddr >> PAGE_SHIFT
        for shift in reversed(self.page_table.large_shifts):       # largest first
            pages = 1 << (shift - PAGE_SHIFT)
            base = vpn & ~(pages - 1)
            if base << PAGE_SHIFT < mapping.start or (base + pages) << PAGE_SHIFT > mapping.end:
                continue
            block = self._blocks.get((base, shift))
            if block is None:
                block = self._new_block(base, shift)
                if block is None:
                    continue
            if not block.owned[vpn - base]:
                return None
            block.owned[vpn - base] = 0
            return block.base_frame + (vpn - base)
        return None

    def _new_block(self, base: int, shift: int) -> LargeBlock | None:
        pages = 1 << (shift - PAGE_SHIFT)
        overlapping = any(b < base + pages and b + (1 << (s - PAGE_SHIFT)) > base
                          for b, s in self._blocks)
        if overlapping or any(True for _ in self.page_table.entries(base, base + pages)):
            return None
        self._frames.unreserve(pages)          # the block's frames are these pages' commitment
        try:
            frame = self._frames.allocate_block(pages)
        except OutOfFrames:
            self._frames.reserve(pages)
            return None
        block = LargeBlock(shift, frame, bytearray(b"\x01" * pages))
        self._blocks[(base, shift)] = block
        return block

    def try_coalesce(self, vaddr: int) -> bool:
        """Replace the small entries of the large-page range of `vaddr` by one large entry,
        if every page of it is set up from its block, alike (permissions, modified) and
        private; True when a large page formed."""
        if not self._blocks:
            return False
        vpn = vaddr >> PAGE_SHIFT
        for shift in self.page_table.large_shifts:
            pages = 1 << (shift - PAGE_SHIFT)
            base = vpn & ~(pages - 1)
            block = self._blocks.get((base, shift))
            if block is None:
                continue
            if 1 in block.owned or self.page_table.large_entry(vpn) is not None:
                return False
            first = self.page_table.lookup(base)
            if first is None:
                return False
            for i in range(pages):
                pte = self.page_table.lookup(base + i)
                if (pte is None or pte.frame != block.base_frame + i or pte.perms != first.perms
                        or pte.modified != first.modified or self._frames.refcount(pte.frame) != 1):
                    return False
            self.page_table.map_large(base, shift, Pte(block.base_frame, first.perms,
                                                       first.modified))
            return True
        return False

    def _release_block_frames(self, start: int, end: int) -> int:
        """Free the frames blocks still hold for pages of [start, end); returns how many
        (those pages' commitment went into the block)."""
        freed = 0
        lo_vpn, hi_vpn = start >> PAGE_SHIFT, end >> PAGE_SHIFT
        for (base, shift), block in list(self._blocks.items()):
            pages = 1 << (shift - PAGE_SHIFT)
            for vpn in range(max(base, lo_vpn), min(base + pages, hi_vpn)):
                if block.owned[vpn - base]:
                    block.owned[vpn - base] = 0
                    self._frames.release(block.base_frame + vpn - base)
                    freed += 1
            if lo_vpn <= base and base + pages <= hi_vpn:
                del self._blocks[(base, shift)]
        return freed

    def set_locked(self, start: int, end: int, locked: bool) -> int:
        """Mark the mapping pages of [start, end) locked or not; returns how many changed."""
        return sum(m.length >> PAGE_SHIFT for m in self._change(start, end, locked=locked)
                   if m.locked != locked)

    def mappings_in(self, start: int, end: int) -> list[Mapping]:
        """The parts of mappings inside [start, end), in address order."""
        return [self._maps[i].clipped(max(self._maps[i].start, start), min(self._maps[i].end, end))
                for i in self._overlapping(start, end)]

    def protect(self, start: int, end: int, prot: int) -> None:
        """Set the protection of every mapping page in [start, end), splitting mappings as needed."""
        changed = self._change(start, end, prot=prot)
        for vpn, pte in list(self.page_table.entries(start >> PAGE_SHIFT, end >> PAGE_SHIFT)):
            # a page not yet modified stays read-only: its first write is tracked
            self.page_table.map(vpn, pte._replace(perms=prot if pte.modified else prot & ~PROT_WRITE))
        if any(m.prot & ~prot for m in changed):        # raising needs no invalidation
            self._on_removed(self, start, end)

    def discard(self, start: int, end: int) -> None:
        """Drop the pages of [start, end) but keep the mappings (MADV_DONTNEED): next touch refills them."""
        parts = self.mappings_in(start, end)
        # committed pages are committed again for their next touch: reserve before dropping
        # (OutOfFrames, with nothing dropped, when that is not possible)
        self._frames.reserve(sum(len(list(self.page_table.entries(m.start >> PAGE_SHIFT,
                                                                   m.end >> PAGE_SHIFT)))
                                 for m in parts if m.commits))
        for m in parts:
            self._drop_pages(m.start, m.end)
        if parts:
            self._on_removed(self, start, end)

    def release_all(self) -> None:
        """Unmap everything (process exit)."""
        self.remove(0, USER_END)

    def _drop_pages(self, start: int, end: int) -> int:
        """Unmap and release every resident page of [start, end); returns how many there were."""
        entries = self.page_table.drop_range(start >> PAGE_SHIFT, end >> PAGE_SHIFT)
        for _, pte in entries:
            self._frames.release(pte.frame)
        return len(entries)
