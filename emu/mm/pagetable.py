"""Page tables: the mechanism (map, unmap, protect, walk) over the C fast path's storage.

The table lives in C memory so that the TLB-fill hook can walk it without
calling Python; this class is the only Python code that touches it.
"""
from __future__ import annotations

from typing import Callable, Iterator, NamedTuple

from emu.cpu.fastpath import ffi, lib
from emu.mm.frames import PAGE_SHIFT

PTE_READ = lib.FP_PTE_READ
PTE_WRITE = lib.FP_PTE_WRITE
PTE_EXEC = lib.FP_PTE_EXEC
PTE_VALID = lib.FP_PTE_VALID
PTE_MODIFIED = lib.FP_PTE_MODIFIED
PTE_PERMS = PTE_READ | PTE_WRITE | PTE_EXEC
_ADDR_MASK = 0x000FFFFFFFFFF000
assert _ADDR_MASK == lib.FP_PTE_ADDR_MASK, "fastpath.h disagrees"

LargePageHook = Callable[[int, int, bool], None]
"""(vaddr, size, formed): a large page formed (True) or was split back (False)."""
CodeMark = Callable[[int], None]
"""frame -> None: the frame is being mapped executable (it may hold translated code)."""


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
    """One address space's virtual-page → frame translations, small and large.

    A large entry (page size 1 << shift, for each shift in `large_shifts`) maps a
    naturally aligned run of contiguous frames with one entry the fast path
    finds. Seen from here, every page it covers has an entry (`lookup`,
    `entries`); changing any one of them (`map`, `unmap`) first splits the large
    entry back into small ones.
    """

    def __init__(self, large_shifts: tuple[int, ...] = (),
                 on_large_page: LargePageHook | None = None,
                 mark_code: CodeMark | None = None) -> None:
        """An empty table that may hold large entries of the given page-size shifts;
        `on_large_page` hears of large pages formed and split, `mark_code` of frames mapped
        executable."""
        handle = lib.fp_pt_new()
        if handle == ffi.NULL:
            raise MemoryError("cannot allocate a page table")
        self.handle = ffi.gc(handle, lib.fp_pt_free)
        self.large_shifts = large_shifts
        self._on_large_page = on_large_page
        self._mark_code = mark_code
        self._large: dict[int, int] = {}       # first vpn of each large entry -> its shift

    def lookup(self, vpn: int) -> Pte | None:
        """The entry for virtual page number `vpn` (inside a large page: its part), or None."""
        pte = decode(lib.fp_pt_get(self.handle, vpn))
        if pte is None and self._large:
            covering = self._covering(vpn)
            if covering is not None:
                base, shift = covering
                pte = decode(lib.fp_pt_get_large(self.handle, base, shift))
                assert pte is not None
                return pte._replace(frame=pte.frame + (vpn - base))
        return pte

    def large_entry(self, vpn: int) -> tuple[int, int] | None:
        """(first vpn, shift) of the large page covering `vpn`, if any."""
        return self._covering(vpn) if self._large else None

    def _covering(self, vpn: int) -> tuple[int, int] | None:
        for shift in self.large_shifts:
            base = vpn & ~((1 << (shift - PAGE_SHIFT)) - 1)
            if self._large.get(base) == shift:
                return base, shift
        return None

    def map(self, vpn: int, pte: Pte) -> None:
        """Install (or replace) the entry for `vpn`."""
        if self._large:
            self._split(vpn)
        if pte.perms & PTE_EXEC and self._mark_code is not None:
            self._mark_code(pte.frame)
        if lib.fp_pt_set(self.handle, vpn, pte.encode()) != 0:
            raise MemoryError("page table full")

    def unmap(self, vpn: int) -> Pte | None:
        """Remove the entry for `vpn`; returns what was there."""
        if self._large:
            self._split(vpn)
        return decode(lib.fp_pt_clear(self.handle, vpn))

    def drop_range(self, first_vpn: int, end_vpn: int) -> list[tuple[int, Pte]]:
        """Remove every entry of [first_vpn, end_vpn) and return them (as small entries); a
        large page wholly inside goes at once, one only partly inside is split first."""
        inside = []
        for base, shift in list(self._large.items()):
            pages = 1 << (shift - PAGE_SHIFT)
            if first_vpn <= base and base + pages <= end_vpn:
                inside.append((base, shift, pages))
            elif base < end_vpn and base + pages > first_vpn:
                self._split(base)
        removed = list(self.entries(first_vpn, end_vpn))
        for base, shift, _ in inside:
            lib.fp_pt_clear_large(self.handle, base, shift)
            del self._large[base]
        covered = {vpn for base, _, pages in inside for vpn in range(base, base + pages)}
        for vpn, _ in removed:
            if vpn not in covered:
                lib.fp_pt_clear(self.handle, vpn)
        return removed

    def map_large(self, base: int, shift: int, pte: Pte) -> None:
        """Replace the small entries of the aligned range at `base` by one large entry
        mapping `pte.frame` onwards (the caller checked they map exactly those frames)."""
        pages = 1 << (shift - PAGE_SHIFT)
        assert base % pages == 0 and pte.frame % pages == 0 and shift in self.large_shifts
        for vpn in range(base, base + pages):
            if self._large:
                self._absorb(vpn)
            lib.fp_pt_clear(self.handle, vpn)
        if lib.fp_pt_set_large(self.handle, base, shift, pte.encode()) != 0:
            raise MemoryError("page table full")
        self._large[base] = shift
        if self._on_large_page is not None:
            self._on_large_page(base << PAGE_SHIFT, 1 << shift, True)

    def _absorb(self, vpn: int) -> None:
        """Drop a smaller large entry at `vpn` that a larger one is taking over."""
        covering = self._covering(vpn)
        if covering is not None and covering[0] == vpn:
            lib.fp_pt_clear_large(self.handle, vpn, covering[1])
            del self._large[vpn]

    def _split(self, vpn: int) -> None:
        """Turn the large entry covering `vpn` (if any) back into small entries."""
        covering = self._covering(vpn)
        if covering is None:
            return
        base, shift = covering
        pte = decode(lib.fp_pt_clear_large(self.handle, base, shift))
        del self._large[base]
        assert pte is not None
        for i in range(1 << (shift - PAGE_SHIFT)):
            if lib.fp_pt_set(self.handle, base + i, pte._replace(frame=pte.frame + i).encode()):
                raise MemoryError("page table full")
        if self._on_large_page is not None:
            self._on_large_page(base << PAGE_SHIFT, 1 << shift, False)

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
        pairs = [(out[2 * i], out[2 * i + 1]) for i in range(got)]
        for base, shift in self._large.items():
            pages = 1 << (shift - PAGE_SHIFT)
            if base < end_vpn and base + pages > first_vpn:
                raw = lib.fp_pt_get_large(self.handle, base, shift)
                frame0 = (raw & _ADDR_MASK) >> PAGE_SHIFT
                pairs += [(vpn, (raw & ~_ADDR_MASK) | ((frame0 + vpn - base) << PAGE_SHIFT))
                          for vpn in range(max(base, first_vpn), min(base + pages, end_vpn))]
        return ((vpn, pte) for vpn, raw in sorted(pairs) if (pte := decode(raw)) is not None)

    def __len__(self) -> int:
        """Number of pages with an entry."""
        return lib.fp_pt_count(self.handle)
