"""AddressSpace: mappings, placement, splitting, protection and the page table kept consistent."""
from __future__ import annotations

import pytest

from emu.mm.fault import Access
from emu.mm.frames import PAGE_SHIFT, PAGE_SIZE
from emu.mm.objects import AnonymousMemory
from emu.mm.pagetable import PTE_EXEC, PTE_READ, PTE_WRITE
from emu.mm.vmspace import (MMAP_BASE, MMAP_MIN, PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE,
                            STACK_TOP, Mapping, Share, page_align_up)

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
RX = PROT_READ | PROT_EXEC
BASE = 0x10_0000


def anon(start: int, end: int, prot: int = RW, offset: int = 0, lazy: bool = False) -> Mapping:
    return Mapping(start, end, prot, Share.PRIVATE, AnonymousMemory(), offset, "[anon]", lazy=lazy)


def spans(space) -> list[tuple[int, int, int]]:
    return [(m.start, m.end, m.prot) for m in space.mappings()]


def present(space, start: int, end: int) -> list[int]:
    """Addresses of the pages of [start, end) that have a PTE."""
    return [vpn << PAGE_SHIFT for vpn, _ in space.page_table.entries(start >> PAGE_SHIFT,
                                                                      end >> PAGE_SHIFT)]


# ---- helpers and Mapping ----

def test_page_align_up():
    assert [page_align_up(v) for v in (0, 1, P - 1, P, P + 1)] == [0, P, P, P, 2 * P]


def test_mapping_object_offset_and_clipping():
    m = anon(BASE, BASE + 8 * P, offset=0x5000)
    assert m.length == 8 * P
    assert m.object_offset(BASE + 2 * P + 123) == 0x5000 + 2 * P
    part = m.clipped(BASE + 3 * P, BASE + 5 * P)
    assert (part.start, part.end, part.offset, part.obj) == (BASE + 3 * P, BASE + 5 * P,
                                                             0x5000 + 3 * P, m.obj)


# ---- insert / find / overlaps ----

def test_find_inside_at_edges_and_outside(mem):
    m = mem.map_anon(BASE, 4, RW)
    assert mem.space.find(BASE) == m
    assert mem.space.find(BASE + 4 * P - 1) == m
    assert mem.space.find(BASE + 4 * P) is None
    assert mem.space.find(BASE - 1) is None
    assert mem.space.find(0) is None


def test_mappings_are_listed_in_address_order(mem):
    for start in (BASE + 20 * P, BASE, BASE + 10 * P):
        mem.map_anon(start, 2, RW)
    assert [m.start for m in mem.space.mappings()] == [BASE, BASE + 10 * P, BASE + 20 * P]
    assert mem.space.find(BASE + 10 * P + 5).start == BASE + 10 * P


def test_adjacent_mappings_do_not_overlap(mem):
    mem.map_anon(BASE, 2, RW)
    mem.map_anon(BASE + 2 * P, 2, PROT_READ)
    assert mem.space.find(BASE + 2 * P - 1).prot == RW
    assert mem.space.find(BASE + 2 * P).prot == PROT_READ


@pytest.mark.skipif(not __debug__, reason="insert checks are assertions (python -O)")
def test_inserting_over_an_existing_mapping_is_refused(mem):
    mem.map_anon(BASE, 4, RW)
    with pytest.raises(AssertionError):
        mem.space.insert(anon(BASE + 3 * P, BASE + 5 * P))
    with pytest.raises(AssertionError):
        mem.space.insert(anon(BASE + 100, BASE + 100 + P))       # not page-aligned


def test_overlaps(mem):
    mem.map_anon(BASE, 4, RW)
    assert mem.space.overlaps(BASE + P, BASE + 2 * P)
    assert mem.space.overlaps(BASE - P, BASE + 1)
    assert mem.space.overlaps(BASE + 4 * P - 1, BASE + 8 * P)
    assert not mem.space.overlaps(BASE - P, BASE)
    assert not mem.space.overlaps(BASE + 4 * P, BASE + 5 * P)


