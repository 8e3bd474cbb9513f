"""Shared fixtures: the firmware (built on demand) and a runner for `emu run` (integration and conformance).

`run_emu` runs `emu run ...` in this process (the CLI's `main`, which drives a Machine),
with the guest's stdin, stdout and stderr on files, so the suite is fast and coverage
sees the kernel. A run that needs a process of its own — a different PYTHONHASHSEED, or
`subprocess=True` — is started as `python -m emu run ...`.
"""
from __future__ import annotations

import gc
import io
import json
import os
import subprocess
import subprocess as subprocess_module
import sys
import tempfile
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
            env: dict[str, str] | None = None, timeout: float = 120,
            subprocess: bool = False) -> EmuRun:
    """Run `emu run [--stats FILE] ARGS...` and collect what it did: in this process, unless
    `subprocess` or a PYTHONHASHSEED in `env` asks for a process of its own."""
    argv = ["run"]
    if stats_path is not None:
        argv += ["--stats", str(stats_path)]
    argv += [str(a) for a in args]
    full_env = {**os.environ, **(env or {})}
    if subprocess or "PYTHONHASHSEED" in (env or {}):
        returncode, stdout, stderr = _run_subprocess(argv, cwd, full_env, timeout)
    else:
        returncode, stdout, stderr = _run_in_process(argv, cwd, full_env)
    stats = None
    if stats_path is not None and stats_path.exists() and stats_path.stat().st_size:
        stats = json.loads(stats_path.read_text())
    return EmuRun(returncode, stdout, stderr, stats)


def _run_subprocess(argv: list[str], cwd: Path | None, env: dict[str, str],
                    timeout: float) -> tuple[int, str, str]:
    proc = subprocess_module.run([sys.executable, "-m", "emu", *argv], capture_output=True,
                                 text=True, cwd=cwd, env=env, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def _run_in_process(argv: list[str], cwd: Path | None, env: dict[str, str]) -> tuple[int, str, str]:
    """emu's `main` here, its stdio (and the guest's) on temporary files."""
    from emu.cli import main

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            open(os.devnull, "rb") as null:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(fd) for fd in (0, 1, 2)]
        saved_streams = sys.stdout, sys.stderr
        old_cwd = os.getcwd()
        try:
            for fd, target in ((0, null), (1, out), (2, err)):
                os.dup2(target.fileno(), fd)
            sys.stdout = io.TextIOWrapper(open(os.dup(1), "wb"), line_buffering=True)
            sys.stderr = io.TextIOWrapper(open(os.dup(2), "wb"), line_buffering=True)
            if cwd is not None:
                os.chdir(cwd)
            try:
                code = main(argv, environ=env)
            except SystemExit as exc:            # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout.close()
            sys.stderr.close()
            sys.stdout, sys.stderr = saved_streams
            os.chdir(old_cwd)
            for fd, copy in zip((0, 1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)
            gc.collect()                          # engines and their RAM go now
        out.seek(0)
        err.seek(0)
        return code, out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")


@pytest.fixture
def emu(tmp_path: Path):  # type: ignore[no-untyped-def]
    """`emu(*args)` runs emu with --stats in a temp file and returns an EmuRun."""
    counter = iter(range(1_000_000))

    def runner(*args: str | os.PathLike[str], **kwargs: Any) -> EmuRun:
        return run_emu(*args, stats_path=tmp_path / f"stats{next(counter)}.json", **kwargs)
    return runner
