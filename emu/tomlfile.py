"""Reading the TOML files users write (plans, campaigns), with one-line errors."""
from __future__ import annotations

import tomllib
from typing import Any

from emu.errors import EmuError


def read_toml(path: str, what: str) -> dict[str, Any]:
    """The TOML document at `path` (a `what`: "plan", "campaign"...); EmuError with one
    line if it cannot be read or parsed."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise EmuError(f"cannot read {what} {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise EmuError(f"{what} {path}: {exc}") from None
