"""Machine profiles: the cycle cost of every simulated event and the TLB geometry, loaded
from TOML data files (emu/profiles/*.toml, or any file), each number with its source.

A profile may name a `base` profile and give only the keys it changes; `--set KEY=VALUE`
overrides any key from the command line. Every numeric key must be covered by an entry of
the profile's [sources] table (its own dotted name or a prefix of it): a citation, or a
text starting "assumption:".
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

from emu.errors import EmuError

PROFILE_DIR = Path(__file__).with_name("profiles")
DEFAULT_PROFILE = PROFILE_DIR / "default.toml"
PAGE_SIZES = {"4K": 4096, "64K": 65536, "1M": 1 << 20, "2M": 2 << 20, "1G": 1 << 30}
REPLACEMENTS = ("lru", "fifo", "random")
ARCHES = ("any", "x86_64", "aarch64")


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
    driver_interrupt: int           # the device driver thread's work per completion


@dataclass(frozen=True)
class TlbArray:
    """One set-associative array of a TLB (ways == entries: fully associative)."""

    entries: int
    ways: int
    page_sizes: tuple[int, ...]


@dataclass(frozen=True)
class TlbLevel:
    """One TLB: arrays probed together, the cycles a lookup adds, the replacement policy."""

    arrays: tuple[TlbArray, ...]
    hit_cycles: int
    replacement: str


@dataclass(frozen=True)
class TlbModel:
    """The TLBs: fast mode's fixed cost per refill, and the detailed model's levels."""

    fill: int
    l1i: TlbLevel
    l1d: TlbLevel
    l2: TlbLevel


@dataclass(frozen=True)
class WalkCache:
    """The page-walk cache: non-leaf entries of `levels` (0 is the root); 0 entries: none."""

    entries: int
    ways: int
    levels: tuple[int, ...]
    hit_cycles: int


@dataclass(frozen=True)
class WalkCosts:
    """Cycles to read a page-table entry of each level (root first), and the walk cache."""

    level_cycles: tuple[int, int, int, int]
    cache: WalkCache


@dataclass(frozen=True)
class Profile:
    """A machine profile (each bundled file notes the source of every number)."""

    name: str
    arch: str
    summary: str
    frequency_hz: int
    time_slice_ns: int
    default_priority: int
    instructions: InstructionCosts
    tlb: TlbModel
    walk: WalkCosts
    kernel: KernelCosts
    read_page_ns: int
    write_page_ns: int
    sources: tuple[tuple[str, str], ...]

    @property
    def tlb_fill(self) -> int:
        """Fast mode's fixed cycles per TLB refill (the walk's levels come on top)."""
        return self.tlb.fill

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

    def check_arch(self, arch: str) -> None:
        """EmuError unless the profile fits a guest of `arch`."""
        if self.arch not in ("any", arch):
            raise EmuError(f"profile {self.name} is for {self.arch}, the program is {arch}")

    def source(self, key: str) -> str:
        """The source of a dotted key: its own entry or the longest prefix's."""
        table = dict(self.sources)
        parts = key.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in table:
                return table[".".join(parts[:n])]
        return ""


# ---- loading ----

