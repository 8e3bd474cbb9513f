"""What a program learns at start-up: auxv, identity, CPU features, terminal queries."""
from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path


def test_auxv_matches_the_cpu_and_the_program(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    root = firmware.parent
    run = emu("--root", root, "--uid", "1000", firmware / arch / "cpu_features")
    assert run.returncode == 0, run.stdout
    lines = run.stdout.splitlines()
    assert "pagesz=4096" in lines
    assert "uid=1000 euid=1000 gid=1000 getuid=1000" in lines
    assert f"execfn=/build/{arch}/cpu_features" in lines
    for check in ("entry", "phdr", "random", "hwcap"):
        assert f"{check}: ok" in lines
    if arch == "aarch64":
        assert "lse: ok" in lines          # LSE atomics run on the CPU model


def test_default_uid_is_root(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    run = emu(firmware / arch / "cpu_features")
    assert "uid=0 euid=0 gid=0 getuid=0" in run.stdout


def test_terminal_queries_without_a_tty(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    run = emu(firmware / arch / "tty_probe")
    assert run.stdout == "isatty0=0 isatty1=0\nwinsize=ENOTTY\n"


def test_terminal_queries_on_a_tty(firmware: Path, arch: str) -> None:
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
    proc = subprocess.run([sys.executable, "-m", "emu", "run", str(firmware / arch / "tty_probe")],
                          stdin=terminal, stdout=terminal, stderr=subprocess.PIPE, timeout=60)
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert proc.returncode == 0, proc.stderr
    assert output.replace(b"\r\n", b"\n") == b"isatty0=1 isatty1=1\nwinsize=33x101\n"
