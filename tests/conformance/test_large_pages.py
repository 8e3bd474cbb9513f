"""Semantics row: large pages. With procnto's `v` (the default), once every small page of an
aligned large-page range of committed memory is set up alike, the range becomes one large
mapping (2 MiB on x86-64; 64 KiB and 2 MiB on AArch64); large mappings are placed aligned;
mprotect or munmap of part of one splits it; `-m~v` turns it all off."""
from __future__ import annotations

from pathlib import Path

import pytest


def _large(stats: dict) -> tuple[int, int]:  # type: ignore[type-arg]
    return stats["mm"]["large_pages_formed"], stats["mm"]["large_pages_split"]


def test_two_mib_ranges_coalesce_and_split(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    run = emu(firmware / arch / "large_pages", "4096")
    assert run.returncode == 0, run.stderr
    assert run.stdout == "kib=4096 aligned_2m=1 aligned_64k=1 ok\n"
    # two 2 MiB pages form; mprotect of one page splits one, munmap of 64 KiB the other
    assert _large(run.stats) == (2, 2)


def test_sixty_four_kib_pages_on_aarch64(firmware: Path, emu) -> None:  # type: ignore[no-untyped-def]
    run = emu(firmware / "aarch64" / "large_pages", "192")
    assert run.returncode == 0, run.stderr
    assert run.stdout == "kib=192 aligned_2m=0 aligned_64k=1 ok\n"
    # three 64 KiB pages; the mprotect splits one; unmapping a whole one is no split
    assert _large(run.stats) == (3, 1)


def test_no_large_pages_below_their_size_on_x86_64(firmware: Path, emu) -> None:  # type: ignore[no-untyped-def]
    run = emu(firmware / "x86_64" / "large_pages", "192")
    assert run.returncode == 0
    assert _large(run.stats) == (0, 0)


@pytest.mark.parametrize("kib", ["4096", "192"])
def test_variable_page_sizes_off(firmware: Path, arch: str, emu, kib: str) -> None:  # type: ignore[no-untyped-def]
    on, off = emu(firmware / arch / "large_pages", kib), emu("-m~v", firmware / arch / "large_pages", kib)
    assert off.returncode == 0 and _large(off.stats) == (0, 0)
    assert off.stdout.endswith("ok\n")
    # coalescing changes no fault and no result
    assert on.stats["faults"] == off.stats["faults"]


def test_lazy_memory_does_not_coalesce(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    run = emu(firmware / arch / "page_touch", "1024", "1", "lazy")
    assert run.returncode == 0
    assert _large(run.stats) == (0, 0)


def test_superlocked_stack_and_memory_coalesce(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    # -mL sets the 8 MiB main stack up at once (lazy memory, no coalescing) and page_touch's
    # committed 4 MiB region page by page: that one becomes two 2 MiB pages
    run = emu("-mL", firmware / arch / "page_touch", "1024")
    assert run.returncode == 0
    assert run.stats["faults"]["total"] == 0
    assert run.stats["mm"]["large_pages_formed"] >= 2
