"""Faults as users write them for one run: `--fault` shorthands and plan files."""
from __future__ import annotations

from dataclasses import dataclass, field

from emu.errors import EmuError
from emu.inject.spec import FaultSpec
from emu.tomlfile import read_toml


def parse_faults(texts: list[str]) -> tuple[FaultSpec, ...]:
    """Every `--fault` of the command line, parsed."""
    return tuple(FaultSpec.parse(text) for text in texts)


@dataclass(frozen=True)
class Plan:
    """A plan file (`emu run --inject PLAN.toml`): its faults, in order."""

    faults: tuple[FaultSpec, ...] = field(default_factory=tuple)

    @classmethod
    def load(cls, path: str) -> Plan:
        """Read a plan: `[[fault]]` tables, each with `kind` and the shorthand's keys."""
        doc = read_toml(path, "plan")
        unknown = set(doc) - {"fault"}
        if unknown:
            raise EmuError(f"plan {path}: unknown table(s) {', '.join(sorted(unknown))} "
                           "(a plan has [[fault]] tables)")
        tables = doc.get("fault", [])
        if not isinstance(tables, list) or not tables:
            raise EmuError(f"plan {path}: no [[fault]] table")
        faults = []
        for i, table in enumerate(tables, 1):
            items = dict(table)
            kind = items.pop("kind", None)
            if not isinstance(kind, str):
                raise EmuError(f"plan {path}: fault {i} has no kind = \"...\"")
            faults.append(FaultSpec.from_mapping(kind, items, where=f"plan {path}, fault {i}"))
        return cls(tuple(faults))
