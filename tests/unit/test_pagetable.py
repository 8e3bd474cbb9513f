"""PageTable: radix trees in the architecture's own format (x86-64 4-level, AArch64 4 KiB
granule) in frames of emulated RAM, and the format-neutral Pte that Python speaks."""
from __future__ import annotations

import struct

import pytest

from emu.mm.pagetable import (PTE_EXEC, PTE_MODIFIED, PTE_PERMS, PTE_READ, PTE_VALID, PTE_WRITE,
                              PageTable, PageTableFormat, Pte, TableFrames, decode)

from .support import table_frames

RW = PTE_READ | PTE_WRITE
X86, A64 = PageTableFormat.X86_64, PageTableFormat.AARCH64


def pte_for(vpn: int) -> Pte:
    """A distinct, recognisable entry for each vpn (frames within AArch64's 48-bit PA)."""
    return Pte(frame=(vpn * 3 + 1) % (1 << 36), perms=(PTE_READ, RW, PTE_READ | PTE_EXEC)[vpn % 3],
               modified=bool(vpn & 4))


@pytest.fixture(params=[X86, A64], ids=["x86_64", "aarch64"])
def fmt(request) -> PageTableFormat:
    return request.param


@pytest.fixture
def tables(fmt) -> TableFrames:
    return table_frames(fmt, frames=8192)


def PageTableOf(tables: TableFrames, shifts: tuple[int, ...] = ()) -> PageTable:
    return PageTable(tables, shifts)


def entry(tables: TableFrames, table_frame: int, index: int) -> int:
    """The raw 64-bit entry `index` of the table in `table_frame`."""
    return struct.unpack_from("<Q", tables.ram.view, (table_frame << 12) + 8 * index)[0]


def walk_entries(tables: TableFrames, pt: PageTable, vaddr: int) -> list[int]:
    """The raw entries on the way to `vaddr`, root first (as an MMU reads them)."""
    found, table = [], pt.root_frame
    for level in range(4):
        e = entry(tables, table, (vaddr >> (39 - 9 * level)) & 511)
        found.append(e)
        is_table = (e & 1 and not e & 0x80) if tables.format is X86 else (e & 3) == 3
        if level == 3 or not is_table:
            break
        table = (e & 0x000FFFFFFFFFF000) >> 12
    return found


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

def test_empty_table(tables):
    pt = PageTableOf(tables)
    assert len(pt) == 0 and pt.root_frame is None and pt.table_frames == 0
    assert pt.lookup(0) is None
    assert pt.unmap(0) is None
    assert list(pt.entries(0, 1 << 36)) == []


def test_map_lookup_unmap_round_trip(tables):
    pt = PageTableOf(tables)
    pte = Pte(frame=42, perms=RW, modified=False)
    pt.map(0x400, pte)
    assert pt.lookup(0x400) == pte
    assert pt.lookup(0x401) is None
    assert len(pt) == 1
    assert pt.unmap(0x400) == pte
    assert pt.lookup(0x400) is None
    assert len(pt) == 0


@pytest.mark.parametrize("perms", [0, PTE_READ, PTE_WRITE, RW, PTE_EXEC, PTE_READ | PTE_EXEC,
                                   PTE_PERMS])
@pytest.mark.parametrize("modified", [False, True])
def test_every_soft_pte_round_trips_through_the_architecture_entry(tables, perms, modified):
    pt = PageTableOf(tables)
    pte = Pte(frame=0xABCDE, perms=perms, modified=modified)
    pt.map(0x12345, pte)
    assert pt.lookup(0x12345) == pte


def test_map_replaces_an_existing_entry_without_growing_the_count(tables):
    pt = PageTableOf(tables)
    pt.map(7, Pte(frame=1, perms=PTE_READ, modified=False))
    pt.map(7, Pte(frame=2, perms=RW, modified=True))
    assert pt.lookup(7) == Pte(frame=2, perms=RW, modified=True)
    assert len(pt) == 1


