"""Page tables: the mechanism (map, unmap, protect, walk) over the C fast path's walker.

Each address space's tables are radix trees in the architecture's own format (x86-64
4-level, AArch64 4 KiB granule 4-level: emu/cpu/csrc/pagetable.c has the bit layouts),
built in frames of the emulated RAM, so that the TLB-fill hook walks them as the MMU
would and a debugger or a fault injector sees real entries. This class is the only
Python code that changes them; it speaks the format-neutral `Pte` and leaves the
encoding to C. Table frames come from the frame allocator through `TableFrames`.
"""
from __future__ import annotations

from enum import IntEnum
from typing import Callable, Iterator, NamedTuple

from emu.cpu.fastpath import ffi, lib
from emu.mm.frames import PAGE_SHIFT, FrameAllocator, PhysicalMemory

PTE_READ = lib.FP_PTE_READ
PTE_WRITE = lib.FP_PTE_WRITE
PTE_EXEC = lib.FP_PTE_EXEC
PTE_VALID = lib.FP_PTE_VALID
PTE_MODIFIED = lib.FP_PTE_MODIFIED
PTE_ACCESSED = lib.FP_PTE_ACCESSED
PTE_PERMS = PTE_READ | PTE_WRITE | PTE_EXEC
_ADDR_MASK = 0x000FFFFFFFFFF000
assert _ADDR_MASK == lib.FP_PTE_ADDR_MASK, "fastpath.h disagrees"

_NEED_TABLE = lib.FP_PT_NEED_TABLE


class PageTableFormat(IntEnum):
    """The architecture whose page-table format the tables use."""

    X86_64 = lib.FP_PT_X86_64
    AARCH64 = lib.FP_PT_AARCH64

    @classmethod
    def of_arch(cls, arch: str) -> PageTableFormat:
        """The format of an architecture name ("x86_64" or "aarch64")."""
        return cls.X86_64 if arch == "x86_64" else cls.AARCH64


class TableFrames:
    """Where page tables live: frames of physical RAM from the frame allocator, counted.

    Invariant: `in_use` equals the table frames handed out and not given back; `peak`
    is its maximum."""

    def __init__(self, ram: PhysicalMemory, frames: FrameAllocator,
                 fmt: PageTableFormat) -> None:
        """Tables of format `fmt` in `ram`, their frames from `frames`."""
        self.ram = ram
        self.frames = frames
        self.format = fmt
        self.in_use = 0
        self.peak = 0

    def take(self) -> int:
        """A frame for a new table (OutOfFrames when RAM is exhausted)."""
        frame = self.frames.allocate()
        self.in_use += 1
        self.peak = max(self.peak, self.in_use)
        return frame

    def give_back(self, frame: int) -> None:
        """Free a table frame that no tree uses any more."""
        assert self.in_use > 0, "giving back a table frame that was never taken"
        self.frames.release(frame)
        self.in_use -= 1


LargePageHook = Callable[[int, int, bool], None]
"""(vaddr, size, formed): a large page formed (True) or was split back (False)."""
CodeMark = Callable[[int], None]
"""frame -> None: the frame is being mapped executable (it may hold translated code)."""


class Pte(NamedTuple):
    """A decoded page-table entry."""

    frame: int
    perms: int          # PTE_READ | PTE_WRITE | PTE_EXEC
    modified: bool
    accessed: bool = False  # the MMU used it since it was set up (kept when re-mapped)

    def encode(self) -> int:
        """The raw 64-bit soft entry the C side takes (it encodes the architecture's)."""
        return ((self.frame << PAGE_SHIFT) & _ADDR_MASK) | PTE_VALID | self.perms | (
            PTE_MODIFIED if self.modified else 0) | (PTE_ACCESSED if self.accessed else 0)


def decode(raw: int) -> Pte | None:
    """The Pte of a raw entry, or None when it is not valid."""
    if not raw & PTE_VALID:
        return None
    return Pte(frame=(raw & _ADDR_MASK) >> PAGE_SHIFT, perms=raw & PTE_PERMS,
               modified=bool(raw & PTE_MODIFIED), accessed=bool(raw & PTE_ACCESSED))


