"""Bad accesses, instruction limits and RAM size as the user sees them."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize("mode,si_code,access", [
    ("null-read", "SEGV_MAPERR", "read at 0x0"),
    ("ro-write", "SEGV_ACCERR", "write at"),
    ("exec-data", "SEGV_ACCERR", "fetch at"),
])
def test_bad_access_kills_with_sigsegv(firmware: Path, arch: str, emu, mode: str, si_code: str,
                                       access: str) -> None:  # type: ignore[no-untyped-def]
    run = emu(firmware / arch / "bad_access", mode)
    assert run.returncode == 128 + 11
    assert run.stdout == f"about to {mode}\n"
    assert si_code in run.stderr and access in run.stderr
    assert run.stats is not None
    assert run.stats["exit"] == {"code": 139, "signal": "SIGSEGV", "reason": "signal"}
    assert run.stats["faults"]["by_cause"]["sigsegv"] == 1
    assert run.stats["signals"]["delivered"] == {"SIGSEGV": 1}


def test_max_instructions_stops_the_guest(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    run = emu("--max-instructions", "200000", firmware / arch / "compute_loop", "100000000")
    assert run.returncode == 128 + 24
    assert "instruction limit" in run.stderr
    assert run.stats is not None
    assert run.stats["exit"]["signal"] == "SIGXCPU"
    assert 200_000 <= run.stats["instructions"] < 200_000 + 1000


def test_small_ram_limits_frames(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    run = emu("--ram", "2M", firmware / arch / "page_touch", "100")
    assert run.returncode == 0
    assert run.stats is not None and run.stats["mm"]["frames_total"] == 512
