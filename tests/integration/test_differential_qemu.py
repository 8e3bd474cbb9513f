"""Differential test: the same firmware under qemu-user and under emu gives the same stdout and status."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_emu

QEMU = {"x86_64": "qemu-x86_64", "aarch64": "qemu-aarch64"}
CASES = [
    ("hello", ["7", "some words"]),
    ("page_touch", ["200", "3"]),
    ("mmap_exercise", []),
    ("compute_loop", ["20000"]),
    ("store_loop", ["20000", "8"]),
    ("unknown_syscall", []),
    ("bad_access", ["null-read"]),
    ("bad_access", ["ro-write"]),
    # signals: every mode but bus-lazy (MAP_LAZY is emu's), sigill (qemu-aarch64 reports
    # ILL_ILLOPN where Linux reports ILL_ILLOPC) and the timing-dependent eintr and nanosleep
    *(("signals", [mode]) for mode in (
        "segv-accerr", "segv-maperr", "raise", "mask", "timedwait", "altstack", "flags",
        "sigtrap", "sigfpe", "restart", "sigsuspend", "async", "abort", "ignore")),
]


def _status(returncode: int) -> int:
    """subprocess's -N (killed by signal N) as a shell reports it."""
    return 128 - returncode if returncode < 0 else returncode


@pytest.mark.parametrize("program,args", CASES, ids=[f"{p}-{'-'.join(a)}" for p, a in CASES])
def test_same_behaviour_as_qemu_user(firmware: Path, arch: str, tmp_path: Path, program: str,
                                     args: list[str]) -> None:
    qemu = shutil.which(QEMU[arch])
    if qemu is None:
        pytest.skip(f"{QEMU[arch]} is not installed")
    exe = firmware / arch / program
    # emu names the program by its guest path: give qemu the same argv[0] (-0)
    ref = subprocess.run([qemu, "-0", "/proc/self/exe", str(exe), *args], capture_output=True,
                         text=True, cwd=tmp_path, timeout=60)
    ours = run_emu("--root", tmp_path, exe, *args, cwd=tmp_path)
    assert ours.stdout == ref.stdout
    assert ours.returncode == _status(ref.returncode)