def test_is_free(mem):
    mem.map_anon(BASE, 4, RW)
    assert mem.space.is_free(BASE + 4 * P, BASE + 6 * P)
    assert not mem.space.is_free(BASE + 3 * P, BASE + 6 * P)
    assert not mem.space.is_free(0, P)                         # below MMAP_MIN
    assert not mem.space.is_free(MMAP_MIN - P, MMAP_MIN + P)
    assert mem.space.is_free(MMAP_MIN, MMAP_MIN + P)
    assert mem.space.is_free(STACK_TOP - P, STACK_TOP)
    assert not mem.space.is_free(STACK_TOP - P, STACK_TOP + P)  # past user space
    assert not mem.space.is_free(BASE + 8 * P, BASE + 8 * P)   # empty range


# ---- find_free ----

def test_find_free_in_an_empty_space_is_just_below_mmap_base(mem):
    assert mem.space.find_free(3 * P) == MMAP_BASE - 3 * P


def test_find_free_places_top_down_below_the_last_mapping(mem):
    first = mem.space.find_free(2 * P)
    mem.space.insert(anon(first, first + 2 * P))
    second = mem.space.find_free(5 * P)
    assert second == first - 5 * P


def test_find_free_uses_a_gap_that_is_large_enough(mem):
    top = MMAP_BASE
    mem.space.insert(anon(top - 4 * P, top))              # A
    mem.space.insert(anon(top - 10 * P, top - 7 * P))     # B: 3-page gap between A and B
    assert mem.space.find_free(3 * P) == top - 7 * P
    assert mem.space.find_free(P) == top - 5 * P          # highest fit, right below A
    assert mem.space.find_free(4 * P) == top - 14 * P     # gap too small: go below B


def test_find_free_ignores_mappings_above_the_limit(mem):
    mem.space.insert(anon(MMAP_BASE + P, MMAP_BASE + 10 * P))
    assert mem.space.find_free(P) == MMAP_BASE - P


def test_find_free_with_a_mapping_straddling_the_limit(mem):
    below = BASE + 100 * P
    mem.space.insert(anon(below - 2 * P, below + 2 * P))
    assert mem.space.find_free(P, below=below) == below - 3 * P


def test_find_free_result_is_free(mem):
    for length in (P, 7 * P, 3 * P, P, 16 * P):
        start = mem.space.find_free(length)
        assert mem.space.is_free(start, start + length)
        mem.space.insert(anon(start, start + length))


def test_find_free_fails_below_mmap_min(mem):
    mem.space.insert(anon(MMAP_MIN + P, MMAP_BASE, lazy=True))      # too big to commit
    assert mem.space.find_free(P) == MMAP_MIN
    assert mem.space.find_free(2 * P) is None
    assert mem.space.find_free(MMAP_BASE) is None


# ---- remove ----

def test_remove_the_middle_splits_a_mapping_in_three(mem):
    m = Mapping(BASE, BASE + 10 * P, RW, Share.PRIVATE, AnonymousMemory(), 0x3000, "[x]")
    mem.space.insert(m)
    mem.populate(BASE, BASE + 10 * P)
    assert mem.frames.in_use == 10

    removed = mem.space.remove(BASE + 3 * P, BASE + 7 * P)

    assert [(r.start, r.end, r.offset) for r in removed] == [(BASE + 3 * P, BASE + 7 * P,
                                                              0x3000 + 3 * P)]
    left, right = mem.space.mappings()
    assert (left.start, left.end, left.offset) == (BASE, BASE + 3 * P, 0x3000)
    assert (right.start, right.end, right.offset) == (BASE + 7 * P, BASE + 10 * P, 0x3000 + 7 * P)
    assert left.obj is m.obj is right.obj and left.name == right.name == "[x]"
    assert mem.frames.in_use == 6
    assert present(mem.space, BASE, BASE + 10 * P) == [BASE + i * P for i in (0, 1, 2, 7, 8, 9)]
    assert mem.space.find(BASE + 5 * P) is None


def test_remove_releases_the_frames_of_removed_pages(mem):
    mem.map_anon(BASE, 4, RW)
    mem.populate(BASE, BASE + 4 * P)
    frames = [pte.frame for _, pte in mem.space.page_table.entries(BASE >> 12, (BASE >> 12) + 4)]
    mem.space.remove(BASE, BASE + 4 * P)
    assert mem.frames.in_use == 0
    assert all(mem.frames.refcount(f) == 0 for f in frames)
    assert len(mem.space.page_table) == 0


