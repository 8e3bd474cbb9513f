"""Large pages: the blocks of contiguous frames committed memory coalesces from.

A large-page range (naturally aligned, 1 << shift bytes for a shift the page
table supports) of a committing mapping gets a block on the first touch of any
of its pages while it is wholly untouched: `pages` contiguous, aligned frames
taken in place of the commitment those pages had reserved. Its pages are then
set up from the block's frames, one per page as it is first touched, and once
every one of them is, alike and private, `try_coalesce` replaces their small
entries by one large entry.

Invariants: blocks never overlap; a block's frame for a page is either still
held by the block (`owned`) or was handed to that page, never both, and every
frame a block holds stands for one reserved page of its range.
"""
from __future__ import annotations

from dataclasses import dataclass

from emu.mm.frames import PAGE_SHIFT, FrameAllocator, OutOfFrames
from emu.mm.mappings import Mapping
from emu.mm.pagetable import PageTable, Pte


@dataclass(eq=False)
class LargeBlock:
    """Contiguous, aligned frames set aside for one large-page range of committed memory,
    handed to its pages as they are first touched, so that they can coalesce."""

    shift: int
    base_frame: int
    owned: bytearray            # per page: 1 while the block still holds its frame


class LargePageAllocator:
    """The large-page blocks of one address space, over its page table and the frames."""

    def __init__(self, page_table: PageTable, frames: FrameAllocator) -> None:
        """No blocks yet; large pages of `page_table.large_shifts` (none: never any)."""
        self.page_table = page_table
        self._frames = frames
        self.blocks: dict[tuple[int, int], LargeBlock] = {}     # (first vpn, shift) -> block

    def __bool__(self) -> bool:
        """Whether any block exists (else there is nothing to release or coalesce)."""
        return bool(self.blocks)

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
            block = self.blocks.get((base, shift))
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
        """A block for the range of `pages` at `base`, taking the place of those pages'
        commitment; None if the range is touched, overlaps a block, or no block is free."""
        pages = 1 << (shift - PAGE_SHIFT)
        overlapping = any(b < base + pages and b + (1 << (s - PAGE_SHIFT)) > base
                          for b, s in self.blocks)
        if overlapping or any(True for _ in self.page_table.entries(base, base + pages)):
            return None
        self._frames.unreserve(pages)          # the block's frames are these pages' commitment
        try:
            frame = self._frames.allocate_block(pages)
        except OutOfFrames:
            self._frames.reserve(pages)
            return None
        assert frame % pages == 0, "block not aligned"
        block = LargeBlock(shift, frame, bytearray(b"\x01" * pages))
        self.blocks[(base, shift)] = block
        return block

    def try_coalesce(self, vaddr: int) -> bool:
        """Replace the small entries of the large-page range of `vaddr` by one large entry,
        if every page of it is set up from its block, alike (permissions, modified) and
        private; True when a large page formed."""
        if not self.blocks:
            return False
        vpn = vaddr >> PAGE_SHIFT
        for shift in self.page_table.large_shifts:
            pages = 1 << (shift - PAGE_SHIFT)
            base = vpn & ~(pages - 1)
            block = self.blocks.get((base, shift))
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

    def release_frames(self, start: int, end: int) -> int:
        """Free the frames blocks still hold for pages of [start, end), and forget the blocks
        wholly inside it; returns how many frames (those pages' commitment went into the
        block)."""
        freed = 0
        lo_vpn, hi_vpn = start >> PAGE_SHIFT, end >> PAGE_SHIFT
        for (base, shift), block in list(self.blocks.items()):
            pages = 1 << (shift - PAGE_SHIFT)
            for vpn in range(max(base, lo_vpn), min(base + pages, hi_vpn)):
                if block.owned[vpn - base]:
                    block.owned[vpn - base] = 0
                    self._frames.release(block.base_frame + vpn - base)
                    freed += 1
            if lo_vpn <= base and base + pages <= hi_vpn:
                del self.blocks[(base, shift)]
        return freed
