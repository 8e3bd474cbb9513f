"""`emu profiles`: the bundled machine profiles as text (the listing and one profile's keys)."""
from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any

from emu.profile import PAGE_SIZES, Profile, bundled_profiles, load_profile

_SIZE_NAMES = {v: k for k, v in PAGE_SIZES.items()}


def _entries(level: Any) -> int:
    return sum(array.entries for array in level.arrays)


def list_profiles() -> str:
    """One aligned line per bundled profile: name, arch, clock, TLB sizes, summary."""
    rows = [("NAME", "ARCH", "CLOCK", "L1D", "L2 TLB", "SUMMARY")]
    for p in bundled_profiles():
        rows.append((p.name, p.arch, f"{p.frequency_hz / 1e9:.2f} GHz", str(_entries(p.tlb.l1d)),
                     str(_entries(p.tlb.l2)), p.summary))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "".join("  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths)) + "  " + row[5]
                   + "\n" for row in rows)


def _flatten(value: Any, prefix: str) -> list[tuple[str, str]]:
    if is_dataclass(value):
        out = []
        for f in fields(value):
            out += _flatten(getattr(value, f.name), f"{prefix}.{f.name}" if prefix else f.name)
        return out
    if isinstance(value, tuple) and value and is_dataclass(value[0]):
        return [item for i, v in enumerate(value) for item in _flatten(v, f"{prefix}[{i}]")]
    if prefix.endswith("page_sizes"):
        return [(prefix, ", ".join(_SIZE_NAMES.get(v, str(v)) for v in value))]
    return [(prefix, str(value))]


_KEY_OF = {"frequency_hz": "machine.frequency_hz", "time_slice_ns": "machine.time_slice_ns",
           "default_priority": "machine.default_priority",
           "read_page_ns": "backing_store.read_page_ns",
           "write_page_ns": "backing_store.write_page_ns"}


def show_profile(spec: str) -> str:
    """Every key of one profile (bundled name or file) with its source beside it."""
    profile: Profile = load_profile(spec)
    lines = [f"# {profile.name} ({profile.arch}): {profile.summary}"]
    for key, value in _flatten(profile, ""):
        if key in ("name", "arch", "summary") or key.startswith("sources"):
            continue
        dotted = _KEY_OF.get(key, key.split("[")[0])
        lines.append(f"{key} = {value}    # {profile.source(dotted) or 'no source'}")
    return "\n".join(lines) + "\n"
