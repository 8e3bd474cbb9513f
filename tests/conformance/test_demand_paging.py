"""Semantics rows: demand paging (commit at mmap, PTEs at first touch), MAP_LAZY/MAP_NORESERVE
and SIGBUS, and write tracking — exact fault counts by cause, on both architectures.

Counts are taken as the difference between a run touching N pages and one touching 1, so
that the program's own start-up faults cancel out.
"""
from __future__ import annotations

from pathlib import Path

import pytest

N = 100


def _by_cause(run) -> dict[str, int]:  # type: ignore[no-untyped-def]
    assert run.returncode == 0, run.stderr
    return run.stats["faults"]["by_cause"]


def _delta(emu, *args: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Faults by cause of (program with N) minus (program with 1); args use {n} for N."""
    small = _by_cause(emu(*(a.format(n=1) for a in args)))
    large = _by_cause(emu(*(a.format(n=N + 1) for a in args)))
    return {k: large[k] - small[k] for k in large if large[k] != small[k]}


def test_demand_paging_one_zero_fill_per_fresh_page(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    assert _delta(emu, str(firmware / arch / "page_touch"), "{n}") == {"zero_fill": N}


def test_demand_paging_commits_frames_at_mmap(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    # 1000 pages cannot be committed in 2 MiB of RAM: mmap fails, nothing faults
    run = emu("--ram", "2M", firmware / arch / "page_touch", "1000")
    assert run.returncode == 1
    assert "mmap: Cannot allocate memory" in run.stderr
    assert run.stats["faults"]["by_cause"]["sigbus"] == 0


@pytest.mark.parametrize("mode", ["lazy", "noreserve"])
def test_lazy_mappings_allocate_at_first_touch(firmware: Path, arch: str, emu, mode: str) -> None:  # type: ignore[no-untyped-def]
    delta = _delta(emu, str(firmware / arch / "page_touch"), "{n}", "1", mode)
    assert delta == {"lazy_alloc": N}


@pytest.mark.parametrize("mode", ["lazy", "noreserve"])
def test_lazy_allocation_failure_is_sigbus_objerr(firmware: Path, arch: str, emu, mode: str) -> None:  # type: ignore[no-untyped-def]
    # mmap succeeds (nothing committed); a touch finds no frame left: SIGBUS, BUS_OBJERR
    run = emu("--ram", "2M", firmware / arch / "page_touch", "1000", "1", mode)
    assert run.returncode == 128 + 7
    assert "SIGBUS (BUS_OBJERR: write at 0x" in run.stderr
    stats = run.stats
    assert stats["exit"]["signal"] == "SIGBUS"
    assert stats["faults"]["by_cause"]["sigbus"] == 1
    assert stats["signals"]["delivered"] == {"SIGBUS": 1}
    assert 0 < stats["mm"]["lazy_allocations"] < 512


def test_first_read_maps_read_only_and_first_write_is_tracked(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    delta = _delta(emu, str(firmware / arch / "track_writes"), "{n}")
    assert delta == {"zero_fill": N, "write_track": N}


def test_pages_written_first_take_one_fault(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    # page_touch writes before it reads: no write-tracking fault follows the zero-fill
    stats = emu(firmware / arch / "page_touch", "50").stats
    base = emu(firmware / arch / "page_touch", "1").stats
    assert stats["faults"]["by_cause"]["write_track"] == base["faults"]["by_cause"]["write_track"]
