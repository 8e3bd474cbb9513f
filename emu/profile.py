"""Machine profiles: the cycle cost of every simulated event, loaded from a TOML data file."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from emu.errors import EmuError

DEFAULT_PROFILE = Path(__file__).with_name("profiles") / "default.toml"


@dataclass(frozen=True)
class InstructionCosts:
    """Cycles per instruction class."""

    alu: int
    mul: int
    div: int
    memory: int
    branch: int
    call_return: int
    fp_simd: int


@dataclass(frozen=True)
class KernelCosts:
    """Cycles charged for kernel work."""

    syscall: int
    fault_entry: int
    pulse: int
    context_switch: int
    procnto_fault: int
    zero_page: int
    copy_page: int


@dataclass(frozen=True)
class Profile:
    """A machine profile (see emu/profiles/default.toml for the sources of each number)."""

    frequency_hz: int
    time_slice_ns: int
    default_priority: int
    instructions: InstructionCosts
    tlb_fill: int
    kernel: KernelCosts
    read_page_ns: int
    write_page_ns: int

    def cycles(self, nanoseconds: int) -> int:
        """Nanoseconds of simulated time as cycles."""
        return nanoseconds * self.frequency_hz // 1_000_000_000

    def nanoseconds(self, cycles: int) -> int:
        """Cycles as nanoseconds of simulated time."""
        return cycles * 1_000_000_000 // self.frequency_hz

    @property
    def time_slice(self) -> int:
        """The round-robin time slice in cycles."""
        return self.cycles(self.time_slice_ns)


def _section(data: dict[str, Any], name: str, cls: type, path: Path) -> Any:
    section = data.get(name)
    if not isinstance(section, dict):
        raise EmuError(f"profile {path}: missing [{name}] section")
    wanted = {f.name for f in fields(cls)}
    missing = wanted - section.keys()
    if missing:
        raise EmuError(f"profile {path}: [{name}] lacks {', '.join(sorted(missing))}")
    values = {k: section[k] for k in wanted}
    for key, value in values.items():
        if not isinstance(value, int) or value < 0:
            raise EmuError(f"profile {path}: [{name}] {key} must be a non-negative integer")
    return cls(**values)


def _value(data: dict[str, Any], section: str, key: str, path: Path) -> int:
    """A non-negative integer setting, or EmuError naming it."""
    table = data.get(section)
    if not isinstance(table, dict) or key not in table:
        raise EmuError(f"profile {path}: missing [{section}] {key}")
    value = table[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise EmuError(f"profile {path}: [{section}] {key} must be a non-negative integer")
    return value


def load_profile(path: str | Path | None = None) -> Profile:
    """Load a profile file (default: the bundled default.toml); EmuError with one line if invalid."""
    path = Path(path) if path is not None else DEFAULT_PROFILE
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise EmuError(f"cannot read profile {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise EmuError(f"profile {path}: not a UTF-8 text file") from None
    except tomllib.TOMLDecodeError as exc:
        raise EmuError(f"profile {path}: {exc}") from None
    frequency = _value(data, "machine", "frequency_hz", path)
    slice_ns = _value(data, "machine", "time_slice_ns", path)
    prio = _value(data, "machine", "default_priority", path)
    tlb_fill = _value(data, "tlb", "fill", path)
    read_ns = _value(data, "backing_store", "read_page_ns", path)
    write_ns = _value(data, "backing_store", "write_page_ns", path)
    if frequency <= 0 or slice_ns <= 0 or not 1 <= prio <= 255:
        raise EmuError(f"profile {path}: frequency and time slice must be positive, "
                       "default_priority 1-255")
    return Profile(frequency_hz=frequency, time_slice_ns=slice_ns, default_priority=prio,
                   instructions=_section(data, "instructions", InstructionCosts, path),
                   tlb_fill=tlb_fill, kernel=_section(data, "kernel", KernelCosts, path),
                   read_page_ns=read_ns, write_page_ns=write_ns)
