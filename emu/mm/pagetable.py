"""Page tables: the mechanism (map, unmap, protect, walk) over the C fast path's storage.

The table lives in C memory so that the TLB-fill hook can walk it without
calling Python; this class is the only Python code that touches it.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

from emu.cpu.fastpath import ffi, lib
from emu.mm.frames import PAGE_SHIFT

PTE_READ = lib.FP_PTE_READ
PTE_WRITE = lib.FP_PTE_WRITE
PTE_EXEC = lib.FP_PTE_EXEC
PTE_VALID = lib.FP_PTE_VALID
PTE_MODIFIED = lib.FP_PTE_MODIFIED
PTE_PERMS = PTE_READ | PTE_WRITE | PTE_EXEC
_ADDR_MASK = 0x000FFFFFFFFFF000


class Pte(NamedTuple):
    """A decoded page-table entry."""

    frame: int
    perms: int          # PTE_READ | PTE_WRITE | PTE_EXEC
    modified: bool

    def encode(self) -> int:
        """The raw 64-bit entry the fast path reads."""
        return ((self.frame << PAGE_SHIFT) & _ADDR_MASK) | PTE_VALID | self.perms | (
            PTE_MODIFIED if self.modified else 0)


def decode(raw: int) -> Pte | None:
    """The Pte of a raw entry, or None when it is not valid."""
    if not raw & PTE_VALID:
        return None
    return Pte(frame=(raw & _ADDR_MASK) >> PAGE_SHIFT, perms=raw & PTE_PERMS,
               modified=bool(raw & PTE_MODIFIED))


class PageTable:
    """One address space's virtual-page → frame translations."""

    def __init__(self) -> None:
        """An empty table."""
        handle = lib.fp_pt_new()
        if handle == ffi.NULL:
            raise MemoryError("cannot allocate a page table")
        self.handle = ffi.gc(handle, lib.fp_pt_free)

    def lookup(self, vpn: int) -> Pte | None:
        """The entry for virtual page number `vpn`, or None."""
        return decode(lib.fp_pt_get(self.handle, vpn))

    def map(self, vpn: int, pte: Pte) -> None:
        """Install (or replace) the entry for `vpn`."""
        if lib.fp_pt_set(self.handle, vpn, pte.encode()) != 0:
            raise MemoryError("page table full")

    def unmap(self, vpn: int) -> Pte | None:
        """Remove the entry for `vpn`; returns what was there."""
        return decode(lib.fp_pt_clear(self.handle, vpn))

    def entries(self, first_vpn: int, end_vpn: int) -> Iterator[tuple[int, Pte]]:
        """Every (vpn, Pte) with first_vpn <= vpn < end_vpn, in ascending vpn order."""
        n = len(self)
        if n == 0:
            return iter(())
        if end_vpn - first_vpn <= n:     # small range: probe each page
            return ((vpn, pte) for vpn in range(first_vpn, end_vpn)
                    if (pte := self.lookup(vpn)) is not None)
        out = ffi.new("uint64_t[]", 2 * n)
        got = lib.fp_pt_range(self.handle, first_vpn, end_vpn, out, n)
        pairs = sorted((out[2 * i], out[2 * i + 1]) for i in range(got))
        return ((vpn, pte) for vpn, raw in pairs if (pte := decode(raw)) is not None)

    def __len__(self) -> int:
        """Number of pages with an entry."""
        return lib.fp_pt_count(self.handle)
