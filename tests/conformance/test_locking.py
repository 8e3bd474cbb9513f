"""Semantics rows: mlock/mlockall (resident before the call returns, first write still faults),
MAP_LOCKED, MAP_POPULATE, superlocking (ThreadCtl(_NTO_TCTL_IO), root only) and procnto -ml/-mL.

Fault counts are compared between lock_modes runs with N and with 1 page, so the program's
start-up cancels out.
"""
from __future__ import annotations

from pathlib import Path

import pytest

N = 40


@pytest.fixture
def lock_modes(firmware: Path, arch: str) -> Path:
    """firmware/lock_modes for the architecture under test."""
    return firmware / arch / "lock_modes"


def _delta(emu, program: Path, mode: str, *flags: str, **kwargs) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Faults by cause of `lock_modes MODE N+1` minus `lock_modes MODE 1`."""
    counts = []
    for pages in (1, N + 1):
        run = emu(*flags, program, mode, str(pages), **kwargs)
        assert run.returncode == 0, run.stderr
        counts.append(run.stats["faults"]["by_cause"])
    small, large = counts
    return {k: large[k] - small[k] for k in large if large[k] != small[k]}


def test_unlocked_pages_fault_on_read_then_on_first_write(emu, lock_modes: Path) -> None:  # type: ignore[no-untyped-def]
    assert _delta(emu, lock_modes, "none") == {"zero_fill": N, "write_track": N}


@pytest.mark.parametrize("mode", ["mlock", "mlockall", "map_locked", "populate"])
def test_resident_before_use_but_the_first_write_still_faults(emu, lock_modes: Path,
                                                              mode: str) -> None:  # type: ignore[no-untyped-def]
    assert _delta(emu, lock_modes, mode) == {"write_track": N}


@pytest.mark.parametrize("mode,locked", [("mlock", N), ("map_locked", N), ("populate", 0)])
def test_locked_pages_are_counted(emu, lock_modes: Path, mode: str, locked: int) -> None:  # type: ignore[no-untyped-def]
    run = emu(lock_modes, mode, str(N))
    assert run.stats["mm"]["locked_pages"] == locked


def test_mlock_reads_file_pages_in_before_returning(emu, lock_modes: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = ("--root", str(tmp_path))
    assert _delta(emu, lock_modes, "file", *root, cwd=tmp_path) == {"page_in": N}
    assert _delta(emu, lock_modes, "file_mlock", *root, cwd=tmp_path) == {}


def test_superlock_sets_everything_up_no_faults(emu, lock_modes: Path) -> None:  # type: ignore[no-untyped-def]
    assert _delta(emu, lock_modes, "superlock") == {}


def test_superlock_is_for_root_only(emu, lock_modes: Path) -> None:  # type: ignore[no-untyped-def]
    run = emu("--uid", "1000", lock_modes, "superlock", "1")
    assert run.returncode == 1
    assert "ThreadCtl: Operation not permitted" in run.stderr


@pytest.mark.parametrize("program,args", [("page_touch", ["100"]), ("pthreads", ["2", "50"]),
                                          ("track_writes", ["20"])])
def test_procnto_mL_takes_no_fault_at_all(firmware: Path, arch: str, emu, program: str,
                                          args: list[str]) -> None:  # type: ignore[no-untyped-def]
    run = emu("-mL", firmware / arch / program, *args)
    assert run.returncode == 0, run.stderr
    assert run.stats["faults"]["total"] == 0
    assert run.stats["fault_latency_cycles"]["count"] == 0


def test_procnto_ml_locks_everything_first_writes_still_fault(firmware: Path, arch: str,
                                                              emu) -> None:  # type: ignore[no-untyped-def]
    run = emu("-ml", firmware / arch / "track_writes", "20")
    assert run.returncode == 0, run.stderr
    by_cause = run.stats["faults"]["by_cause"]
    assert by_cause["write_track"] > 20
    assert {k for k, v in by_cause.items() if v} == {"write_track"}
    assert run.stats["mm"]["locked_pages"] > 0


def test_bad_mm_flag_is_one_line(firmware: Path, emu) -> None:  # type: ignore[no-untyped-def]
    run = emu("-mq", firmware / "x86_64" / "hello")
    assert run.returncode == 125
    assert len(run.stderr.splitlines()) == 1 and "unknown memory-manager flag 'q'" in run.stderr
