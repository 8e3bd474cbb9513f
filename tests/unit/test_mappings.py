"""MappingSet: the sorted, non-overlapping mappings of a space and their splitting primitives."""
from __future__ import annotations

import pytest

from emu.mm import mappings, vmspace
from emu.mm.frames import PAGE_SIZE
from emu.mm.mappings import (MMAP_BASE, MMAP_MIN, PROT_READ, PROT_WRITE, STACK_TOP, Mapping,
                             MappingSet, Share, placement_alignment)
from emu.mm.objects import AnonymousMemory

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
BASE = 0x10_0000


def anon(start: int, end: int, prot: int = RW, offset: int = 0, name: str = "[anon]") -> Mapping:
    return Mapping(start, end, prot, Share.PRIVATE, AnonymousMemory(), offset, name)


def spans(ms: MappingSet) -> list[tuple[int, int, int]]:
    return [(m.start, m.end, m.prot) for m in ms.mappings()]


@pytest.fixture
def ms() -> MappingSet:
    return MappingSet()


def test_vmspace_reexports_the_same_objects():
    for name in ("PROT_NONE", "PROT_READ", "PROT_WRITE", "PROT_EXEC", "STACK_TOP", "STACK_SIZE",
                 "MMAP_BASE", "MMAP_MIN", "USER_END", "Share", "Mapping", "page_align_up"):
        assert getattr(vmspace, name) is getattr(mappings, name), name
        assert name in vmspace.__all__


def test_place_keeps_address_order_and_find(ms):
    for start in (BASE + 20 * P, BASE, BASE + 10 * P):
        ms.place(anon(start, start + 2 * P))
    assert [s for s, _, _ in spans(ms)] == [BASE, BASE + 10 * P, BASE + 20 * P]
    assert len(ms) == 3
    assert ms.find(BASE + 11 * P).start == BASE + 10 * P
    assert ms.find(BASE + 12 * P) is None
    assert ms.find(0) is None


@pytest.mark.parametrize("bad", [anon(BASE + 1, BASE + P), anon(BASE, BASE + P + 1),
                                 anon(BASE, BASE)])
def test_place_refuses_unaligned_or_empty(ms, bad):
    with pytest.raises(AssertionError):
        ms.place(bad)


@pytest.mark.parametrize("start,end", [(BASE - P, BASE + P), (BASE + 3 * P, BASE + 5 * P),
                                       (BASE + P, BASE + 2 * P), (BASE - 2 * P, BASE + 6 * P)])
def test_place_refuses_overlaps(ms, start, end):
    ms.place(anon(BASE, BASE + 4 * P))
    with pytest.raises(AssertionError):
        ms.place(anon(start, end))
    assert len(ms) == 1


def test_mappings_is_a_snapshot(ms):
    ms.place(anon(BASE, BASE + P))
    it = ms.mappings()
    ms.place(anon(BASE + P, BASE + 2 * P))
    assert len(list(it)) == 1


def test_overlaps_and_is_free(ms):
    ms.place(anon(BASE, BASE + 4 * P))
    assert ms.overlaps(BASE + 3 * P, BASE + 9 * P)
    assert not ms.overlaps(BASE + 4 * P, BASE + 9 * P)
    assert not ms.is_free(BASE, BASE + P)
    assert ms.is_free(BASE + 4 * P, BASE + 5 * P)
    assert not ms.is_free(MMAP_MIN - P, MMAP_MIN)
    assert not ms.is_free(STACK_TOP - P, STACK_TOP + P)


def test_find_free_top_down_and_aligned(ms):
    assert ms.find_free(P) == MMAP_BASE - P
    ms.place(anon(MMAP_BASE - 4 * P, MMAP_BASE))
    assert ms.find_free(2 * P) == MMAP_BASE - 6 * P
    align = 16 * P
    start = ms.find_free(2 * P, align=align)
    assert start % align == 0 and start + 2 * P <= MMAP_BASE - 4 * P
    assert ms.find_free(MMAP_BASE) is None


