"""PageTable (open-addressed hash table in C) and the Pte encoding the fast path reads."""
from __future__ import annotations

import itertools

import pytest

from emu.mm.pagetable import (PTE_EXEC, PTE_MODIFIED, PTE_PERMS, PTE_READ, PTE_VALID, PTE_WRITE,
                              PageTable, Pte, decode)

RW = PTE_READ | PTE_WRITE
_M64 = (1 << 64) - 1
INITIAL_CAPACITY = 1024      # fastpath.c: fp_pt_new


def home_slot(vpn: int, cap: int = INITIAL_CAPACITY) -> int:
    """The slot fastpath.c probes first for `vpn` (hash64 of key vpn + 1)."""
    x = vpn + 1
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & _M64
    x ^= x >> 33
    return x & (cap - 1)


def vpns_with_home(slot: int, count: int) -> list[int]:
    """`count` vpns that all hash to `slot` in a fresh table: one long probe cluster."""
    return list(itertools.islice((v for v in itertools.count() if home_slot(v) == slot), count))


def pte_for(vpn: int) -> Pte:
    """A distinct, recognisable entry for each vpn."""
    return Pte(frame=vpn * 3 + 1, perms=(PTE_READ, RW, PTE_READ | PTE_EXEC)[vpn % 3],
               modified=bool(vpn & 4))


# ---- Pte ----

@pytest.mark.parametrize("perms", [0, PTE_READ, RW, PTE_READ | PTE_EXEC, PTE_PERMS])
@pytest.mark.parametrize("modified", [False, True])
def test_pte_round_trips_through_its_raw_encoding(perms, modified):
    pte = Pte(frame=0x12345, perms=perms, modified=modified)
    assert decode(pte.encode()) == pte


def test_pte_encoding_layout():
    raw = Pte(frame=5, perms=RW, modified=True).encode()
    assert raw == (5 << 12) | PTE_VALID | PTE_READ | PTE_WRITE | PTE_MODIFIED
    assert Pte(frame=5, perms=PTE_READ, modified=False).encode() & PTE_MODIFIED == 0


def test_every_encoded_pte_is_valid_even_without_permissions():
    assert Pte(frame=0, perms=0, modified=False).encode() == PTE_VALID


def test_decode_of_an_invalid_entry_is_none():
    assert decode(0) is None
    assert decode((7 << 12) | RW) is None       # bits set but no VALID


def test_pte_frame_uses_the_40_bit_address_field():
    big = (1 << 40) - 1
    assert decode(Pte(frame=big, perms=PTE_READ, modified=False).encode()).frame == big


# ---- map / lookup / unmap ----

def test_empty_table():
    pt = PageTable()
    assert len(pt) == 0
    assert pt.lookup(0) is None
    assert pt.unmap(0) is None
    assert list(pt.entries(0, 1 << 40)) == []


def test_map_lookup_unmap_round_trip():
    pt = PageTable()
    pte = Pte(frame=42, perms=RW, modified=False)
    pt.map(0x400, pte)
    assert pt.lookup(0x400) == pte
    assert pt.lookup(0x401) is None
    assert len(pt) == 1
    assert pt.unmap(0x400) == pte
    assert pt.lookup(0x400) is None
    assert len(pt) == 0


def test_map_replaces_an_existing_entry_without_growing_the_count():
    pt = PageTable()
    pt.map(7, Pte(frame=1, perms=PTE_READ, modified=False))
    pt.map(7, Pte(frame=2, perms=RW, modified=True))
    assert pt.lookup(7) == Pte(frame=2, perms=RW, modified=True)
    assert len(pt) == 1


def test_vpn_zero_and_the_top_of_user_space_are_ordinary_keys():
    pt = PageTable()
    top = 0x7FFF_FFFF_F000 >> 12
    pt.map(0, Pte(frame=1, perms=PTE_READ, modified=False))
    pt.map(top, Pte(frame=2, perms=PTE_READ, modified=False))
    assert pt.lookup(0).frame == 1 and pt.lookup(top).frame == 2


def test_unmapping_an_absent_vpn_changes_nothing():
    pt = PageTable()
    pt.map(1, pte_for(1))
    assert pt.unmap(2) is None
    assert len(pt) == 1 and pt.lookup(1) == pte_for(1)


def test_100k_entries_survive_table_growth():
    pt = PageTable()
    vpns = [0x400 + 17 * i for i in range(100_000)]
    for vpn in vpns:
        pt.map(vpn, pte_for(vpn))
    assert len(pt) == len(vpns)
    assert all(pt.lookup(vpn) == pte_for(vpn) for vpn in vpns)
    assert pt.lookup(0x400 + 1) is None


def test_deleting_every_other_entry_keeps_the_rest_findable():
    pt = PageTable()
    vpns = list(range(0x10000, 0x10000 + 50_000))     # dense: long probe clusters
    for vpn in vpns:
        pt.map(vpn, pte_for(vpn))
    for vpn in vpns[::2]:
        assert pt.unmap(vpn) == pte_for(vpn)
    assert len(pt) == 25_000
    assert all(pt.lookup(vpn) is None for vpn in vpns[::2])
    assert all(pt.lookup(vpn) == pte_for(vpn) for vpn in vpns[1::2])


