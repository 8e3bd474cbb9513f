"""Programs built outside the project with stock toolchains, and inputs emu must refuse."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_emu

HELLO_C = r"""
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    printf("hello, %s\n", argc > 1 ? argv[1] : "nobody");
    printf("HELLO_ENV=%s\n", getenv("HELLO_ENV") ? getenv("HELLO_ENV") : "(unset)");
    return argc;
}
"""

COMPILERS = {
    "glibc-x86_64": ["gcc", "-static", "-O2"],
    "musl-x86_64": ["musl-gcc", "-static", "-O2"],
    "glibc-aarch64": ["aarch64-linux-gnu-gcc", "-static", "-O2"],
}


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding hello.c, far from the project."""
    d = tmp_path_factory.mktemp("outside")
    (d / "hello.c").write_text(HELLO_C)
    return d


@pytest.mark.parametrize("flavour", sorted(COMPILERS))
def test_static_hello_built_by_stock_compiler(outside: Path, flavour: str) -> None:
    cc = COMPILERS[flavour]
    if shutil.which(cc[0]) is None:
        pytest.skip(f"{cc[0]} is not installed")
    exe = outside / f"hello-{flavour}"
    subprocess.run([*cc, "-o", str(exe), str(outside / "hello.c")], check=True)
    run = run_emu("--inherit-env", exe, "world", "again", env={"HELLO_ENV": "set"})
    assert run.stdout == "hello, world\nHELLO_ENV=set\n"
    assert run.returncode == 3
    assert run.stderr == ""


def _one_line_error(run) -> str:  # type: ignore[no-untyped-def]
    assert run.returncode == 125
    assert run.stdout == ""
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert "Traceback" not in run.stderr
    return lines[0]


def test_dynamic_binary_is_refused(outside: Path) -> None:
    exe = outside / "hello-dynamic"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(outside / "hello.c")], check=True)
    assert "dynamically linked" in _one_line_error(run_emu(exe))


def test_non_elf_is_refused(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    assert "not an ELF file" in _one_line_error(run_emu(script))


@pytest.mark.parametrize("keep", [64, 1000, 200_000])
def test_truncated_elf_is_refused(firmware: Path, tmp_path: Path, keep: int) -> None:
    cut = tmp_path / "cut"
    cut.write_bytes((firmware / "x86_64" / "hello").read_bytes()[:keep])
    assert "truncated" in _one_line_error(run_emu(cut))


def test_unsupported_machine_is_refused(firmware: Path, tmp_path: Path) -> None:
    data = bytearray((firmware / "x86_64" / "hello").read_bytes())
    data[18:20] = (243).to_bytes(2, "little")          # e_machine = EM_RISCV
    riscv = tmp_path / "riscv"
    riscv.write_bytes(bytes(data))
    assert "unsupported machine EM_RISCV" in _one_line_error(run_emu(riscv))


def test_missing_program_and_bad_options(firmware: Path, tmp_path: Path) -> None:
    assert "No such file" in _one_line_error(run_emu(tmp_path / "nope"))
    assert "--ram" in _one_line_error(run_emu("--ram", "lots", firmware / "x86_64" / "hello"))
    assert "not aarch64" in _one_line_error(run_emu("--arch", "aarch64", firmware / "x86_64" / "hello"))
    assert "guest root" in _one_line_error(run_emu("--root", tmp_path / "nodir", firmware / "x86_64" / "hello"))
