"""Address spaces: the mappings (virtual memory areas) of a process and its page table.

This module is mechanism only: place, split, protect and remove mappings, and
keep the page table consistent with them. What a fault should do is decided
in fault.py; the work is done by the pager.

An AddressSpace composes the parts and owns what ties them together: the
mapping set (mappings.py), the page table (pagetable.py) and the large-page
blocks (largepages.py), plus commit accounting (frames reserved for committing
mappings, given back as they go), write-back and msync of shared file pages,
fork's copy-on-write, and write tracking (a page not yet modified is mapped
read-only, so that its first write faults).

Invariants: every PTE lies inside a mapping and grants no permission the mapping
lacks. (The mappings themselves are page-aligned, non-empty and never overlap:
MappingSet keeps that.)
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Iterator

from emu.mm.frames import PAGE_SHIFT, PAGE_SIZE, FrameAllocator
from emu.mm.largepages import LargeBlock, LargePageAllocator
from emu.mm.mappings import (MMAP_BASE, MMAP_MIN, PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE,
                             STACK_SIZE, STACK_TOP, USER_END, Mapping, MappingSet, Share,
                             page_align_up, placement_alignment)
from emu.mm.pagetable import PageTable, TableFrames

__all__ = ["PROT_NONE", "PROT_READ", "PROT_WRITE", "PROT_EXEC", "STACK_TOP", "STACK_SIZE",
           "MMAP_BASE", "MMAP_MIN", "USER_END", "Share", "Mapping", "page_align_up",
           "AddressSpace", "LargeBlock"]


class AddressSpace:
    """One process's mappings and page table."""

    def __init__(self, frames: FrameAllocator, tables: TableFrames,
                 on_translations_removed: Callable[[AddressSpace, int, int], None],
                 on_write_back: Callable[[AddressSpace, str, int], bool] = (
                     lambda space, file, pages: True),
                 large_shifts: tuple[int, ...] = (),
                 on_large_page: Callable[[AddressSpace, int, int, bool], None] | None = None,
                 ) -> None:
        """An empty space whose page tables live in `tables`; `on_translations_removed(space, start, end)` is called after
        translations of [start, end) were removed or lowered, `on_write_back(space, file,
        pages)` before modified pages of a mapping of `file` go to the backing store at
        munmap or exit (False: the device failed them, and they are lost),
        `on_large_page(space, vaddr, size,
        formed)` when a large page formed or split; with `large_shifts`, committed memory
        coalesces into large pages of those sizes."""
        hook = (None if on_large_page is None else
                lambda vaddr, size, formed: on_large_page(self, vaddr, size, formed))
        self.page_table = PageTable(tables, large_shifts, hook, frames.mark_code, frames.total)
        self.owner = 0                  # pid of the owning process (for its events)
        self._large = LargePageAllocator(self.page_table, frames)
        self._on_write_back = on_write_back
        self._frames = frames
        self._mappings = MappingSet()
        self._on_removed = on_translations_removed
        self.brk_start = 0
        self.brk = 0
        self._prefaulted: set[int] = set()      # vpns set up by a prefault, not seen used yet
        self.prefault_unused = 0                # prefaulted pages unmapped without a use

    # ---- queries (the mapping set's) ----

    def find(self, vaddr: int) -> Mapping | None:
        """The mapping containing `vaddr`, if any."""
        return self._mappings.find(vaddr)

    def translations_changed(self, start: int, end: int) -> None:
        """Page-table entries of [start, end) now name other frames: cached translations
        must go."""
        self._on_removed(self, start, end)

    def mappings(self) -> Iterator[Mapping]:
        """All mappings in address order."""
        return self._mappings.mappings()

    @property
    def count(self) -> int:
        """How many mappings there are (Linux's map_count)."""
        return len(self._mappings)

    def overlaps(self, start: int, end: int) -> bool:
        """Whether any mapping intersects [start, end)."""
        return self._mappings.overlaps(start, end)

    def is_free(self, start: int, end: int) -> bool:
        """Whether [start, end) is unmapped and inside user space."""
        return self._mappings.is_free(start, end)

    def find_free(self, length: int, below: int = MMAP_BASE, align: int = PAGE_SIZE) -> int | None:
        """Highest `align`-aligned start of a free gap of `length` bytes ending at or below
        `below`."""
        return self._mappings.find_free(length, below, align)

    def placement_alignment(self, length: int) -> int:
        """Where a mapping of `length` bytes is best placed: aligned to the largest large page
        it can hold (so that its pages can coalesce), else to a page."""
        return placement_alignment(length, self.page_table.large_shifts)

    def mappings_in(self, start: int, end: int) -> list[Mapping]:
        """The parts of mappings inside [start, end), in address order."""
        return self._mappings.mappings_in(start, end)

    def frame_shared(self, frame: int) -> bool:
        """Whether a frame is mapped or held by more than one user (copy-on-write pending)."""
        return self._frames.refcount(frame) > 1

    # ---- mappings and their commitment ----

    def insert(self, mapping: Mapping) -> None:
        """Add a mapping over a free range, committing its frames if it commits
        (OutOfFrames, and nothing inserted, when RAM cannot cover them)."""
        assert mapping.start % PAGE_SIZE == 0 and mapping.end % PAGE_SIZE == 0
        assert mapping.start < mapping.end and not self.overlaps(mapping.start, mapping.end)
        if mapping.commits:
            self._frames.check_demand("commit", mapping.start, mapping.length >> PAGE_SHIFT)
            self._frames.reserve(mapping.length >> PAGE_SHIFT)
        self._mappings.place(mapping)

    def remove(self, start: int, end: int) -> list[Mapping]:
        """Unmap [start, end): free its frames, split mappings at the edges; returns what was removed."""
        removed = self._mappings.take_out(start, end)
        for m in removed:
            dirty = self._dirty_pages(m)
            # the device takes the modified pages first; if it fails them, they are lost
            if dirty and self._on_write_back(self, m.name, dirty):
                self._write_back(m, m.start, m.end, clean=False)
            resident = self._drop_pages(m.start, m.end)
            held = self._large.release_frames(m.start, m.end) if self._large else 0
            if m.commits:
                # the pages' commitment: what neither a resident page nor a block frame used
                self._frames.unreserve((m.length >> PAGE_SHIFT) - resident - held)
        if removed:
            self._on_removed(self, min(m.start for m in removed), max(m.end for m in removed))
        return removed

    def release_all(self) -> None:
        """Unmap everything and free the page tables (process exit, exec)."""
        self.remove(0, USER_END)
        self.page_table.release()

    def set_locked(self, start: int, end: int, locked: bool) -> int:
        """Mark the mapping pages of [start, end) locked or not; returns how many changed."""
        return sum(m.length >> PAGE_SHIFT for m in self._mappings.change(start, end, locked=locked)
                   if m.locked != locked)

    def protect(self, start: int, end: int, prot: int) -> None:
        """Set the protection of every mapping page in [start, end), splitting mappings as needed."""
        changed = self._mappings.change(start, end, prot=prot)
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

    def extend(self, mapping: Mapping, new_end: int) -> None:
        """Grow `mapping` (one of this space's, followed by a free range) in place up to
        `new_end` (mremap): the new part continues its object; OutOfFrames, with nothing
        changed, when a committing mapping's new pages cannot be committed."""
        assert mapping.end < new_end and new_end % PAGE_SIZE == 0
        self.insert(replace(mapping, start=mapping.end, end=new_end,
                            offset=mapping.offset + mapping.length))
        self._mappings.merge_around(mapping.start, new_end)

    def move(self, old: Mapping, new_start: int, new_length: int, keep_old: bool = False) -> None:
        """Move `old` (a part of one of this space's mappings) with its pages to the free
        range at `new_start`, `new_length` bytes long (at least old's length: the rest
        continues its object) (mremap). With `keep_old` (MREMAP_DONTUNMAP) the old range
        stays mapped, emptied. OutOfFrames, with nothing changed, when the new pages of a
        committing mapping cannot be committed."""
        assert new_length >= old.length and new_start % PAGE_SIZE == 0
        extra = (new_length - old.length) >> PAGE_SHIFT
        if old.commits:
            demand = extra + (old.length >> PAGE_SHIFT if keep_old else 0)
            self._frames.check_demand("commit", new_start, demand)
            self._frames.reserve(demand)
        self._mappings.take_out(old.start, old.end)
        moved = self.page_table.drop_range(old.start >> PAGE_SHIFT, old.end >> PAGE_SHIFT)
        if self._large:
            held = self._large.release_frames(old.start, old.end)
            if old.commits:             # those pages' commitment was in the block: again
                self._frames.reserve(held)
        self._mappings.place(replace(old, start=new_start, end=new_start + new_length))
        shift = (new_start - old.start) >> PAGE_SHIFT
        for vpn, pte in moved:
            self.page_table.map(vpn + shift, pte)
        if keep_old:
            self._mappings.place(old)
        self._on_removed(self, old.start, old.end)

    def _drop_pages(self, start: int, end: int) -> int:
        """Unmap and release every resident page of [start, end); returns how many there were."""
        entries = self.page_table.drop_range(start >> PAGE_SHIFT, end >> PAGE_SHIFT)
        for vpn, pte in entries:
            self._frames.release(pte.frame)
            if self._prefaulted and vpn in self._prefaulted:
                self._prefaulted.discard(vpn)
                self.prefault_unused += not pte.accessed
        return len(entries)

    def note_prefaulted(self, vpn: int) -> None:
        """Page `vpn` was set up by a prefault, not by a touch: whether it is ever used is
        read from its accessed bit when it goes."""
        self._prefaulted.add(vpn)

    # ---- write-back and msync ----

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
        return sum(self._dirty_pages(m) for m in self.mappings_in(start, end))

    def _dirty_pages(self, m: Mapping) -> int:
        """How many modified pages of `m` (a whole mapping or a part) go to its file."""
        if not (m.obj.cached and m.share is Share.SHARED and not m.obj.nosync):
            return 0
        return sum(1 for _, pte in self.page_table.entries(m.start >> PAGE_SHIFT,
                                                           m.end >> PAGE_SHIFT) if pte.modified)

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

    # ---- fork ----

    def fork_into(self, child: AddressSpace) -> None:
        """Give an empty `child` space this one's mappings and pages (fork): shared mappings
        share their frames; private pages become copy-on-write in both spaces (the frame
        shared, write permission removed). The child's mappings commit nothing: its copies
        come from free memory, and it inherits no locks."""
        assert not len(child._mappings), "fork into a space that is not empty"
        for m in self._mappings.mappings():
            child._mappings.place(replace(m, locked=False, lazy=True) if m.commits else
                                  replace(m, locked=False))
        lowered = False
        for vpn, pte in list(self.page_table.entries(0, 1 << 52)):
            mapping = self.find(vpn << PAGE_SHIFT)
            assert mapping is not None, f"PTE of {vpn << PAGE_SHIFT:#x} outside every mapping"
            assert not pte.perms & ~mapping.prot, f"PTE of {vpn << PAGE_SHIFT:#x} exceeds its mapping"
            self._frames.share(pte.frame)
            if mapping.share is Share.PRIVATE and pte.perms & PROT_WRITE:
                pte = pte._replace(perms=pte.perms & ~PROT_WRITE)
                self.page_table.map(vpn, pte)
                lowered = True
            child.page_table.map(vpn, pte)
        child.brk_start, child.brk = self.brk_start, self.brk
        if lowered:
            self._on_removed(self, 0, USER_END)

    # ---- large pages (the allocator's) ----

    def block_frame(self, mapping: Mapping, vaddr: int) -> int | None:
        """The frame a first touch of `vaddr` should get so that its large-page range can
        coalesce: from the range's block, which is set up (with frames the range's pages had
        reserved) on the first touch of a wholly untouched range. None: allocate as usual."""
        return self._large.block_frame(mapping, vaddr)

    def try_coalesce(self, vaddr: int) -> bool:
        """Replace the small entries of the large-page range of `vaddr` by one large entry,
        if every page of it is set up from its block, alike (permissions, modified) and
        private; True when a large page formed."""
        return self._large.try_coalesce(vaddr)
