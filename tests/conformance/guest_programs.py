"""Building a conformance test's C guest program for each architecture whose cross
compiler is installed, and picking it out in a test (skipped where none was built)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

COMPILERS = {"x86_64": ["gcc", "-static", "-O2"],
             "aarch64": ["aarch64-linux-gnu-gcc", "-static", "-O2"]}


def build_for_each_arch(directory: Path, name: str, source: str,
                        libs: tuple[str, ...] = ()) -> dict[str, Path]:
    """`source` written to directory/name.c and compiled static to directory/name-ARCH for
    every architecture with a compiler; {arch: program}."""
    src = directory / f"{name}.c"
    src.write_text(source)
    built = {}
    for arch, cc in COMPILERS.items():
        if shutil.which(cc[0]) is None:
            continue
        exe = directory / f"{name}-{arch}"
        subprocess.run([*cc, "-o", str(exe), str(src), *libs], check=True,
                       capture_output=True)
        built[arch] = exe
    return built


def program(programs: dict[str, Path], arch: str) -> Path:
    """The program for `arch` (skip if it could not be built)."""
    if arch not in programs:
        pytest.skip(f"no compiler for {arch}")
    return programs[arch]
