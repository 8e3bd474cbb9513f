"""The kernel's messages for the user: Diagnostic events shown as `emu: ...` lines on stderr."""
from __future__ import annotations

import sys
from typing import IO

from emu.trace.events import Diagnostic


class DiagnosticPrinter:
    """An instrument that prints each Diagnostic event's message as one line."""

    kinds = (Diagnostic,)

    def __init__(self, stream: IO[str] | None = None) -> None:
        """Print to `stream` (default: sys.stderr at the time of each message)."""
        self._stream = stream

    def __call__(self, event: Diagnostic) -> None:
        """Write `emu: <message>`."""
        stream = self._stream or sys.stderr
        stream.write(f"emu: {event.message}\n")
        stream.flush()


class DiagnosticLog:
    """An instrument that keeps the messages (for programs that drive a Machine)."""

    kinds = (Diagnostic,)

    def __init__(self) -> None:
        """No messages yet."""
        self.messages: list[str] = []

    def __call__(self, event: Diagnostic) -> None:
        """Keep the message."""
        self.messages.append(event.message)
