"""The detailed TLB model (`--tlb detailed`): configured from a machine profile, run in C.

csrc/tlbmodel.c holds the model: L1 instruction and data TLBs and a unified L2 TLB, each
one or more set-associative arrays holding given page sizes, entries tagged by address
space and page size, and page walks through the real page tables with a page-walk cache.
This module turns a profile's geometry into that C structure and reads its counters back
under gem5's names, so that a run's numbers can sit beside a gem5 `stats.txt`.
"""
from __future__ import annotations

from enum import Enum
from typing import Protocol, Sequence

from emu.cpu.fastpath import FastPath, ffi, lib

PAGE_SIZE_BITS = {4096: 1, 65536: 2, 1 << 20: 4, 2 << 20: 8, 1 << 30: 16}   # tlbmodel.c: TLBM_SHIFTS
REPLACEMENT = {"lru": lib.FP_REPL_LRU, "fifo": lib.FP_REPL_FIFO, "random": lib.FP_REPL_RANDOM}
LEVEL_NAMES = (("itlb", lib.FP_TLB_L1I), ("dtlb", lib.FP_TLB_L1D), ("l2tlb", lib.FP_TLB_L2))
_COUNTERS = (("hits", "hits"), ("misses", "misses"), ("readHits", "read_hits"),
             ("readMisses", "read_misses"), ("writeHits", "write_hits"),
             ("writeMisses", "write_misses"), ("instHits", "inst_hits"),
             ("instMisses", "inst_misses"))


class TlbMode(Enum):
    """How TLB behaviour is charged."""

    FAST = "fast"           # Unicorn's TLB absorbs hits; each fill is charged its walk
    DETAILED = "detailed"   # every access goes through the profile's TLBs (this model)


class ArrayGeometry(Protocol):
    """One set-associative array of a TLB (emu.profile.TlbArray)."""

    entries: int
    ways: int
    page_sizes: Sequence[int]


class LevelGeometry(Protocol):
    """One TLB: its arrays, lookup cost and replacement (emu.profile.TlbLevel)."""

    arrays: Sequence[ArrayGeometry]
    hit_cycles: int
    replacement: str


class TlbGeometry(Protocol):
    """The profile's TLBs (emu.profile.TlbModel)."""

    l1i: LevelGeometry
    l1d: LevelGeometry
    l2: LevelGeometry


class WalkCacheGeometry(Protocol):
    """The page-walk cache (emu.profile.WalkCache)."""

    entries: int
    ways: int
    levels: Sequence[int]
    hit_cycles: int


class DetailedTlb:
    """The C model attached to one engine's fast path; `stats` reads its counters."""

    def __init__(self, fastpath: FastPath, tlb: TlbGeometry, cache: WalkCacheGeometry,
                 ram_frames: int, hook: bool = True) -> None:
        """Build the model from the profile's geometry and route every access of an engine
        with `ram_frames` frames of RAM through it; ValueError names a geometry the model
        cannot hold. Without `hook`, only `access` feeds it (for tests without an engine)."""
        model = lib.fp_tlbm_new()
        if model == ffi.NULL:
            raise MemoryError("cannot allocate the TLB model")
        self._model = ffi.gc(model, lib.fp_tlbm_free)
        for (name, level), geometry in zip(LEVEL_NAMES, (tlb.l1i, tlb.l1d, tlb.l2)):
            if geometry.replacement not in REPLACEMENT:
                raise ValueError(f"{name}: unknown replacement {geometry.replacement!r}")
            lib.fp_tlbm_level(model, level, geometry.hit_cycles, REPLACEMENT[geometry.replacement])
            for array in geometry.arrays:
                sizes = 0
                for size in array.page_sizes:
                    if size not in PAGE_SIZE_BITS:
                        raise ValueError(f"{name}: page size {size} is not 4K, 64K, 1M, 2M or 1G")
                    sizes |= PAGE_SIZE_BITS[size]
                if lib.fp_tlbm_array(model, level, array.entries, array.ways, sizes) != 0:
                    raise ValueError(f"{name}: cannot model {array.entries} entries, "
                                     f"{array.ways} ways (a power-of-two number of sets)")
        levels = sum(1 << level for level in cache.levels)
        if lib.fp_tlbm_walk_cache(model, cache.entries, cache.ways, levels, cache.hit_cycles):
            raise ValueError(f"walk cache: cannot model {cache.entries} entries, {cache.ways} ways")
        self._fastpath = fastpath
        if lib.fp_tlbm_attach(fastpath.state, model, ram_frames, int(hook)) != 0:
            raise RuntimeError("uc_hook_add failed for the TLB model's memory hook")

    def access(self, vaddr: int, kind: str = "read") -> int:
        """Send one access ("read", "write" or "fetch") through the model; its cycles."""
        return lib.fp_tlbm_access(self._fastpath.state, vaddr, ("read", "write", "fetch").index(kind))

    def invalidate(self, table_handle, start: int, end: int) -> None:  # type: ignore[no-untyped-def]
        """Drop the entries of the space with page table `table_handle` for [start, end)."""
        lib.fp_tlbm_invalidate(self._fastpath.state, table_handle, start, end)

    def stats(self) -> dict[str, int]:
        """The counters, gem5-style: itlb/dtlb/l2tlb hits, misses, readMisses, ...,
        walker walk-cache hits and misses, invalidations."""
        st = self._fastpath.state.tlbm_stats
        out: dict[str, int] = {}
        for name, level in LEVEL_NAMES:
            counters = st.level[level]
            for gem5, field in _COUNTERS:
                out[f"{name}.{gem5}"] = int(getattr(counters, field))
        out["walker.pwcHits"] = int(st.pwc_hits)
        out["walker.pwcMisses"] = int(st.pwc_misses)
        out["invalidations"] = int(st.invalidations)
        return out