def test_vpn_zero_and_the_top_of_user_space_are_ordinary_pages(tables):
    pt = PageTableOf(tables)
    top = 0x7FFF_FFFF_F000 >> 12
    pt.map(0, Pte(frame=1, perms=PTE_READ, modified=False))
    pt.map(top, Pte(frame=2, perms=PTE_READ, modified=False))
    assert pt.lookup(0).frame == 1 and pt.lookup(top).frame == 2


def test_unmapping_an_absent_vpn_changes_nothing(tables):
    pt = PageTableOf(tables)
    pt.map(1, pte_for(1))
    assert pt.unmap(2) is None
    assert len(pt) == 1 and pt.lookup(1) == pte_for(1)


def test_100k_entries(tables):
    pt = PageTableOf(tables)
    vpns = [0x400 + 17 * i for i in range(100_000)]
    for vpn in vpns:
        pt.map(vpn, pte_for(vpn))
    assert len(pt) == len(vpns)
    assert all(pt.lookup(vpn) == pte_for(vpn) for vpn in vpns)
    assert pt.lookup(0x400 + 1) is None


def test_deleting_every_other_entry_keeps_the_rest(tables):
    pt = PageTableOf(tables)
    vpns = list(range(0x10000, 0x10000 + 50_000))
    for vpn in vpns:
        pt.map(vpn, pte_for(vpn))
    for vpn in vpns[::2]:
        assert pt.unmap(vpn) == pte_for(vpn)
    assert len(pt) == 25_000
    assert all(pt.lookup(vpn) is None for vpn in vpns[::2])
    assert all(pt.lookup(vpn) == pte_for(vpn) for vpn in vpns[1::2])


# ---- the tables themselves: frames of RAM in the architecture's format ----

def test_one_page_takes_a_table_per_level_from_ram(tables):
    pt = PageTableOf(tables)
    pt.map(0x400, pte_for(0x400))
    assert pt.table_frames == tables.in_use == 4           # root, and one table per level
    pt.map(0x401, pte_for(0x401))                          # same last-level table
    assert pt.table_frames == 4
    pt.map(0x400 + 512, pte_for(0))                        # the next 2 MiB: one more table
    assert pt.table_frames == 5
    assert tables.frames.in_use == tables.in_use


def test_dropping_a_range_frees_the_tables_it_emptied(tables):
    pt = PageTableOf(tables)
    for vpn in range(0x100000, 0x100000 + 2048):           # four last-level tables
        pt.map(vpn, pte_for(vpn))
    pt.map(0x7FFF0, pte_for(1))                            # elsewhere: stays
    assert pt.table_frames == 1 + 1 + 2 + 5                # root, L1, two L2, five last-level
    before = pt.table_frames
    pt.drop_range(0x100000, 0x100000 + 2048)
    assert pt.table_frames < before and pt.lookup(0x7FFF0) == pte_for(1)
    assert all(pt.lookup(v) is None for v in range(0x100000, 0x100000 + 2048, 97))
    assert pt.table_frames == 4                            # the one page's path remains


def test_release_gives_every_table_frame_back(tables):
    pt = PageTableOf(tables)
    for vpn in (0, 0x400, 0x7FFFFFFF0, 0x123456):
        pt.map(vpn, pte_for(vpn))
    assert tables.in_use > 4
    pt.drop_range(0, 1 << 36)
    pt.release()
    assert tables.in_use == 0 and tables.frames.in_use == 0 and pt.root_frame is None
    pt.map(5, pte_for(5))                                  # usable again: a new root
    assert pt.lookup(5) == pte_for(5) and tables.in_use == 4