def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise EmuError(f"no profile {path} (emu profiles lists the bundled ones)") from None
    except OSError as exc:
        raise EmuError(f"cannot read profile {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise EmuError(f"profile {path}: not a UTF-8 text file") from None
    except tomllib.TOMLDecodeError as exc:
        raise EmuError(f"profile {path}: {exc}") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else value
    return out


def _locate(spec: str | Path, near: Path | None = None) -> Path:
    text = str(spec)
    if "/" in text or text.endswith(".toml"):
        path = Path(text)
        return path if path.is_absolute() or near is None else near / path
    if near is not None and (near / f"{text}.toml").is_file():
        return near / f"{text}.toml"
    path = PROFILE_DIR / f"{text}.toml"
    if not path.is_file():
        names = ", ".join(p.stem for p in sorted(PROFILE_DIR.glob("*.toml")))
        raise EmuError(f"no profile named {text!r} (bundled: {names})")
    return path


def _resolved(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The data of a profile file with its `base` chain merged under it."""
    if path.resolve() in seen:
        raise EmuError(f"profile {path}: its base chain loops back to itself")
    data = _read(path)
    _check_sources(data, str(path))
    base = data.get("profile", {}).get("base")
    if base is None:
        return data
    if not isinstance(base, str):
        raise EmuError(f"profile {path}: [profile] base must be a profile name or file")
    parent = _resolved(_locate(base, path.parent), (*seen, path.resolve()))
    merged = _merge(parent, data)
    merged["profile"] = {k: v for k, v in merged["profile"].items() if k != "base"}
    return merged


def _override(data: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise EmuError(f"--set expects KEY=VALUE, got {item!r}")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    *path, last = key.split(".")
    table = data
    for part in path:
        if not isinstance(table.get(part), dict):
            raise EmuError(f"--set {key}: the profile has no such key")
        table = table[part]
    if last not in table:
        raise EmuError(f"--set {key}: the profile has no such key")
    table[last] = value
    data.setdefault("sources", {})[key] = "set on the command line"


class _Reader:
    """Typed access to a profile's data, every error one line naming the key."""

    def __init__(self, data: dict[str, Any], where: str) -> None:
        self.data = data
        self.where = where

    def error(self, message: str) -> EmuError:
        return EmuError(f"profile {self.where}: {message}")

    def get(self, key: str) -> Any:
        value: Any = self.data
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                raise self.error(f"missing {key}")
            value = value[part]
        return value

    def int(self, key: str, minimum: int = 0) -> int:
        value = self.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self.error(f"{key} must be an integer >= {minimum}")
        return value

    def text(self, key: str, choices: Sequence[str] | None = None) -> str:
        value = self.get(key)
        if not isinstance(value, str) or (choices is not None and value not in choices):
            raise self.error(f"{key} must be {'one of ' + ', '.join(choices) if choices else 'a string'}")
        return value

    def section(self, key: str, cls: type) -> Any:
        return cls(**{f.name: self.int(f"{key}.{f.name}") for f in fields(cls)})

    def level(self, key: str, default_replacement: str) -> TlbLevel:
        arrays = self.get(f"{key}.arrays")
        if not isinstance(arrays, list) or not arrays:
            raise self.error(f"{key}.arrays must be a list of {{entries, ways, page_sizes}}")
        built = []
        for i, array in enumerate(arrays):
            if not isinstance(array, dict) or set(array) != {"entries", "ways", "page_sizes"}:
                raise self.error(f"{key}.arrays[{i}] needs exactly entries, ways, page_sizes")
            entries, ways, sizes = array["entries"], array["ways"], array["page_sizes"]
            if not all(isinstance(v, int) and v > 0 for v in (entries, ways)) \
                    or entries % ways or (entries // ways) & (entries // ways - 1):
                raise self.error(f"{key}.arrays[{i}]: entries and ways must be positive, "
                                 "with a power-of-two number of sets (entries / ways)")
            if not isinstance(sizes, list) or not sizes or any(s not in PAGE_SIZES for s in sizes):
                raise self.error(f"{key}.arrays[{i}].page_sizes: a list of "
                                 f"{', '.join(PAGE_SIZES)}")
            built.append(TlbArray(entries, ways, tuple(PAGE_SIZES[s] for s in sizes)))
        repl = self.data.get(key.split(".")[0], {}).get(key.split(".")[1], {}).get(
            "replacement", default_replacement)
        if repl not in REPLACEMENTS:
            raise self.error(f"{key}.replacement must be one of {', '.join(REPLACEMENTS)}")
        return TlbLevel(tuple(built), self.int(f"{key}.hit_cycles"), repl)


def _numeric_keys(data: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            keys += _numeric_keys(value, name + ".")
        elif isinstance(value, (int, float, list)) and not isinstance(value, bool):
            keys.append(name)
    return keys


def _check_sources(data: dict[str, Any], where: str) -> None:
    """Every numeric key a profile file sets has a source in that file's [sources]."""
    sources = data.get("sources", {})
    if not isinstance(sources, dict) or not all(isinstance(v, str) for v in sources.values()):
        raise EmuError(f"profile {where}: [sources] must map dotted keys to texts")
    for key in _numeric_keys({k: v for k, v in data.items() if k not in ("sources", "profile")}):
        parts = key.split(".")
        if not any(".".join(parts[:n]) in sources for n in range(len(parts), 0, -1)):
            raise EmuError(f"profile {where}: {key} has no source in [sources] "
                           "(a citation or 'assumption: ...')")


def profile_from(data: dict[str, Any], where: str) -> Profile:
    """Build and validate a Profile from merged TOML data; EmuError with one line."""
    r = _Reader(data, where)
    _check_sources(data, where)
    sources = data.get("sources", {})
    frequency = r.int("machine.frequency_hz", 1)
    prio = r.int("machine.default_priority", 1)
    if prio > 255:
        raise r.error("machine.default_priority must be 1-255")
    replacement = r.text("tlb.replacement", REPLACEMENTS) if "replacement" in data.get(
        "tlb", {}) else "lru"
    levels = r.get("walk.level_cycles")
    if not isinstance(levels, list) or len(levels) != 4 or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in levels):
        raise r.error("walk.level_cycles must be 4 non-negative integers (root level first)")
    cache_levels = r.get("walk.cache.levels")
    if not isinstance(cache_levels, list) or not all(
            isinstance(v, int) and 0 <= v <= 2 for v in cache_levels):
        raise r.error("walk.cache.levels must list non-leaf levels 0-2")
    cache = WalkCache(r.int("walk.cache.entries"), r.int("walk.cache.ways", 1),
                      tuple(cache_levels), r.int("walk.cache.hit_cycles"))
    if cache.entries and (cache.entries % cache.ways
                          or (cache.entries // cache.ways) & (cache.entries // cache.ways - 1)):
        raise r.error("walk.cache: a power-of-two number of sets (entries / ways)")
    return Profile(
        name=r.text("profile.name"), arch=r.text("profile.arch", ARCHES),
        summary=r.text("profile.summary"), frequency_hz=frequency,
        time_slice_ns=r.int("machine.time_slice_ns", 1), default_priority=prio,
        instructions=r.section("instructions", InstructionCosts),
        tlb=TlbModel(r.int("tlb.fill"), r.level("tlb.l1i", replacement),
                     r.level("tlb.l1d", replacement), r.level("tlb.l2", replacement)),
        walk=WalkCosts(tuple(levels), cache),  # type: ignore[arg-type]
        kernel=r.section("kernel", KernelCosts),
        read_page_ns=r.int("backing_store.read_page_ns"),
        write_page_ns=r.int("backing_store.write_page_ns"),
        sources=tuple(sorted(sources.items())))


def load_profile(spec: str | Path | None = None, overrides: Sequence[str] = ()) -> Profile:
    """A profile: None (the bundled default), a bundled NAME, or a FILE; then the KEY=VALUE
    `overrides`. EmuError with one line if anything is invalid."""
    path = DEFAULT_PROFILE if spec is None else _locate(spec)
    data = _resolved(path)
    for item in overrides:
        _override(data, item)
    return profile_from(data, str(path) if spec is None or "/" in str(spec) else str(spec))


def bundled_profiles() -> list[Profile]:
    """Every bundled profile, by name."""
    return [load_profile(p.stem) for p in sorted(PROFILE_DIR.glob("*.toml"))]
