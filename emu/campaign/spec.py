"""A campaign file: programs × policies × fault sweeps, and how sweeps expand.

```toml
[campaign]
seed = 1                  # random samples and p= draws
late = 0.10               # "late": more than 10 % slower than the golden run
hang = 10                 # the cycle limit: 10 x the golden run's cycles
fast_forward = true       # fork each experiment from a run already at its trigger
timeout = 300             # host seconds per run, at most

[[program]]
name = "checksum-x86"     # default: the file name
path = "../firmware/build/x86_64/checksum"   # relative to this file
args = ["200"]
options = "--ram 64M"     # emu run options
root = "data"             # copied for every run (default: an empty directory)
files = ["/log.bin"]      # guest files whose final bytes are part of the output

[[policy]]                # default: one policy, "default", with no options
name = "locked"
options = "-ml"

[[sweep]]
name = "register flips"
kind = "bitflip"
programs = ["checksum-x86"]                        # default: every program
cycle = { samples = 100, from = 0, to = "golden" }  # 100 random cycles of the golden run
reg = { x86_64 = ["rax", "rbx"], aarch64 = ["x0", "x1"] }   # a value per architecture
bit = { from = 0, to = 63 }
samples = 300             # 300 random combinations instead of the whole product
```

A key's value is a scalar (fixed), a list (each value), `{from, to[, step]}` (each value,
both ends included), `{samples, from, to}` (that many seeded random values), `{symbol,
each = "instruction"}` (pc: the address of every instruction of a function), or a table
keyed by architecture holding any of those. `to = "golden"` is the golden run's cycles
(for `cycle`) or its number of occurrences of the sweep's trigger (for `nth`).
"""
from __future__ import annotations

import itertools
import os
import random
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from emu.errors import EmuError
from emu.inject.spec import KIND_BY_NAME, FaultSpec
from emu.tomlfile import read_toml

ARCH_KEYS = ("x86_64", "aarch64")
SWEEP_META = ("name", "kind", "programs", "policies", "samples")


@dataclass(frozen=True)
class ProgramSpec:
    """A `[[program]]` table."""

    name: str
    path: str                       # absolute host path
    args: tuple[str, ...]
    options: tuple[str, ...]
    root: str | None
    files: tuple[str, ...]
    arch: str


@dataclass(frozen=True)
class PolicySpec:
    """A `[[policy]]` table."""

    name: str
    options: tuple[str, ...]


@dataclass(frozen=True)
class SweepSpec:
    """A `[[sweep]]` table: a fault kind and each key's value spec."""

    index: int
    name: str
    kind: str
    keys: dict[str, Any]
    programs: tuple[str, ...]
    policies: tuple[str, ...]
    samples: int | None


@dataclass(frozen=True)
class Settings:
    """The `[campaign]` table."""

    name: str
    seed: int = 0
    late: float = 0.10
    hang: float = 10.0
    fast_forward: bool = True
    timeout: float = 300.0
    group: int = 0                  # experiments per task (0: chosen from the count)


@dataclass(frozen=True)
class Campaign:
    """A whole campaign file, checked."""

    path: str
    settings: Settings
    programs: tuple[ProgramSpec, ...]
    policies: tuple[PolicySpec, ...]
    sweeps: tuple[SweepSpec, ...] = field(default_factory=tuple)

    @classmethod
    def load(cls, path: str) -> Campaign:
        """Read and check a campaign file; EmuError with one line if it is wrong."""
        doc = read_toml(path, "campaign")
        where = f"campaign {path}"
        unknown = set(doc) - {"campaign", "program", "policy", "sweep"}
        if unknown:
            raise EmuError(f"{where}: unknown table(s) {', '.join(sorted(unknown))}")
        base = Path(path).resolve().parent
        settings = _settings(doc.get("campaign", {}), Path(path).stem, where)
        programs = tuple(_program(t, base, f"{where}, program {i}")
                         for i, t in enumerate(_tables(doc, "program", where), 1))
        if not programs:
            raise EmuError(f"{where}: no [[program]]")
        policies = tuple(_policy(t, f"{where}, policy {i}")
                         for i, t in enumerate(doc.get("policy", []), 1)) or (
            PolicySpec("default", ()),)
        for what, names in (("program", [p.name for p in programs]),
                            ("policy", [p.name for p in policies])):
            if len(set(names)) != len(names):
                raise EmuError(f"{where}: two {what}s have the same name")
        sweeps = tuple(_sweep(t, i, {p.name for p in programs}, {p.name for p in policies},
                              f"{where}, sweep {i}")
                       for i, t in enumerate(_tables(doc, "sweep", where), 1))
        if not sweeps:
            raise EmuError(f"{where}: no [[sweep]]")
        return cls(str(Path(path).resolve()), settings, programs, policies, sweeps)


