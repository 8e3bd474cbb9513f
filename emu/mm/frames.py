"""Physical RAM and the frame allocator.

Physical memory is one host buffer that Unicorn maps at physical address 0;
the kernel reads and writes it directly (zero-fill, copies, file I/O) without
going through the guest's MMU. Frames are reference-counted so that pages can
be shared (copy-on-write, page cache).

Invariants: a frame is either on the free list with refcount 0, or off it with
refcount >= 1; `in_use` equals the number of frames off the free list; frames
reserved for committed memory never exceed the free frames.

Once a fault injector has corrupted memory the kernel keeps its bookkeeping in (a page-
table entry, or physical memory that may hold one), the kernel is *tainted*, as Linux
says: releasing a free frame or giving back more commitment than there is no longer
asserts, it is counted as a bad page state (Linux's "BUG: Bad page state") and ignored.
"""
from __future__ import annotations

import ctypes
import mmap
from array import array
from typing import Callable

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1)
ZERO_PAGE = bytes(PAGE_SIZE)


class OutOfFrames(Exception):
    """No free physical frame is left."""


class PhysicalMemory:
    """A contiguous block of host memory standing in for the machine's RAM."""

    def __init__(self, size: int) -> None:
        """Allocate `size` bytes of zeroed RAM (a whole number of pages)."""
        if size <= 0 or size % PAGE_SIZE:
            raise ValueError(f"RAM size must be a positive multiple of {PAGE_SIZE} bytes")
        self.size = size
        # private: a forked emulator (a campaign's fast-forward) gets its own copy of RAM
        self._buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
        self.view = memoryview(self._buffer)
        self.host_address = ctypes.addressof(ctypes.c_char.from_buffer(self._buffer))

    def read(self, paddr: int, length: int) -> bytes:
        """Bytes of physical memory at [paddr, paddr+length)."""
        return bytes(self.view[paddr:paddr + length])

    def write(self, paddr: int, data: bytes | memoryview) -> None:
        """Store `data` at physical address `paddr`."""
        self.view[paddr:paddr + len(data)] = data

    def zero_frame(self, frame: int) -> None:
        """Fill one frame with zeros."""
        start = frame << PAGE_SHIFT
        self.view[start:start + PAGE_SIZE] = ZERO_PAGE

    def copy_frame(self, dst: int, src: int) -> None:
        """Copy the contents of frame `src` into frame `dst`."""
        d, s = dst << PAGE_SHIFT, src << PAGE_SHIFT
        self.view[d:d + PAGE_SIZE] = self.view[s:s + PAGE_SIZE]


