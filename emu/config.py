"""Run configuration: frozen dataclasses built by the CLI (or by tests) and read by the machine."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from emu.errors import EmuError
from emu.inject.spec import FaultSpec
from emu.mm.prefault import PrefaultPolicy

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
class MemoryManagerFlags:
    """procnto's -m letters: l locks every process, L superlocks every process (no faults at
    all, the pre-6.3.2 behaviour), v variable page sizes (large pages; on unless ~v)."""

    lock_all: bool = False
    superlock_all: bool = False
    variable_page_sizes: bool = True

    @classmethod
    def parse(cls, text: str) -> MemoryManagerFlags:
        """'l', 'L', 'v', each optionally preceded by '~' to turn it off: 'lv', 'L~v'..."""
        values = {"l": False, "L": False, "v": True}
        negate = False
        for ch in text:
            if ch == "~":
                negate = True
                continue
            if ch not in values:
                raise EmuError(f"unknown memory-manager flag {ch!r} (known: l, L, v, ~ to negate)")
            values[ch] = not negate
            negate = False
        if negate:
            raise EmuError("'~' must be followed by a flag letter")
        return cls(lock_all=values["l"], superlock_all=values["L"],
                   variable_page_sizes=values["v"])


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
    profile: str | None = None               # machine profile: a bundled name or a file (None: default)
    profile_overrides: tuple[str, ...] = ()  # KEY=VALUE settings over the profile (--set)
    mm_threads: int = 1                      # procnto memory-manager server threads
    mm_priority: int | None = None           # fixed server priority (None: inherit the pulse's)
    device_driver: int | None = None         # the block driver thread's priority (None: no
                                             # driver thread, completions are pure latency)
    faults_in_place: bool = True             # complete provably-alone zero-fill faults in the fill hook
    mm_flags: MemoryManagerFlags = field(default_factory=MemoryManagerFlags)
    seed: int = 0                            # AT_RANDOM and getrandom come from it
    tlb: str = "fast"                        # TLB model: "fast" or "detailed"
    prefault: PrefaultPolicy = field(default_factory=PrefaultPolicy)   # pages set up around a fault
    max_cycles: int = 0                      # 0: no limit; else SIGXCPU at this cycle
    faults: tuple[FaultSpec, ...] = ()       # injected faults (--fault, --inject), armed at load
