"""The simulated block device behind the backing store, and the completions it gives.

A request is queued at `submit` and completes at a simulated time with a status: ok,
or an errno (EIO) that reaches the guest where Linux or QNX would report it — SIGBUS
on a page-in, EIO from msync, fsync or read. The device is a collaborator the machine
hands in: anything with `submit` (for instance a fault injector's device that fails the
Nth read) can stand in for it.
"""
from __future__ import annotations

import errno
import itertools
from dataclasses import dataclass
from typing import Callable, Protocol


@dataclass(frozen=True, slots=True)
class DeviceRequest:
    """One transfer: `pages` pages read or written for `reason`, of the guest `file` if known."""

    request_id: int
    write: bool
    pages: int
    reason: str                 # "page_in", "msync", "write_back", "populate"
    file: str = ""


@dataclass(frozen=True, slots=True)
class Completion:
    """When a request finished (`done_at`, cycles) and how: ok, or an errno."""

    request: DeviceRequest
    done_at: int
    errno: int = 0

    @property
    def ok(self) -> bool:
        """Whether the transfer succeeded."""
        return self.errno == 0


class Device(Protocol):
    """What the kernel needs of a backing-store device."""

    def submit(self, now: int, pages: int, write: bool, reason: str,
               file: str = "", extra: int = 0) -> Completion:
        """Queue a transfer at `now` (taking `extra` cycles more than its pages do); its
        completion (time and status)."""


FailurePolicy = Callable[[DeviceRequest], int]
"""A request -> the errno it fails with (0: it succeeds)."""


class BlockDevice:
    """A FIFO device: a request starts when the previous one finished and takes latency ×
    pages; with a failure policy, chosen requests complete with an error."""

    def __init__(self, read_page_cycles: int, write_page_cycles: int,
                 fails: FailurePolicy | None = None) -> None:
        """A device with these latencies per 4 KiB page; `fails` picks the failing requests."""
        self.read_page_cycles = read_page_cycles
        self.write_page_cycles = write_page_cycles
        self.fails = fails
        self.busy_until = 0
        self.pages_read = 0
        self.pages_written = 0
        self.busy_cycles = 0
        self._ids = itertools.count(1)

    def submit(self, now: int, pages: int, write: bool, reason: str,
               file: str = "", extra: int = 0) -> Completion:
        """Queue a transfer of `pages` pages at time `now`, `extra` cycles longer than its
        pages take (a latency spike); its completion."""
        request = DeviceRequest(next(self._ids), write, pages, reason, file)
        start = max(now, self.busy_until)
        duration = pages * (self.write_page_cycles if write else self.read_page_cycles) + extra
        self.busy_until = start + duration
        self.busy_cycles += duration
        if write:
            self.pages_written += pages
        else:
            self.pages_read += pages
        failure = self.fails(request) if self.fails is not None else 0
        return Completion(request, self.busy_until, failure)


def fail_nth(n: int, write: bool | None = None, error: int = errno.EIO) -> FailurePolicy:
    """A failure policy: the `n`th request (of that direction, if `write` is given) fails."""
    seen = itertools.count(1)

    def policy(request: DeviceRequest) -> int:
        if write is not None and request.write != write:
            return 0
        return error if next(seen) == n else 0
    return policy