def test_deletions_near_the_load_limit_without_growth():
    pt = PageTable()
    vpns = [v * 1021 for v in range(760)]          # just under 3/4 of the initial 1024 slots
    for vpn in vpns:
        pt.map(vpn, pte_for(vpn))
    for vpn in vpns[::2]:
        pt.unmap(vpn)
    assert all(pt.lookup(vpn) == pte_for(vpn) for vpn in vpns[1::2])
    assert all(pt.lookup(vpn) is None for vpn in vpns[::2])


@pytest.mark.parametrize("victim", [0, 1, 5, 11])
def test_unmap_inside_one_collision_cluster(victim):
    # a dozen vpns with the same home slot: the cluster must close up after a removal
    cluster = vpns_with_home(100, 12)
    pt = PageTable()
    for vpn in cluster:
        pt.map(vpn, pte_for(vpn))
    pt.unmap(cluster[victim])
    for i, vpn in enumerate(cluster):
        assert pt.lookup(vpn) == (None if i == victim else pte_for(vpn))
    assert len(pt) == len(cluster) - 1


def test_unmap_in_a_cluster_that_wraps_around_the_end_of_the_table():
    last = INITIAL_CAPACITY - 1
    wrapping = vpns_with_home(last, 6)             # occupy slots 1023, 0, 1, 2, ...
    at_zero = vpns_with_home(0, 3)                 # these now sit after the wrapped ones
    pt = PageTable()
    for vpn in wrapping + at_zero:
        pt.map(vpn, pte_for(vpn))
    pt.unmap(wrapping[0])
    pt.unmap(at_zero[0])
    for vpn in wrapping[1:] + at_zero[1:]:
        assert pt.lookup(vpn) == pte_for(vpn)
    assert pt.lookup(wrapping[0]) is None and pt.lookup(at_zero[0]) is None


def test_reinserting_after_deletes():
    pt = PageTable()
    for vpn in range(3000):
        pt.map(vpn, pte_for(vpn))
    for vpn in range(0, 3000, 3):
        pt.unmap(vpn)
    for vpn in range(0, 3000, 3):
        pt.map(vpn, Pte(frame=vpn, perms=PTE_READ, modified=False))
    assert len(pt) == 3000
    assert all(pt.lookup(v) == (Pte(frame=v, perms=PTE_READ, modified=False) if v % 3 == 0
                                else pte_for(v)) for v in range(3000))


# ---- entries() ----

def _reference(table: dict[int, Pte], lo: int, hi: int) -> list[tuple[int, Pte]]:
    return sorted((v, p) for v, p in table.items() if lo <= v < hi)


@pytest.fixture
def scattered() -> tuple[PageTable, dict[int, Pte]]:
    """A table of 300 entries in a few clusters, inserted in a shuffled order."""
    vpns = [0x400 + i for i in range(100)] + [0x7000 + 2 * i for i in range(100)] + \
           [0x7FFFFFFF0 + i for i in range(100)]
    order = sorted(vpns, key=lambda v: (v * 2654435761) % 1000003)
    pt, ref = PageTable(), {}
    for vpn in order:
        pt.map(vpn, pte_for(vpn))
        ref[vpn] = pte_for(vpn)
    return pt, ref


@pytest.mark.parametrize("lo, hi", [(0x400, 0x464), (0x410, 0x420), (0x7000, 0x7010),
                                    (0x463, 0x465), (0x500, 0x600)])
def test_entries_of_a_small_range_probe_each_page(scattered, lo, hi):
    pt, ref = scattered
    assert hi - lo <= len(pt)                      # the per-page probing path
    assert list(pt.entries(lo, hi)) == _reference(ref, lo, hi)


@pytest.mark.parametrize("lo, hi", [(0, 1 << 52), (0x400, 0x7100), (0x7050, 0x800000000),
                                    (0x1000, 0x6000)])
def test_entries_of_a_large_range_scan_the_table(scattered, lo, hi):
    pt, ref = scattered
    assert hi - lo > len(pt)                       # the full-scan path (fp_pt_range)
    assert list(pt.entries(lo, hi)) == _reference(ref, lo, hi)


def test_entries_paths_agree_on_the_same_range():
    pt = PageTable()
    for vpn in range(0, 2000, 7):
        pt.map(vpn, pte_for(vpn))
    n = len(pt)
    small = list(pt.entries(100, 100 + n))         # probe path
    big = [e for e in pt.entries(0, 1 << 40) if 100 <= e[0] < 100 + n]   # scan path
    assert small == big
    assert [v for v, _ in small] == sorted(v for v in range(0, 2000, 7) if 100 <= v < 100 + n)


def test_entries_after_growth_and_deletions_are_sorted_and_complete():
    pt, ref = PageTable(), {}
    for vpn in range(5000, 0, -1):
        pt.map(vpn, pte_for(vpn))
        ref[vpn] = pte_for(vpn)
    for vpn in range(1, 5001, 4):
        pt.unmap(vpn)
        del ref[vpn]
    assert list(pt.entries(0, 1 << 30)) == _reference(ref, 0, 1 << 30)