def test_remove_spanning_several_mappings_and_holes(mem):
    mem.map_anon(BASE, 4, RW)
    mem.map_anon(BASE + 6 * P, 2, PROT_READ)
    mem.map_anon(BASE + 10 * P, 4, RW)
    mem.populate(BASE, BASE + 4 * P)
    mem.populate(BASE + 6 * P, BASE + 8 * P)
    mem.populate(BASE + 10 * P, BASE + 14 * P)

    removed = mem.space.remove(BASE + 2 * P, BASE + 12 * P)

    assert sorted((r.start, r.end) for r in removed) == [
        (BASE + 2 * P, BASE + 4 * P), (BASE + 6 * P, BASE + 8 * P), (BASE + 10 * P, BASE + 12 * P)]
    assert spans(mem.space) == [(BASE, BASE + 2 * P, RW), (BASE + 12 * P, BASE + 14 * P, RW)]
    assert mem.frames.in_use == 4


def test_remove_of_nothing_mapped_does_not_flush(mem):
    mem.map_anon(BASE, 2, RW)
    assert mem.space.remove(BASE + 4 * P, BASE + 8 * P) == []
    assert mem.tlb_changes == []


def test_remove_asks_to_invalidate_just_what_it_removed(mem):
    mem.map_anon(BASE, 2, RW)
    mem.map_anon(BASE + 4 * P, 2, RX)
    mem.space.remove(BASE, BASE + 2 * P)
    assert mem.tlb_changes == [(BASE, BASE + 2 * P)]
    mem.space.remove(BASE + 3 * P, BASE + 5 * P)        # only BASE+4P.. is mapped there
    assert mem.tlb_changes == [(BASE, BASE + 2 * P), (BASE + 4 * P, BASE + 5 * P)]


def test_release_all_frees_everything(mem):
    mem.map_anon(BASE, 3, RW)
    mem.map_anon(MMAP_BASE - 2 * P, 2, RX)
    mem.populate(BASE, BASE + 3 * P)
    mem.populate(MMAP_BASE - 2 * P, MMAP_BASE)
    mem.space.release_all()
    assert list(mem.space.mappings()) == []
    assert mem.frames.in_use == 0
    assert len(mem.space.page_table) == 0
    assert mem.tlb_changes == [(BASE, MMAP_BASE)]


# ---- protect ----

def test_protect_the_middle_splits_and_changes_only_those_ptes(mem):
    mem.map_anon(BASE, 8, RW)
    mem.populate(BASE, BASE + 8 * P)

    mem.space.protect(BASE + 2 * P, BASE + 5 * P, PROT_READ)

    assert spans(mem.space) == [(BASE, BASE + 2 * P, RW), (BASE + 2 * P, BASE + 5 * P, PROT_READ),
                                (BASE + 5 * P, BASE + 8 * P, RW)]
    assert [m.offset for m in mem.space.mappings()] == [0, 2 * P, 5 * P]
    perms = {vaddr: mem.space.page_table.lookup(vaddr >> 12).perms
             for vaddr in range(BASE, BASE + 8 * P, P)}
    assert [perms[BASE + i * P] for i in range(8)] == [PTE_READ | PTE_WRITE] * 2 + [PTE_READ] * 3 \
        + [PTE_READ | PTE_WRITE] * 3
    assert mem.frames.in_use == 8                     # protecting keeps the pages
    assert mem.tlb_changes == [(BASE + 2 * P, BASE + 5 * P)]


def test_protect_keeps_frames_and_modified_bits(mem):
    mem.map_anon(BASE, 2, RW)
    mem.populate(BASE, BASE + 2 * P)
    before = mem.space.page_table.lookup(BASE >> 12)
    mem.space.protect(BASE, BASE + 2 * P, PROT_READ | PROT_EXEC)
    after = mem.space.page_table.lookup(BASE >> 12)
    assert (after.frame, after.modified) == (before.frame, before.modified)
    assert after.perms == PTE_READ | PTE_EXEC


