"""Semantics rows: pipes block only their thread (Linux's capacity, EOF, EPIPE/SIGPIPE, atomic
writes, poll/select/epoll), and processes start and end as libc and shells expect (posix_spawn
on a shared-memory vfork, SIGCHLD, interruptible wait, process groups and sessions).

Each case runs a firmware program on both guest architectures and compares what it prints
with the same program run natively on this x86-64 host, where Linux itself answers."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_emu

PIPE_MODES = ["threads", "capacity", "eof", "epipe", "big", "poll", "atomic", "eintr"]
SPAWN_MODES = ["sigchld", "wait-eintr", "groups"]


def _native(program: Path, *args: str) -> tuple[int, str]:
    done = subprocess.run([str(program), *args], capture_output=True, text=True, timeout=60)
    code = 128 - done.returncode if done.returncode < 0 else done.returncode   # killed: 128+N
    return code, done.stdout


def _emu(firmware: Path, arch: str, name: str, *args: str) -> tuple[int, str, str]:
    run = run_emu("--root", firmware, firmware / arch / name, *args)
    return run.returncode, run.stdout, run.stderr


@pytest.mark.parametrize("mode", PIPE_MODES)
def test_pipe_behaves_as_on_linux(firmware: Path, arch: str, mode: str) -> None:
    expected = _native(firmware / "x86_64" / "pipes", mode)
    code, out, err = _emu(firmware, arch, "pipes", mode)
    assert (code, out) == expected, err
    assert "unimplemented" not in err and "deadlock" not in err


def test_pipe_outputs_are_what_linux_documents(firmware: Path) -> None:
    """The native answers themselves, so that the comparison above compares something."""
    out = {mode: _native(firmware / "x86_64" / "pipes", mode)[1] for mode in PIPE_MODES}
    assert out["threads"] == "read 4 'late' after >= 10 ms\n"
    assert "F_GETPIPE_SZ 65536\nfilled 65536 bytes, then EAGAIN\n" in out["capacity"]
    assert "shrink to 4096: EBUSY\ngrow to 100000: 131072\nwrite now 100\n" in out["capacity"]
    assert out["eof"] == "read 'from child' then 0 (EOF)\n"
    assert out["epipe"] == "write: -1 EPIPE, SIGPIPE caught\n"   # then killed by SIGPIPE
    assert out["big"] == "received 1048576 bytes, 0 wrong, writer exited 0\n"
    assert out["atomic"] == "80 records, 0 mixed\n"
    assert out["eintr"] == ("without SA_RESTART: -1 EINTR\nthen: 2 'ok'\n"
                            "with SA_RESTART: 2 're'\n")


def test_sigpipe_kills_by_default(firmware: Path, arch: str) -> None:
    code, out, _ = _emu(firmware, arch, "pipes", "epipe")
    assert code == 128 + 13 and "still alive" not in out


@pytest.mark.parametrize("mode", SPAWN_MODES)
def test_process_calls_behave_as_on_linux(firmware: Path, arch: str, mode: str) -> None:
    expected = _native(firmware / "x86_64" / "spawn", mode)
    code, out, err = _emu(firmware, arch, "spawn", mode)
    assert (code, out) == expected, err
    assert "unimplemented" not in err


def test_posix_spawn_runs_the_child_on_its_own_stack(firmware: Path, arch: str) -> None:
    code, out, err = _emu(firmware, arch, "spawn", "posix_spawn", f"/{arch}/spawn")
    assert code == 0, err
    assert out == ("posix_spawn: ok\nhello from the spawned child\nchild exited 3\n"
                   "posix_spawn of a missing file: ENOENT\n")