def test_x86_entries_have_the_sdm_layout():
    tables = table_frames(X86)
    pt = PageTableOf(tables, (21,))
    vaddr = 0x0000_4567_8912_3000
    pt.map(vaddr >> 12, Pte(frame=0x1234, perms=RW, modified=True))
    pml4e, pdpte, pde, pte = walk_entries(tables, pt, vaddr)
    for table_entry in (pml4e, pdpte, pde):
        assert table_entry & 0x7 == 0x7 and not table_entry & 0x80      # P, R/W, U/S; no PS
    assert pte & 0x000FFFFFFFFFF000 == 0x1234 << 12
    assert pte & 0x1 and pte & 0x2 and pte & 0x4                       # P, R/W, U/S
    assert pte & 0x40                                                  # D: modified
    assert pte >> 63 == 1                                              # NX: not executable
    assert not pte & 0x20                                              # A: never used yet
    pt.map((vaddr >> 12) + 1, Pte(frame=0x1235, perms=PTE_READ | PTE_EXEC, modified=False))
    _, _, _, code = walk_entries(tables, pt, vaddr + 4096)
    assert code & 0x1 and not code & 0x2 and code >> 63 == 0 and not code & 0x40


def test_x86_prot_none_is_not_present_but_keeps_its_frame():
    tables = table_frames(X86)
    pt = PageTableOf(tables)
    pt.map(0x500, Pte(frame=77, perms=0, modified=True))
    *_, pte = walk_entries(tables, pt, 0x500 << 12)
    assert not pte & 1 and (pte >> 12) & 0xFFFFFFFFFF == 77
    assert pt.lookup(0x500) == Pte(frame=77, perms=0, modified=True)


def test_x86_2mib_page_is_a_pd_entry_with_ps():
    tables = table_frames(X86)
    pt = PageTableOf(tables, (21,))
    pt.map_large(0x200, 21, Pte(frame=0x400, perms=RW, modified=True))
    entries = walk_entries(tables, pt, 0x200 << 12)
    assert len(entries) == 3 and entries[2] & 0x80 and entries[2] & 1      # PS, P
    assert entries[2] & 0x000FFFFFFFE00000 == 0x400 << 12
    assert pt.lookup(0x200 + 17) == Pte(frame=0x400 + 17, perms=RW, modified=True)
    assert len(pt) == 512
    assert pt.table_frames == 3                            # root, PDPT, PD: no PT below a block


def test_aarch64_descriptors_follow_the_arm_arm_and_linux():
    tables = table_frames(A64)
    pt = PageTableOf(tables, (16, 21))
    vaddr = 0x0000_1234_5678_9000
    pt.map(vaddr >> 12, Pte(frame=0x1234, perms=RW, modified=False))
    l0, l1, l2, l3 = walk_entries(tables, pt, vaddr)
    assert all(e & 3 == 3 for e in (l0, l1, l2))           # table descriptors
    assert l3 & 3 == 3                                     # page descriptor
    assert l3 & 0x0000FFFFFFFFF000 == 0x1234 << 12
    assert (l3 >> 6) & 3 == 0b11                           # AP: EL0 read-only until written...
    assert l3 >> 51 & 1                                    # ...but DBM: writable (Linux PTE_WRITE)
    assert l3 >> 54 & 1 and l3 >> 53 & 1                   # UXN, PXN
    assert not l3 >> 10 & 1                                # AF: not used yet
    assert l3 >> 11 & 1 and (l3 >> 8) & 3 == 3             # nG, inner shareable
    pt.map((vaddr >> 12) + 1, Pte(frame=0x1235, perms=RW, modified=True))
    *_, dirty = walk_entries(tables, pt, vaddr + 4096)
    assert (dirty >> 6) & 3 == 0b01 and dirty >> 55 & 1    # AP: EL0 read-write; PTE_DIRTY


def test_aarch64_64k_page_is_sixteen_contiguous_entries():
    tables = table_frames(A64)
    pt = PageTableOf(tables, (16, 21))
    pt.map_large(0x10, 16, Pte(frame=0x20, perms=PTE_READ | PTE_EXEC, modified=False))
    for i in range(16):
        *_, l3 = walk_entries(tables, pt, (0x10 + i) << 12)
        assert l3 >> 52 & 1 and (l3 >> 12) & 0xFFFFFFFFF == 0x20 + i and not l3 >> 54 & 1
    assert pt.lookup(0x1F) == Pte(frame=0x2F, perms=PTE_READ | PTE_EXEC, modified=False)
    assert pt.large_entry(0x15) == (0x10, 16)