def test_protect_none_keeps_a_valid_entry_without_permissions(mem):
    mem.map_anon(BASE, 1, RW)
    mem.populate(BASE, BASE + P)
    mem.space.protect(BASE, BASE + P, PROT_NONE)
    assert mem.space.find(BASE).prot == PROT_NONE
    assert mem.space.page_table.lookup(BASE >> 12).perms == 0


def test_protect_across_two_mappings(mem):
    mem.map_anon(BASE, 4, RW)
    mem.map_anon(BASE + 4 * P, 4, PROT_READ)
    mem.space.protect(BASE + 2 * P, BASE + 6 * P, RW | PROT_EXEC)
    assert spans(mem.space) == [(BASE, BASE + 2 * P, RW),
                                (BASE + 2 * P, BASE + 4 * P, RW | PROT_EXEC),
                                (BASE + 4 * P, BASE + 6 * P, RW | PROT_EXEC),
                                (BASE + 6 * P, BASE + 8 * P, PROT_READ)]


@pytest.mark.parametrize("old, new, lowered", [
    (RW, PROT_READ, True),     # losing write
    (RW, RX, True),            # losing write, gaining exec
    (RX, PROT_READ, True),     # losing exec
    (RX, RX | PROT_WRITE, False),   # only gaining: cached translations stay valid
    (PROT_READ, RW, False),
])
def test_protect_invalidates_only_when_permissions_are_lowered(mem, old, new, lowered):
    mem.map_anon(BASE, 2, old)
    mem.space.protect(BASE, BASE + 2 * P, new)
    assert mem.tlb_changes == ([(BASE, BASE + 2 * P)] if lowered else [])


def test_protect_of_a_whole_mapping_does_not_split(mem):
    mem.map_anon(BASE, 4, RW)
    mem.space.protect(BASE, BASE + 4 * P, PROT_READ)
    assert spans(mem.space) == [(BASE, BASE + 4 * P, PROT_READ)]


def test_protect_pte_permissions_match_executable_bit(mem):
    mem.map_anon(BASE, 1, RW)
    mem.populate(BASE, BASE + P)
    mem.space.protect(BASE, BASE + P, RX)
    assert mem.space.page_table.lookup(BASE >> 12).perms == PTE_READ | PTE_EXEC
    assert not mem.space.page_table.lookup(BASE >> 12).perms & PTE_WRITE


# ---- discard ----

def test_discard_drops_pages_but_keeps_the_mapping(mem):
    m = mem.map_anon(BASE, 4, RW)
    mem.populate(BASE, BASE + 4 * P)
    mem.space.discard(BASE + P, BASE + 3 * P)
    assert list(mem.space.mappings()) == [m]
    assert present(mem.space, BASE, BASE + 4 * P) == [BASE, BASE + 3 * P]
    assert mem.frames.in_use == 2
    assert mem.tlb_changes == [(BASE + P, BASE + 3 * P)]


def test_discarded_anonymous_page_reads_back_as_zeros(mem):
    mem.map_anon(BASE, 1, RW)
    mem.populate(BASE, BASE + P)
    frame = mem.space.page_table.lookup(BASE >> 12).frame
    mem.ram.write(frame << 12, b"dirty")
    mem.space.discard(BASE, BASE + P)
    assert mem.fault_in(BASE, Access.READ)
    frame = mem.space.page_table.lookup(BASE >> 12).frame
    assert mem.ram.read(frame << 12, 5) == bytes(5)


def test_freeing_executable_pages_drops_their_translated_code(mem):
    freed: list[int] = []
    mem.frames.on_code_freed = freed.append
    mem.map_anon(BASE, 2, RX | PROT_WRITE)
    mem.map_anon(BASE + 4 * P, 1, RW)
    mem.populate(BASE, BASE + 2 * P)
    mem.populate(BASE + 4 * P, BASE + 5 * P)
    code = [mem.space.page_table.lookup((BASE >> 12) + i).frame for i in range(2)]
    assert all(mem.frames.is_code(f) for f in code)
    mem.space.discard(BASE, BASE + 2 * P)
    mem.space.remove(BASE + 4 * P, BASE + 5 * P)          # a data page: no code to drop
    assert mem.tlb_changes == [(BASE, BASE + 2 * P), (BASE + 4 * P, BASE + 5 * P)]
    assert freed == code and not any(mem.frames.is_code(f) for f in code)
