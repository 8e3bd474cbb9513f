"""Shared fixtures: the firmware (built on demand) and a runner for `emu run` (integration and conformance)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
FIRMWARE = REPO / "firmware"
ARCHES = ("x86_64", "aarch64")


@dataclass
class EmuRun:
    """The outcome of one `emu run`."""

    returncode: int
    stdout: str
    stderr: str
    stats: dict[str, Any] | None


@pytest.fixture(scope="session")
def firmware() -> Path:
    """firmware/build, built with make if any program is missing or stale."""
    result = subprocess.run(["make", "-C", str(FIRMWARE), "-j2", "-s"], capture_output=True,
                            text=True)
    assert result.returncode == 0, f"firmware build failed:\n{result.stderr}"
    return FIRMWARE / "build"


@pytest.fixture(params=ARCHES)
def arch(request: pytest.FixtureRequest) -> str:
    """Each guest architecture in turn."""
    return request.param


def run_emu(*args: str | os.PathLike[str], stats_path: Path | None = None, cwd: Path | None = None,
            env: dict[str, str] | None = None, timeout: float = 120) -> EmuRun:
    """Run `python -m emu run [--stats FILE] ARGS...` and collect what it did."""
    cmd = [sys.executable, "-m", "emu", "run"]
    if stats_path is not None:
        cmd += ["--stats", str(stats_path)]
    cmd += [str(a) for a in args]
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=full_env,
                          timeout=timeout)
    stats = None
    if stats_path is not None and stats_path.exists() and stats_path.stat().st_size:
        stats = json.loads(stats_path.read_text())
    return EmuRun(proc.returncode, proc.stdout, proc.stderr, stats)


@pytest.fixture
def emu(tmp_path: Path):  # type: ignore[no-untyped-def]
    """`emu(*args)` runs emu with --stats in a temp file and returns an EmuRun."""
    counter = iter(range(1_000_000))

    def runner(*args: str | os.PathLike[str], **kwargs: Any) -> EmuRun:
        return run_emu(*args, stats_path=tmp_path / f"stats{next(counter)}.json", **kwargs)
    return runner