def _tables(doc: dict[str, Any], name: str, where: str) -> list[dict[str, Any]]:
    tables = doc.get(name, [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise EmuError(f"{where}: [[{name}]] must be an array of tables")
    return tables


def _settings(table: dict[str, Any], stem: str, where: str) -> Settings:
    known = {"name", "seed", "late", "hang", "fast_forward", "timeout", "group"}
    unknown = set(table) - known
    if unknown:
        raise EmuError(f"{where}: [campaign] has unknown key(s) {', '.join(sorted(unknown))}")
    try:
        settings = Settings(name=str(table.get("name", stem)), seed=int(table.get("seed", 0)),
                            late=float(table.get("late", 0.10)),
                            hang=float(table.get("hang", 10.0)),
                            fast_forward=bool(table.get("fast_forward", True)),
                            timeout=float(table.get("timeout", 300.0)),
                            group=int(table.get("group", 0)))
    except (TypeError, ValueError) as exc:
        raise EmuError(f"{where}: [campaign]: {exc}") from None
    if settings.late < 0 or settings.hang <= 1 or settings.timeout <= 0 or settings.group < 0:
        raise EmuError(f"{where}: [campaign] needs late >= 0, hang > 1, timeout > 0, group >= 0")
    return settings


def _options(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    try:
        return tuple(shlex.split(str(value)))
    except ValueError as exc:
        raise EmuError(f"{where}: options: {exc}") from None


def _program(table: dict[str, Any], base: Path, where: str) -> ProgramSpec:
    known = {"name", "path", "args", "options", "root", "files"}
    unknown = set(table) - known
    if unknown:
        raise EmuError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if "path" not in table:
        raise EmuError(f"{where}: no path")
    path = (base / str(table["path"])).resolve()
    if not path.is_file():
        raise EmuError(f"{where}: {path}: no such program (build the firmware: make -C "
                       "firmware)")
    root = table.get("root")
    if root is not None:
        root_path = (base / str(root)).resolve()
        if not root_path.is_dir():
            raise EmuError(f"{where}: root {root_path} is not a directory")
        root = str(root_path)
    files = tuple(str(f) for f in table.get("files", []))
    if any(not f.startswith("/") for f in files):
        raise EmuError(f"{where}: files are guest paths, starting with /")
    from emu.loader.elf import read_elf
    arch = read_elf(str(path)).arch
    return ProgramSpec(str(table.get("name", path.name)), str(path),
                       tuple(str(a) for a in table.get("args", [])),
                       _options(table.get("options", ""), where), root, files, arch)


def _policy(table: dict[str, Any], where: str) -> PolicySpec:
    unknown = set(table) - {"name", "options"}
    if unknown or "name" not in table:
        raise EmuError(f"{where}: a policy has a name and options")
    return PolicySpec(str(table["name"]), _options(table.get("options", ""), where))


def _sweep(table: dict[str, Any], index: int, programs: set[str], policies: set[str],
           where: str) -> SweepSpec:
    kind = table.get("kind")
    if kind not in KIND_BY_NAME:
        raise EmuError(f"{where}: kind is one of {', '.join(KIND_BY_NAME)}")
    chosen = tuple(table.get("programs", sorted(programs)))
    chosen_policies = tuple(table.get("policies", sorted(policies)))
    for name in chosen:
        if name not in programs:
            raise EmuError(f"{where}: no program named {name!r}")
    for name in chosen_policies:
        if name not in policies:
            raise EmuError(f"{where}: no policy named {name!r}")
    samples = table.get("samples")
    if samples is not None and (not isinstance(samples, int) or samples < 1):
        raise EmuError(f"{where}: samples is a positive number")
    keys = {k: v for k, v in table.items() if k not in SWEEP_META}
    return SweepSpec(index, str(table.get("name", f"sweep {index}")), kind, keys, chosen,
                     chosen_policies, samples)


# ---- expansion ----

@dataclass(frozen=True)
class GoldenFacts:
    """What a sweep's values may refer to: the golden run's cycles and its count of the
    sweep's trigger occurrences, and the program's symbols."""

    cycles: int
    occurrences: int
    arch: str
    instructions_of: Callable[[str], list[str]]     # symbol -> its instructions, SYMBOL+OFF


def expand(sweep: SweepSpec, facts: GoldenFacts, seed: int, label: str
           ) -> list[FaultSpec]:
    """The faults of `sweep` for one program and policy (`label` makes the random draws of
    each its own): the product of its keys' values, or `samples` of it, in a stable
    order; EmuError naming the sweep if a value is wrong."""
    rng = random.Random(f"{seed}:{sweep.index}:{label}")
    where = f"sweep {sweep.name!r}"
    axes = []
    for key, spec in sweep.keys.items():
        values = _values(key, spec, facts, rng, f"{where}, {key}")
        if not values:
            return []
        axes.append([(key, v) for v in values])
    total = 1
    for axis in axes:
        total *= len(axis)
    if sweep.samples is not None and sweep.samples < total:
        combos = [_nth_product(axes, i) for i in sorted(rng.sample(range(total), sweep.samples))]
    else:
        combos = list(itertools.product(*axes))
    faults = []
    seen: set[str] = set()
    for combo in combos:
        spec = FaultSpec.from_mapping(sweep.kind, dict(combo), where=where)
        text = spec.text()
        if text not in seen:
            seen.add(text)
            faults.append(spec)
    return faults


def _nth_product(axes: list[list[tuple[str, Any]]], index: int) -> tuple[tuple[str, Any], ...]:
    """The `index`-th element of the product of `axes` (last axis fastest)."""
    out = []
    for axis in reversed(axes):
        index, i = divmod(index, len(axis))
        out.append(axis[i])
    return tuple(reversed(out))


def _bound(value: Any, key: str, facts: GoldenFacts, where: str) -> int:
    if value == "golden":
        if key == "cycle":
            return facts.cycles
        if key == "nth":
            return facts.occurrences
        raise EmuError(f"{where}: \"golden\" is for cycle and nth")
    if isinstance(value, bool) or not isinstance(value, int):
        raise EmuError(f"{where}: from and to are numbers (or \"golden\")")
    return value


def _values(key: str, spec: Any, facts: GoldenFacts, rng: random.Random,
            where: str) -> list[Any]:
    if isinstance(spec, dict) and set(spec) and set(spec) <= set(ARCH_KEYS):
        if facts.arch not in spec:
            raise EmuError(f"{where}: no value for {facts.arch}")
        return _values(key, spec[facts.arch], facts, rng, where)
    if isinstance(spec, list):
        return list(spec)
    if not isinstance(spec, dict):
        return [spec]
    if "symbol" in spec:
        if key != "pc" or spec.get("each", "instruction") != "instruction":
            raise EmuError(f"{where}: {{symbol, each = \"instruction\"}} is for pc")
        return list(facts.instructions_of(str(spec["symbol"])))
    unknown = set(spec) - {"from", "to", "step", "samples"}
    if unknown or "from" not in spec or "to" not in spec:
        raise EmuError(f"{where}: a range is {{from, to[, step]}} or {{samples, from, to}}")
    lo = _bound(spec["from"], key, facts, where)
    hi = _bound(spec["to"], key, facts, where)
    if hi < lo:
        return []
    if "samples" in spec:
        count = spec["samples"]
        if not isinstance(count, int) or count < 1:
            raise EmuError(f"{where}: samples is a positive number")
        span = hi - lo + 1
        return sorted(rng.sample(range(lo, hi + 1), count)) if count < span else \
            list(range(lo, hi + 1))
    step = spec.get("step", 1)
    if not isinstance(step, int) or step < 1:
        raise EmuError(f"{where}: step is a positive number")
    return list(range(lo, hi + 1, step))


def program_digest(path: str) -> str:
    """A digest of a program's bytes (part of every experiment's key)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_digest(root: str | None) -> str:
    """A digest of a guest root's names and bytes ("" for none)."""
    if root is None:
        return ""
    import hashlib

    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            h.update(os.path.relpath(path, root).encode() + b"\0")
            try:
                with open(path, "rb") as f:
                    h.update(f.read())
            except OSError:
                pass
    return h.hexdigest()
