"""The detailed TLB model (csrc/tlbmodel.c) driven access by access, without an engine: set
associativity and LRU, large-page entries, splintering, address-space ids, ranged
invalidation, and page walks through real page tables with a page-walk cache."""
from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from emu.cpu.fastpath import FastPath, lib
from emu.cpu.tlbmodel import DetailedTlb
from emu.mm.pagetable import PTE_READ, PTE_WRITE, PageTable, PageTableFormat, Pte

from .support import table_frames

K, K64, M2 = 4096, 65536, 2 << 20
LEVEL_CYCLES = (100, 20, 3, 1)       # distinct per level: the sum says which were read
L2_HIT = 7
PWC_HIT = 2


def level(entries: int, ways: int, sizes=(K, K64, M2), hit: int = 0, repl: str = "lru") -> NS:
    return NS(arrays=[NS(entries=entries, ways=ways, page_sizes=list(sizes))], hit_cycles=hit,
              replacement=repl)


def make(l1d=None, l2=None, cache_entries: int = 0, fmt=PageTableFormat.AARCH64,
         shifts=(16, 21)) -> tuple[DetailedTlb, PageTable, FastPath]:
    """A model over a fresh page table that maps nothing yet."""
    fastpath = FastPath(lambda pc, paddr, size: (1, 1))
    fastpath.state.walk_level_cycles = list(LEVEL_CYCLES)
    tlb = NS(l1i=level(8, 8), l1d=l1d or level(4, 4), l2=l2 or level(16, 4, hit=L2_HIT))
    cache = NS(entries=cache_entries, ways=max(1, cache_entries), levels=[0, 1, 2],
               hit_cycles=PWC_HIT)
    model = DetailedTlb(fastpath, tlb, cache, ram_frames=1024, hook=False)
    table = PageTable(table_frames(fmt), shifts)
    lib.fp_set_page_table(fastpath.state, table.handle)
    return model, table, fastpath


def map_pages(table: PageTable, *vpns: int) -> None:
    for vpn in vpns:
        table.map(vpn, Pte(frame=vpn % 1000 + 1, perms=PTE_READ | PTE_WRITE, modified=True))


WALK_4K = L2_HIT + sum(LEVEL_CYCLES)          # an L1 and L2 miss, a whole 4-level walk


def test_a_miss_walks_every_level_then_the_page_hits():
    model, table, fp = make()
    map_pages(table, 0x400)
    assert model.access(0x400_000, "read") == WALK_4K
    assert model.access(0x400_123, "write") == 0
    s = model.stats()
    assert (s["dtlb.readMisses"], s["dtlb.writeHits"], s["l2tlb.misses"]) == (1, 1, 1)
    assert fp.state.walks == 1 and fp.state.walk_cycles == sum(LEVEL_CYCLES)
    assert fp.state.walks_by_levels[3] == 1 and fp.state.fills_by_size[0] == 1


def test_an_l1_miss_that_hits_l2_costs_the_l2_lookup():
    model, table, _ = make(l1d=level(1, 1))
    map_pages(table, 0x400, 0x401)
    model.access(0x400_000)
    model.access(0x401_000)                     # evicts 0x400 from the one-entry L1
    assert model.access(0x400_000) == L2_HIT
    assert model.stats()["l2tlb.hits"] == 1


def test_set_associativity_and_lru():
    # L1: 2 sets x 2 ways; pages 0, 2, 4 share set 0
    model, table, _ = make(l1d=level(4, 2, sizes=(K,)), l2=level(64, 64, hit=L2_HIT))
    map_pages(table, 0x1000, 0x1002, 0x1004, 0x1001)
    for vpn in (0x1000, 0x1002):
        model.access(vpn << 12)
    model.access(0x1000 << 12)                  # 0x1000 is now the most recent
    model.access(0x1001 << 12)                  # the other set: evicts nothing here
    model.access(0x1004 << 12)                  # evicts the LRU of set 0: 0x1002
    assert model.access(0x1000 << 12) == 0
    assert model.access(0x1002 << 12) == L2_HIT


