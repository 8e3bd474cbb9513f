"""Semantics rows: fork shares pages copy-on-write; vfork, execve (new image in the same
process, locks released), wait4/waitpid, waitid and exit statuses — checked against qemu-user
too, where the behaviour is plain Linux."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

QEMU = {"x86_64": "qemu-x86_64", "aarch64": "qemu-aarch64"}


def test_fork_shares_pages_copy_on_write(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    run = emu(firmware / arch / "fork_exec", "cow")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["child: wrote its copy, first byte z, getppid ok 1",
                                       "parent: child ok exited 7",
                                       "parent: own pages unchanged 1"]
    stats = run.stats
    # the child's 16 writes into the shared buffer each made a private copy (plus glibc's own)
    assert stats["faults"]["by_cause"]["cow"] >= 16
    assert stats["mm"]["cow_copies"] == stats["faults"]["by_cause"]["cow"]
    pids = {t["pid"] for t in stats["threads"] if t["pid"] != 1}
    assert len(pids) == 2                                   # parent and child


def test_execve_runs_a_new_image_in_the_child(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    run = emu("--root", firmware / arch, firmware / arch / "fork_exec", "exec", "/hello")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [f"hello from {arch}", "argc=3", "argv[0]=/hello",
                                       "argv[1]=9", "argv[2]=from-exec",
                                       "EMU_GREETING=exec'd", "parent: child ok exited 9"]


def test_execve_of_a_missing_or_bad_file_fails_in_the_caller(firmware: Path, arch: str,
                                                              emu, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "script").write_text("#!/bin/sh\n")
    (tmp_path / "script").chmod(0o755)
    for target, error in (("/missing", "No such file or directory"),
                          ("/script", "Exec format error")):
        run = emu("--root", tmp_path, firmware / arch / "fork_exec", "exec", target)
        assert run.returncode == 1
        assert f"execve: {error}" in run.stderr


@pytest.mark.parametrize("mode,last", [
    ("vfork", "parent: child ok exited 3"),
    ("waitid", "parent: waitid signo=17 code=CLD_EXITED status=5 pid ok 1"),
    ("abort", "parent: child killed by signal 6"),
])
def test_wait_statuses(firmware: Path, arch: str, emu, mode: str, last: str) -> None:  # type: ignore[no-untyped-def]
    run = emu(firmware / arch / "fork_exec", mode)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == last


@pytest.mark.parametrize("mode", ["cow", "vfork", "waitid", "abort"])
def test_same_as_qemu_user(firmware: Path, arch: str, emu, mode: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    qemu = shutil.which(QEMU[arch])
    if qemu is None:
        pytest.skip(f"{QEMU[arch]} is not installed")
    exe = firmware / arch / "fork_exec"
    ref = subprocess.run([qemu, str(exe), mode], capture_output=True, text=True, timeout=60)
    ours = emu(exe, mode)
    assert (ours.stdout, ours.returncode) == (ref.stdout, ref.returncode)