class PageTable:
    """One address space's virtual-page → frame translations, small and large.

    A large entry (page size 1 << shift, for each shift in `large_shifts`: 21 is a
    2 MiB x86 PD entry with PS or AArch64 level-2 block; 16 is 16 AArch64 level-3
    entries with the Contiguous bit) maps a naturally aligned run of contiguous frames.
    Seen from here, every page it covers has an entry (`lookup`, `entries`); changing
    any one of them (`map`, `unmap`) first splits the large entry back into small ones.
    The table frames are held until `release` (the space is gone) or until a
    `drop_range` leaves a table empty.
    """

    def __init__(self, tables: TableFrames, large_shifts: tuple[int, ...] = (),
                 on_large_page: LargePageHook | None = None,
                 mark_code: CodeMark | None = None, frame_limit: int | None = None) -> None:
        """An empty table in `tables`' RAM that may hold large entries of the given page-size
        shifts; `on_large_page` hears of large pages formed and split, `mark_code` of
        frames mapped executable. With `frame_limit` (the frames of RAM), an entry naming a
        frame at or past it reads as no entry."""
        ram = tables.ram
        handle = lib.fp_pt_new(ffi.cast("uint8_t *", ram.host_address), ram.size, tables.format)
        if handle == ffi.NULL:
            raise MemoryError("cannot allocate a page table")
        self.handle = ffi.gc(handle, lib.fp_pt_free)
        self.tables = tables
        self.large_shifts = large_shifts
        self._on_large_page = on_large_page
        self._mark_code = mark_code
        self._large: dict[int, int] = {}       # first vpn of each large entry -> its shift
        self._held = 0                          # table frames taken for this tree
        self._frame_limit = frame_limit if frame_limit is not None else 1 << 52

    @property
    def table_frames(self) -> int:
        """Frames this table holds (its tree, plus spare ones handed in)."""
        return self._held

    @property
    def root_frame(self) -> int | None:
        """The frame of the root table (PML4 / level 0), None before the first map."""
        root = lib.fp_pt_root(self.handle)
        return None if root == (1 << 64) - 1 else root >> PAGE_SHIFT

    def _build(self, call: Callable[[], int]) -> None:
        """Run a table-building C call, handing in frames as long as it needs them."""
        while (status := call()) == _NEED_TABLE:
            frame = self.tables.take()
            self._held += 1
            assert lib.fp_pt_add_table(self.handle, frame) == 0
        if status != 0:
            raise RuntimeError("page table: a large page is in the way")

    def _in_ram(self, pte: Pte | None) -> Pte | None:
        """`pte`, unless it names a frame past the end of RAM (only a corrupted entry does:
        the kernel then sees no page there, as the MMU does)."""
        return pte if pte is None or pte.frame < self._frame_limit else None

    def lookup(self, vpn: int) -> Pte | None:
        """The entry for virtual page number `vpn` (inside a large page: its part), or None."""
        return self._in_ram(decode(lib.fp_pt_get(self.handle, vpn)))

    def leaf_address(self, vpn: int) -> int | None:
        """The physical address of the architecture's leaf entry that maps `vpn` (a level-3
        entry, or the level-2 block of a 2 MiB page), if it maps anything."""
        address = lib.fp_pt_leaf_address(self.handle, vpn)
        return None if address == (1 << 64) - 1 else address

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
        raw = pte.encode()
        self._build(lambda: lib.fp_pt_set(self.handle, vpn, raw))

    def unmap(self, vpn: int) -> Pte | None:
        """Remove the entry for `vpn`; returns what was there."""
        if self._large:
            self._split(vpn)
        return self._in_ram(decode(lib.fp_pt_clear(self.handle, vpn)))

    def drop_range(self, first_vpn: int, end_vpn: int) -> list[tuple[int, Pte]]:
        """Remove every entry of [first_vpn, end_vpn) and return them (as small entries); a
        large page wholly inside goes at once, one only partly inside is split first.
        Tables left empty are freed."""
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
        if removed:
            self._prune(first_vpn, end_vpn)
        return removed

    def _prune(self, first_vpn: int, end_vpn: int) -> None:
        """Free the tables below the root that map nothing in [first_vpn, end_vpn)."""
        held = lib.fp_pt_tables(self.handle)
        if held <= 1:
            return
        out = ffi.new("uint64_t[]", held)
        for i in range(lib.fp_pt_prune(self.handle, first_vpn, end_vpn, out, held)):
            self.tables.give_back(out[i])
            self._held -= 1

    def release(self) -> None:
        """Give every table frame back (the address space is going away; it maps nothing)."""
        frames = self.tables.frames
        if len(self):
            frames.bad_state("releasing a page table that still maps pages")
        out = ffi.new("uint64_t[]", self._held + 1)
        got = lib.fp_pt_release_tables(self.handle, out, self._held + 1)
        if got != self._held:
            frames.bad_state(f"page table held {self._held} frames, found {got}")
        for i in range(got):
            self.tables.give_back(out[i])
        self._held = 0
        self._large.clear()

    def map_large(self, base: int, shift: int, pte: Pte) -> None:
        """Replace the small entries of the aligned range at `base` by one large entry
        mapping `pte.frame` onwards (the caller checked they map exactly those frames)."""
        pages = 1 << (shift - PAGE_SHIFT)
        assert base % pages == 0 and pte.frame % pages == 0 and shift in self.large_shifts
        for vpn in range(base, base + pages):
            if self._large:
                self._absorb(vpn)
            lib.fp_pt_clear(self.handle, vpn)
        raw = pte.encode()
        self._build(lambda: lib.fp_pt_set_large(self.handle, base, shift, raw))
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
            raw = pte._replace(frame=pte.frame + i).encode()
            self._build(lambda: lib.fp_pt_set(self.handle, base + i, raw))
        if self._on_large_page is not None:
            self._on_large_page(base << PAGE_SHIFT, 1 << shift, False)

    def entries(self, first_vpn: int, end_vpn: int) -> Iterator[tuple[int, Pte]]:
        """Every (vpn, Pte) with first_vpn <= vpn < end_vpn, in ascending vpn order."""
        most = min(len(self), max(0, end_vpn - first_vpn))
        if most == 0:
            return iter(())
        out = ffi.new("uint64_t[]", 2 * most)
        got = lib.fp_pt_range(self.handle, first_vpn, end_vpn, out, most)
        pairs = [(out[2 * i], out[2 * i + 1]) for i in range(got)]
        return ((vpn, pte) for vpn, raw in pairs if (pte := self._in_ram(decode(raw))) is not None)

    def __len__(self) -> int:
        """Number of 4 KiB pages with an entry (a large page counts all of its pages)."""
        return lib.fp_pt_count(self.handle)