class FrameAllocator:
    """Hands out reference-counted physical frames of a PhysicalMemory."""

    def __init__(self, total_frames: int) -> None:
        """Manage frames 0..total_frames-1, all free."""
        self.total = total_frames
        self._refcount = array("I", bytes(4 * total_frames))
        # one byte per frame, 1 = free; the lowest free frame is handed out first
        self._free_map = bytearray(b"\x01" * total_frames)
        self._free_count = total_frames
        self._hint = 0              # no free frame below this one
        self.peak = 0
        self.reserved = 0           # free frames promised to committed mappings
        # frames ever mapped executable since they were last allocated: the CPU may hold
        # translated code of them, which must go before their contents change
        self._code = bytearray(total_frames)
        self.on_code_freed: Callable[[int], None] | None = None
        # a fault injector's say on demands that may fail: (purpose, vaddr, pages) -> refuse
        self.refuse: Callable[[str, int, int], bool] | None = None
        self.tainted = False        # a fault injector corrupted what the kernel keeps
        self.bad_page_states = 0    # inconsistencies met since (tainted only)

    def bad_state(self, what: str) -> None:
        """An inconsistency of the bookkeeping: a bug (AssertionError) unless tainted."""
        if not self.tainted:
            raise AssertionError(what)
        self.bad_page_states += 1

    @property
    def in_use(self) -> int:
        """Number of frames currently allocated."""
        return self.total - self._free_count

    @property
    def free_count(self) -> int:
        """Number of free frames."""
        return self._free_count

    @property
    def unreserved(self) -> int:
        """Free frames not promised to anyone."""
        return self._free_count - self.reserved

    def check_demand(self, purpose: str, vaddr: int, pages: int = 1) -> None:
        """A demand for memory that may fail — a commitment (`purpose` "commit") or an
        unpromised frame ("lazy_alloc", "cow", "page_in") for the page at `vaddr` — is about
        to be made: OutOfFrames if a fault injector refuses it (`refuse`)."""
        if self.refuse is not None and self.refuse(purpose, vaddr, pages):
            raise OutOfFrames()

    def reserve(self, count: int) -> None:
        """Promise `count` free frames to committed memory; OutOfFrames if they are not there."""
        if count > self.unreserved:
            raise OutOfFrames()
        self.reserved += count

    def unreserve(self, count: int) -> None:
        """Give back `count` promised frames that will not be used."""
        if not 0 <= count <= self.reserved:
            self.bad_state(f"unreserving {count} of {self.reserved}")
            count = max(0, min(count, self.reserved))
        self.reserved -= count

    def allocate(self, reserved: bool = False) -> int:
        """Take a free frame with refcount 1: one promised earlier (`reserved`) or an unpromised
        one; raise OutOfFrames when there is none."""
        if reserved and self.reserved > 0:
            self.reserved -= 1
        elif self.unreserved <= 0:
            # (a committed page whose commitment is gone takes a free frame: only a page
            # table corrupted by a fault injector loses track of a committed page)
            raise OutOfFrames()
        frame = self._free_map.find(1, self._hint)
        assert frame >= 0, "free count and free map disagree"
        self._take(frame)
        self._hint = frame + 1
        return frame

    def allocate_block(self, count: int) -> int:
        """Take `count` contiguous free frames aligned to `count` (a power of two), each with
        refcount 1, from unpromised memory; returns the first, or raises OutOfFrames."""
        if count > self.unreserved:
            raise OutOfFrames()
        ones = b"\x01" * count
        for base in range(self._hint - self._hint % count, self.total - count + 1, count):
            if self._free_map[base:base + count] == ones:
                for frame in range(base, base + count):
                    self._take(frame)
                return base
        raise OutOfFrames()

    def _take(self, frame: int) -> None:
        assert self._free_map[frame] and self._refcount[frame] == 0, f"frame {frame} is not free"
        self._free_map[frame] = 0
        self._free_count -= 1
        self._refcount[frame] = 1
        self.peak = max(self.peak, self.total - self._free_count)

    def share(self, frame: int) -> int:
        """Add a reference to an allocated frame; returns the frame."""
        if self._refcount[frame] == 0:
            self.bad_state(f"sharing free frame {frame}")
            return frame
        self._refcount[frame] += 1
        return frame

    def mark_code(self, frame: int) -> None:
        """`frame` is being mapped executable: the CPU may translate code from it."""
        self._code[frame] = 1

    def is_code(self, frame: int) -> bool:
        """Whether `frame` may hold translated code (it was mapped executable)."""
        return bool(self._code[frame])

    def release(self, frame: int) -> bool:
        """Drop one reference; returns True when the frame became free (its translated
        code, if any, is dropped first through `on_code_freed`)."""
        count = self._refcount[frame]
        if count == 0:
            self.bad_state(f"releasing free frame {frame}")
            return False
        self._refcount[frame] = count - 1
        if count == 1:
            if self._code[frame]:
                self._code[frame] = 0
                if self.on_code_freed is not None:
                    self.on_code_freed(frame)
            self._free_map[frame] = 1
            self._free_count += 1
            self._hint = min(self._hint, frame)
            return True
        return False

    def refcount(self, frame: int) -> int:
        """Current number of references to `frame`."""
        return self._refcount[frame]
