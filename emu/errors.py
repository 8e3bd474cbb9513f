"""Errors the emulator reports to its user (one line, exit status 125)."""
from __future__ import annotations


class EmuError(Exception):
    """A problem with the user's input or environment, reported as one line on stderr."""