def test_aarch64_2mib_page_is_a_level2_block():
    tables = table_frames(A64)
    pt = PageTableOf(tables, (16, 21))
    pt.map_large(0x200, 21, Pte(frame=0x400, perms=RW, modified=True))
    entries = walk_entries(tables, pt, 0x200 << 12)
    assert len(entries) == 3 and entries[2] & 3 == 1       # block descriptor


@pytest.mark.parametrize("shift", [16, 21])
def test_writing_inside_a_large_page_splits_it(shift):
    tables = table_frames(A64)
    pt = PageTableOf(tables, (16, 21))
    pages = 1 << (shift - 12)
    pt.map_large(0x400, shift, Pte(frame=0x800, perms=RW, modified=True))
    pt.map(0x401, Pte(frame=5, perms=PTE_READ, modified=False))
    assert pt.large_entry(0x400) is None
    assert pt.lookup(0x401).frame == 5 and pt.lookup(0x400 + pages - 1).frame == 0x800 + pages - 1
    assert len(pt) == pages


def test_out_of_frames_for_a_table_is_reported():
    from emu.mm.frames import OutOfFrames
    tables = table_frames(X86, frames=3)
    pt = PageTableOf(tables)
    with pytest.raises(OutOfFrames):
        pt.map(0x400, pte_for(0x400))


# ---- entries() ----

def _reference(table: dict[int, Pte], lo: int, hi: int) -> list[tuple[int, Pte]]:
    return sorted((v, p) for v, p in table.items() if lo <= v < hi)


@pytest.fixture
def scattered(tables) -> tuple[PageTable, dict[int, Pte]]:
    """A table of 300 entries in a few clusters, inserted in a shuffled order."""
    vpns = [0x400 + i for i in range(100)] + [0x7000 + 2 * i for i in range(100)] + \
           [0x7FFFFFFF0 + i for i in range(100)]
    order = sorted(vpns, key=lambda v: (v * 2654435761) % 1000003)
    pt, ref = PageTableOf(tables), {}
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


def test_entries_paths_agree_on_the_same_range(tables):
    pt = PageTableOf(tables)
    for vpn in range(0, 2000, 7):
        pt.map(vpn, pte_for(vpn))
    n = len(pt)
    small = list(pt.entries(100, 100 + n))         # probe path
    big = [e for e in pt.entries(0, 1 << 40) if 100 <= e[0] < 100 + n]   # scan path
    assert small == big
    assert [v for v, _ in small] == sorted(v for v in range(0, 2000, 7) if 100 <= v < 100 + n)


def test_entries_after_deletions_are_sorted_and_complete(tables):
    pt, ref = PageTableOf(tables), {}
    for vpn in range(5000, 0, -1):
        pt.map(vpn, pte_for(vpn))
        ref[vpn] = pte_for(vpn)
    for vpn in range(1, 5001, 4):
        pt.unmap(vpn)
        del ref[vpn]
    assert list(pt.entries(0, 1 << 30)) == _reference(ref, 0, 1 << 30)


@pytest.mark.parametrize("shift", [16, 21])
def test_coalescing_small_pages_into_a_large_one_keeps_the_page_count(shift):
    tables = table_frames(A64)
    pt = PageTableOf(tables, (16, 21))
    pages = 1 << (shift - 12)
    for i in range(pages):
        pt.map(0x400 + i, Pte(frame=0x800 + i, perms=RW, modified=True))
    pt.map_large(0x400, shift, Pte(frame=0x800, perms=RW, modified=True))
    assert len(pt) == pages and pt.large_entry(0x400 + pages - 1) == (0x400, shift)
    assert [v for v, _ in pt.entries(0, 1 << 30)] == list(range(0x400, 0x400 + pages))
