"""Run configuration: frozen dataclasses built by the CLI (or by tests) and read by the machine."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from emu.errors import EmuError

DEFAULT_RAM = 256 << 20
_SIZE = re.compile(r"^\s*(\d+)\s*([kKmMgG]?)(i?[bB])?\s*$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """'256M' → 268435456; plain numbers are bytes. EmuError on anything else."""
    match = _SIZE.match(text)
    if not match:
        raise EmuError(f"bad size {text!r}: use a number with an optional K, M or G suffix")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


@dataclass(frozen=True)
class RunConfig:
    """Everything one `emu run` needs."""

    program: str
    args: tuple[str, ...] = ()
    arch: str = "auto"                       # "auto", "x86_64" or "aarch64"
    ram_bytes: int = DEFAULT_RAM
    root: str = "."
    uid: int = 0
    max_instructions: int = 0                # 0: no limit
    env: tuple[str, ...] = field(default_factory=tuple)
    profile: str | None = None               # machine profile file (None: the bundled default)
    mm_threads: int = 1                      # procnto memory-manager server threads
    faults_in_place: bool = True             # complete provably-alone zero-fill faults in the fill hook
