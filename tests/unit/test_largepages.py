"""LargePageAllocator: blocks set up on first touch, coalescing, and the frames they hold."""
from __future__ import annotations

import pytest

from emu.mm.fault import Access
from emu.mm.frames import PAGE_SHIFT, PAGE_SIZE, FrameAllocator, PhysicalMemory
from emu.mm.largepages import LargeBlock, LargePageAllocator
from emu.mm.mappings import PROT_READ, PROT_WRITE, Mapping, Share
from emu.mm.objects import AnonymousMemory
from emu.mm.pagecache import PageCache
from emu.mm.pager import Pager
from emu.mm.pagetable import PageTable, Pte
from emu.mm.vmspace import AddressSpace
from emu.mm import vmspace

from emu.mm.pagetable import PageTableFormat

from .support import Memory, table_frames

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
SHIFT = 16                          # 64 KiB large pages: 16 small ones
PAGES = 1 << (SHIFT - PAGE_SHIFT)
BASE = 0x100_0000                   # aligned to the large page
FRAMES = 64


def anon(start: int, end: int, lazy: bool = False) -> Mapping:
    return Mapping(start, end, RW, Share.PRIVATE, AnonymousMemory(), 0, "[anon]", lazy=lazy)


@pytest.fixture
def frames() -> FrameAllocator:
    return FrameAllocator(FRAMES)


@pytest.fixture
def large(frames) -> LargePageAllocator:
    return LargePageAllocator(PageTable(table_frames(PageTableFormat.AARCH64), (SHIFT,)), frames)


def committed(frames: FrameAllocator, mapping: Mapping) -> Mapping:
    frames.reserve(mapping.length >> PAGE_SHIFT)        # what AddressSpace.insert does
    return mapping


def touch(large: LargePageAllocator, mapping: Mapping, vaddr: int, perms: int = RW) -> int:
    """Set a page up as the pager would, from the block; returns its frame."""
    frame = large.block_frame(mapping, vaddr)
    assert frame is not None
    large.page_table.map(vaddr >> PAGE_SHIFT, Pte(frame, perms, True))
    return frame


def test_vmspace_reexports_large_block():
    assert vmspace.LargeBlock is LargeBlock


def test_no_block_without_large_shifts_or_for_lazy_memory(frames):
    m = committed(frames, anon(BASE, BASE + PAGES * P))
    assert LargePageAllocator(PageTable(table_frames(PageTableFormat.AARCH64), ()), frames).block_frame(m, BASE) is None
    large = LargePageAllocator(PageTable(table_frames(PageTableFormat.AARCH64), (SHIFT,)), frames)
    assert large.block_frame(anon(BASE, BASE + PAGES * P, lazy=True), BASE) is None
    assert not large


def test_first_touch_sets_up_an_aligned_block_from_the_commitment(frames, large):
    m = committed(frames, anon(BASE, BASE + PAGES * P))
    frame = large.block_frame(m, BASE + 3 * P)
    assert large and list(large.blocks) == [(BASE >> PAGE_SHIFT, SHIFT)]
    block = large.blocks[(BASE >> PAGE_SHIFT, SHIFT)]
    assert block.base_frame % PAGES == 0 and frame == block.base_frame + 3
    assert frames.reserved == 0 and frames.in_use == PAGES
    assert list(block.owned).count(1) == PAGES - 1
    assert large.block_frame(m, BASE + 3 * P) is None          # handed out already
    assert large.block_frame(m, BASE + 4 * P) == block.base_frame + 4


def test_no_block_for_a_range_not_wholly_inside_the_mapping(frames, large):
    m = committed(frames, anon(BASE, BASE + (PAGES - 1) * P))
    assert large.block_frame(m, BASE) is None
    assert not large and frames.reserved == PAGES - 1


def test_no_block_for_a_range_already_touched(frames, large):
    m = committed(frames, anon(BASE, BASE + PAGES * P))
    large.page_table.map(BASE >> PAGE_SHIFT, Pte(frames.allocate(reserved=True), RW, True))
    assert large.block_frame(m, BASE + P) is None
    assert not large


def test_no_block_when_no_aligned_run_is_free_keeps_the_commitment():
    frames = FrameAllocator(2 * PAGES)
    taken = [frames.allocate() for _ in range(2 * PAGES)]
    for frame in taken[PAGES // 2:PAGES // 2 + PAGES]:  # PAGES free frames, not an aligned run
        frames.release(frame)
    large = LargePageAllocator(PageTable(table_frames(PageTableFormat.AARCH64), (SHIFT,)), frames)
    m = committed(frames, anon(BASE, BASE + PAGES * P))
    assert large.block_frame(m, BASE) is None
    assert not large and frames.reserved == PAGES


def test_coalesces_once_every_page_is_set_up_alike(frames, large):
    m = committed(frames, anon(BASE, BASE + PAGES * P))
    for i in range(PAGES - 1):
        touch(large, m, BASE + i * P)
        assert not large.try_coalesce(BASE + i * P)
    touch(large, m, BASE + (PAGES - 1) * P)
    assert large.try_coalesce(BASE)
    assert large.page_table.large_entry(BASE >> PAGE_SHIFT) == (BASE >> PAGE_SHIFT, SHIFT)
    assert not large.try_coalesce(BASE)                         # already large


def test_no_coalescing_of_unlike_or_shared_pages(frames, large):
    m = committed(frames, anon(BASE, BASE + PAGES * P))
    frames_of = [touch(large, m, BASE + i * P, perms=PROT_READ if i == 5 else RW)
                 for i in range(PAGES)]
    assert not large.try_coalesce(BASE)
    large.page_table.map((BASE >> PAGE_SHIFT) + 5, Pte(frames_of[5], RW, True))
    frames.share(frames_of[7])
    assert not large.try_coalesce(BASE)
    frames.release(frames_of[7])
    assert large.try_coalesce(BASE)


def test_release_frames_frees_what_blocks_hold_and_forgets_blocks_inside(frames, large):
    m = committed(frames, anon(BASE, BASE + PAGES * P))
    touch(large, m, BASE)
    touch(large, m, BASE + P)
    assert large.release_frames(BASE + 8 * P, BASE + PAGES * P) == 8
    assert large                                                # only partly released
    assert frames.in_use == PAGES - 8
    assert large.release_frames(BASE, BASE + PAGES * P) == PAGES - 8 - 2
    assert not large and frames.in_use == 2                     # the two touched pages


def test_address_space_gives_every_frame_and_commitment_back():
    ram = PhysicalMemory(FRAMES * P)
    frames = FrameAllocator(FRAMES)
    events: list[tuple[int, int, bool]] = []
    space = AddressSpace(frames, table_frames(PageTableFormat.AARCH64), lambda space, start, end: None, large_shifts=(SHIFT,),
                         on_large_page=lambda space, vaddr, size, formed:
                         events.append((vaddr, size, formed)))
    mem = Memory(ram, frames, space, Pager(ram, frames, PageCache(frames, ram)))
    mem.map_anon(BASE, 2 * PAGES, RW)
    assert space.placement_alignment(2 * PAGES * P) == 1 << SHIFT
    mem.populate(BASE, BASE + PAGES * P)
    assert events == [(BASE, 1 << SHIFT, True)]
    assert mem.fault_in(BASE + PAGES * P, Access.WRITE)          # a block for the second range
    space.protect(BASE, BASE + P, PROT_READ)                    # splits the large page
    assert events[-1] == (BASE, 1 << SHIFT, False)
    space.release_all()
    assert frames.in_use == 0 and frames.reserved == 0