def test_fifo_evicts_the_oldest_fill_even_when_used():
    model, table, _ = make(l1d=level(2, 2, sizes=(K,), repl="fifo"), l2=level(64, 64, hit=L2_HIT))
    map_pages(table, 0x10, 0x11, 0x12)
    model.access(0x10 << 12)
    model.access(0x11 << 12)
    model.access(0x10 << 12)                    # a hit: FIFO does not renew it
    model.access(0x12 << 12)                    # evicts 0x10, the first filled
    assert model.access(0x11 << 12) == 0
    assert model.access(0x10 << 12) == L2_HIT


@pytest.mark.parametrize("shift, pages, levels", [(21, 512, 3), (16, 16, 4)])
def test_one_large_page_entry_covers_the_whole_page(shift, pages, levels):
    model, table, fp = make()
    table.map_large(0x400, shift, Pte(frame=0x400, perms=PTE_READ, modified=False))
    assert model.access(0x400 << 12) == L2_HIT + sum(LEVEL_CYCLES[:levels])
    assert all(model.access((0x400 + i) << 12) == 0 for i in range(0, pages, 3))
    assert fp.state.fills_by_size[1 if shift == 16 else 2] == 1


def test_a_large_page_is_splintered_where_a_tlb_holds_only_small_ones():
    model, table, _ = make(l1d=level(8, 8, sizes=(K,)))
    table.map_large(0x400, 21, Pte(frame=0x400, perms=PTE_READ, modified=False))
    model.access(0x400 << 12)
    assert model.access(0x401 << 12) == L2_HIT      # L1 held a 4K splinter; L2 the 2M page


def test_address_spaces_do_not_share_entries_and_switching_keeps_them():
    model, first, fp = make()
    map_pages(first, 0x400)
    second = PageTable(first.tables, ())
    map_pages(second, 0x400)
    model.access(0x400 << 12)
    lib.fp_set_page_table(fp.state, second.handle)
    assert model.access(0x400 << 12) == WALK_4K     # same address, another space: a miss
    lib.fp_set_page_table(fp.state, first.handle)
    assert model.access(0x400 << 12) == 0           # still cached under its own id


def test_ranged_invalidation_drops_only_the_range():
    model, table, fp = make(l1d=level(8, 8), l2=level(16, 16, hit=L2_HIT))
    map_pages(table, 0x400, 0x401, 0x402)
    for vpn in (0x400, 0x401, 0x402):
        model.access(vpn << 12)
    model.invalidate(table.handle, 0x401 << 12, 0x402 << 12)
    assert model.access(0x400 << 12) == 0 and model.access(0x402 << 12) == 0
    assert model.access(0x401 << 12) > L2_HIT       # walked again
    assert model.stats()["invalidations"] >= 2      # its L1 and L2 entries


def test_the_walk_cache_skips_the_levels_it_holds():
    model, table, fp = make(l1d=level(1, 1, sizes=(K,)), l2=level(1, 1, sizes=(K,), hit=L2_HIT),
                            cache_entries=16)
    map_pages(table, 0x400, 0x401)
    assert model.access(0x400 << 12) == WALK_4K                   # cold: every level
    assert model.access(0x401 << 12) == L2_HIT + PWC_HIT + LEVEL_CYCLES[3]   # only the leaf
    s = model.stats()
    assert (s["walker.pwcMisses"], s["walker.pwcHits"]) == (1, 1)


def test_an_unmapped_address_walks_and_fills_nothing():
    model, table, fp = make()
    map_pages(table, 0x400)
    model.access(0x500 << 12)
    assert model.access(0x500 << 12) > L2_HIT and fp.state.fills_by_size[0] == 0


def test_x86_tables_walk_the_same_way():
    model, table, _ = make(fmt=PageTableFormat.X86_64, shifts=(21,))
    table.map_large(0x200, 21, Pte(frame=0x200, perms=PTE_READ, modified=False))
    assert model.access(0x200 << 12) == L2_HIT + sum(LEVEL_CYCLES[:3])


def test_a_geometry_the_model_cannot_hold_is_refused():
    with pytest.raises(ValueError, match="power-of-two"):
        make(l1d=level(12, 4))                       # 3 sets
    with pytest.raises(ValueError, match="page size"):
        make(l1d=level(4, 4, sizes=(8192,)))
