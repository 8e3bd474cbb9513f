"""Pipes and FIFOs: kernel objects with Linux's semantics, whose waiters block their thread.

On QNX a pipe is served by a resource manager (`pipe`), so a reader or writer
that must wait is blocked in REPLY on it; emu's readers and writers wait in REPLY
too, on the pipe's wait queues (waitq.py), and the other threads run.

- capacity 64 KiB by default, F_SETPIPE_SZ between one page and pipe-max-size
  (1 MiB), rounded up to a power of two pages;
- a write of at most PIPE_BUF bytes is atomic: it waits for room for all of it;
  a longer one goes in pieces, and a blocking one returns when all is written;
- a read returns what is there (up to the count), waits while the pipe is empty
  and a writer remains, and gives 0 (end of file) once the last writer is gone;
- a write with no reader left gives EPIPE (and SIGPIPE, raised by the caller).

Invariant: 0 <= len(data) <= capacity; readers and writers count the open file
descriptions of each end.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from emu.kernel.waitq import WaitQueue

PIPE_BUF = 4096
PAGE = 4096
DEFAULT_CAPACITY = 16 * PAGE
MAX_PIPE_SIZE = 1 << 20         # /proc/sys/fs/pipe-max-size

Waker = Callable[[WaitQueue], None]


class BrokenPipe(Exception):
    """A write found no reader (EPIPE and SIGPIPE)."""


def pipe_size_for(request: int) -> int:
    """The capacity F_SETPIPE_SZ gives for a requested size: a power of two pages."""
    pages = max(1, -(-request // PAGE))
    return PAGE * (1 << (pages - 1).bit_length())


@dataclass(eq=False)
class Pipe:
    """One pipe's buffer, its ends' counts and its wait queues."""

    wake: Waker
    capacity: int = DEFAULT_CAPACITY
    data: bytearray = field(default_factory=bytearray)
    readers: int = 0
    writers: int = 0
    readable: WaitQueue = field(default_factory=WaitQueue)   # waiting for data or EOF
    writable: WaitQueue = field(default_factory=WaitQueue)   # waiting for room or EPIPE
    opens: WaitQueue = field(default_factory=WaitQueue)      # FIFO opens waiting for a peer
    reader_opens: int = 0           # how many times a read end was opened (FIFO opens)
    writer_opens: int = 0

    @property
    def room(self) -> int:
        """Bytes that fit now."""
        return self.capacity - len(self.data)

    def read(self, count: int) -> bytes | None:
        """Up to `count` bytes; b"" at end of file; None if the caller must wait."""
        if not self.data:
            return b"" if self.writers == 0 or count == 0 else None
        out = bytes(self.data[:count])
        del self.data[:count]
        self.wake(self.writable)
        return out

    def write(self, data: bytes) -> int | None:
        """Put what fits of `data` (all or nothing up to PIPE_BUF); the count, or None if the
        caller must wait; BrokenPipe without readers."""
        if self.readers == 0:
            raise BrokenPipe()
        if not data:
            return 0
        if len(data) <= PIPE_BUF and self.room < len(data):
            return None
        take = min(self.room, len(data))
        if take == 0:
            return None
        self.data += data[:take]
        self.wake(self.readable)
        return take

    def resize(self, capacity: int) -> bool:
        """Set the capacity (False if the data would not fit)."""
        if capacity < len(self.data):
            return False
        self.capacity = capacity
        self.wake(self.writable)
        return True

    def readable_now(self) -> bool:
        """Whether a read would not wait (data, or no writer left)."""
        return bool(self.data) or self.writers == 0

    def writable_now(self) -> bool:
        """Whether a write of PIPE_BUF bytes would not wait (room, or no reader left)."""
        return self.room >= min(PIPE_BUF, self.capacity) or self.readers == 0

    def open_end(self, write: bool) -> None:
        """Count a new open file description of one end."""
        if write:
            self.writers += 1
            self.writer_opens += 1
        else:
            self.readers += 1
            self.reader_opens += 1
        self.wake(self.opens)

    def close_end(self, write: bool) -> None:
        """The last descriptor of one end's description closed: wake the other side."""
        if write:
            assert self.writers > 0
            self.writers -= 1
            if self.writers == 0:
                self.wake(self.readable)
        else:
            assert self.readers > 0
            self.readers -= 1
            if self.readers == 0:
                self.wake(self.writable)


@dataclass(eq=False)
class PipeEnd:
    """What an open file description of a pipe or FIFO holds: the pipe and which end (a
    FIFO opened O_RDWR holds both). A socketpair end reads one pipe and writes another
    (`peer`)."""

    pipe: Pipe
    reads: bool
    writes: bool
    peer: Pipe | None = None

    @property
    def rpipe(self) -> Pipe:
        """The pipe it reads."""
        return self.pipe

    @property
    def wpipe(self) -> Pipe:
        """The pipe it writes."""
        return self.peer if self.peer is not None else self.pipe

    def release(self) -> None:
        """The description's last descriptor closed."""
        if self.reads:
            self.rpipe.close_end(write=False)
        if self.writes:
            self.wpipe.close_end(write=True)

    def shutdown(self, read: bool, write: bool) -> None:
        """shutdown(2) of a socketpair end: stop reading and/or writing."""
        if read and self.reads:
            self.reads = False
            self.rpipe.close_end(write=False)
        if write and self.writes:
            self.writes = False
            self.wpipe.close_end(write=True)


class FifoTable:
    """The pipe behind each named FIFO of the guest root, while any end is open."""

    def __init__(self) -> None:
        """No FIFO open."""
        self._pipes: dict[tuple[int, int], Pipe] = {}

    def pipe_of(self, key: tuple[int, int], wake: Waker) -> Pipe:
        """The pipe of the FIFO with host (st_dev, st_ino) `key`, made if none is open."""
        pipe = self._pipes.get(key)
        if pipe is None or (pipe.readers == 0 and pipe.writers == 0 and not pipe.opens):
            pipe = self._pipes[key] = Pipe(wake)
        return pipe