def test_placement_alignment_is_the_largest_large_page_that_fits():
    assert placement_alignment(1 << 21, (16, 21)) == 1 << 21
    assert placement_alignment((1 << 21) - P, (16, 21)) == 1 << 16
    assert placement_alignment(P, (16, 21)) == P
    assert placement_alignment(1 << 30, ()) == P


def test_mappings_in_clips_to_the_range(ms):
    ms.place(anon(BASE, BASE + 4 * P, offset=0x8000))
    ms.place(anon(BASE + 6 * P, BASE + 8 * P))
    parts = ms.mappings_in(BASE + 2 * P, BASE + 7 * P)
    assert [(m.start, m.end) for m in parts] == [(BASE + 2 * P, BASE + 4 * P),
                                                 (BASE + 6 * P, BASE + 7 * P)]
    assert parts[0].offset == 0x8000 + 2 * P
    assert len(ms) == 2                                     # nothing split


def test_take_out_splits_edges_and_returns_removed_parts_descending(ms):
    ms.place(anon(BASE, BASE + 4 * P, offset=0x1000))
    ms.place(anon(BASE + 6 * P, BASE + 10 * P))
    removed = ms.take_out(BASE + 2 * P, BASE + 8 * P)
    assert [(m.start, m.end) for m in removed] == [(BASE + 6 * P, BASE + 8 * P),
                                                   (BASE + 2 * P, BASE + 4 * P)]
    assert removed[1].offset == 0x1000 + 2 * P
    assert [(s, e) for s, e, _ in spans(ms)] == [(BASE, BASE + 2 * P), (BASE + 8 * P, BASE + 10 * P)]
    assert ms.find(BASE + 8 * P).offset == 2 * P
    assert ms.take_out(BASE + 2 * P, BASE + 8 * P) == []


def test_change_splits_in_three_and_returns_the_parts_before(ms):
    ms.place(anon(BASE, BASE + 6 * P, prot=RW, offset=0))
    before = ms.change(BASE + 2 * P, BASE + 4 * P, prot=PROT_READ, locked=True)
    assert [(m.start, m.end, m.prot, m.locked) for m in before] == [(BASE + 2 * P, BASE + 4 * P,
                                                                     RW, False)]
    assert spans(ms) == [(BASE, BASE + 2 * P, RW), (BASE + 2 * P, BASE + 4 * P, PROT_READ),
                         (BASE + 4 * P, BASE + 6 * P, RW)]
    middle = ms.find(BASE + 3 * P)
    assert middle.locked and middle.offset == 2 * P
    assert not ms.find(BASE).locked


def test_change_over_a_hole_touches_only_mappings(ms):
    ms.place(anon(BASE, BASE + 2 * P))
    ms.place(anon(BASE + 4 * P, BASE + 6 * P))
    before = ms.change(BASE, BASE + 6 * P, prot=PROT_READ)
    assert [(m.start, m.end) for m in before] == [(BASE + 4 * P, BASE + 6 * P), (BASE, BASE + 2 * P)]
    assert spans(ms) == [(BASE, BASE + 2 * P, PROT_READ), (BASE + 4 * P, BASE + 6 * P, PROT_READ)]


def test_changing_a_range_back_merges_the_pieces_again():
    from emu.mm.objects import AnonymousMemory
    from emu.mm.mappings import PROT_READ, PROT_WRITE, Mapping, MappingSet, Share

    s = MappingSet()
    obj = AnonymousMemory()
    s.place(Mapping(0x100000, 0x110000, PROT_READ | PROT_WRITE, Share.PRIVATE, obj, 0, "a"))
    for lo, hi in ((0x102000, 0x105000), (0x101000, 0x10C000), (0x100000, 0x101000)):
        s.change(lo, hi, prot=PROT_READ)
        s.change(lo, hi, prot=PROT_READ | PROT_WRITE)
    assert [(m.start, m.end, m.offset) for m in s.mappings()] == [(0x100000, 0x110000, 0)]
    s.change(0x104000, 0x105000, prot=PROT_READ)           # a real difference stays apart
    assert len(s) == 3
