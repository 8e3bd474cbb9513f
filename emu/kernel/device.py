"""The simulated block device behind the backing store: one request at a time, fixed latency per page."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BlockDevice:
    """A FIFO device: a request starts when the previous one finished and takes latency × pages."""

    read_page_cycles: int
    write_page_cycles: int
    busy_until: int = 0
    pages_read: int = 0
    pages_written: int = 0
    busy_cycles: int = 0

    def submit(self, now: int, pages: int, write: bool) -> int:
        """Queue a transfer of `pages` pages at time `now`; returns when it completes."""
        start = max(now, self.busy_until)
        duration = pages * (self.write_page_cycles if write else self.read_page_cycles)
        self.busy_until = start + duration
        self.busy_cycles += duration
        if write:
            self.pages_written += pages
        else:
            self.pages_read += pages
        return self.busy_until
