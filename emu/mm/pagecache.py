"""The page cache: host files' pages in physical memory, shared by every mapping of them.

A file mapped (MAP_SHARED or MAP_PRIVATE) is reached through one `CachedFile`
per host file. Its pages are frames that the cache holds one reference to;
each page-table entry mapping one holds another. Pages written through shared
mappings are dirty until written back to the host file (msync, munmap, exit).
Reads and writes of a file through descriptors go through `PageCache.read` and
`PageCache.write`, which see and update the cached pages, so descriptors and
mappings agree.
"""
from __future__ import annotations

import fcntl
import os
import stat
import weakref
from typing import Callable

from emu.mm.frames import PAGE_SHIFT, PAGE_SIZE, FrameAllocator, PhysicalMemory

CodeInvalidate = Callable[[int], None]
"""frame -> None: drop the CPU's translated code of a frame whose contents change."""


class CachedFile:
    """One host file's cached pages."""

    def __init__(self, host_fd: int, name: str, frames: FrameAllocator,
                 ram: PhysicalMemory, invalidate_code: CodeInvalidate | None = None) -> None:
        """Cache pages of the open file `host_fd` (the cache keeps its own descriptor)."""
        self.name = name
        self._fd = os.dup(host_fd)
        weakref.finalize(self, os.close, self._fd)
        self._frames = frames
        self._ram = ram
        self._invalidate_code = invalidate_code
        self.pages: dict[int, int] = {}     # file page index -> frame
        self.dirty: set[int] = set()

    @property
    def size(self) -> int:
        """The host file's current size in bytes."""
        return os.fstat(self._fd).st_size

    def is_cached(self, index: int) -> bool:
        """Whether file page `index` is in memory."""
        return index in self.pages

    def frame(self, index: int) -> int:
        """The frame holding file page `index`, read from the host file first if needed
        (OutOfFrames when RAM is full)."""
        frame = self.pages.get(index)
        if frame is None:
            frame = self._frames.allocate()
            self._ram.zero_frame(frame)
            data = os.pread(self._fd, PAGE_SIZE, index << PAGE_SHIFT)
            self._ram.write(frame << PAGE_SHIFT, data)
            self.pages[index] = frame
        return frame

    def peek_page(self, index: int) -> bytes:
        """The bytes of file page `index` as a mapping would see them, without caching it."""
        frame = self.pages.get(index)
        if frame is not None:
            return self._ram.read(frame << PAGE_SHIFT, PAGE_SIZE)
        return os.pread(self._fd, PAGE_SIZE, index << PAGE_SHIFT).ljust(PAGE_SIZE, b"\0")

    def write_back(self, index: int) -> bool:
        """Write dirty page `index` to the host file (never past its end); True if it was dirty."""
        if index not in self.dirty:
            return False
        self.dirty.discard(index)
        offset = index << PAGE_SHIFT
        length = max(0, min(PAGE_SIZE, self.size - offset))
        if length:
            os.pwrite(self._fd, self._ram.read(self.pages[index] << PAGE_SHIFT, length), offset)
        return True

    def sync(self) -> None:
        """fsync the host file."""
        os.fsync(self._fd)

    def drop(self, index: int) -> bool:
        """Forget clean page `index` if no mapping uses it any more (MS_INVALIDATE)."""
        frame = self.pages.get(index)
        if frame is None or index in self.dirty or self._frames.refcount(frame) != 1:
            return False
        del self.pages[index]
        self._frames.release(frame)
        return True

    def overlay(self, offset: int, data: bytes) -> bytes:
        """`data` read from the host file at `offset`, with dirty cached pages' bytes in place."""
        if not self.dirty or not data:
            return data
        out = bytearray(data)
        end = offset + len(data)
        for index in self.dirty:
            lo, hi = max(offset, index << PAGE_SHIFT), min(end, (index + 1) << PAGE_SHIFT)
            if lo < hi:
                out[lo - offset:hi - offset] = self._ram.read(
                    (self.pages[index] << PAGE_SHIFT) + (lo - (index << PAGE_SHIFT)), hi - lo)
        return bytes(out)

    def update(self, offset: int, data: bytes) -> None:
        """`data` was written to the host file at `offset`: copy it into cached pages too."""
        end = offset + len(data)
        for index in range(offset >> PAGE_SHIFT, (end + PAGE_SIZE - 1) >> PAGE_SHIFT):
            frame = self.pages.get(index)
            if frame is None:
                continue
            lo, hi = max(offset, index << PAGE_SHIFT), min(end, (index + 1) << PAGE_SHIFT)
            self._ram.write((frame << PAGE_SHIFT) + (lo - (index << PAGE_SHIFT)),
                            data[lo - offset:hi - offset])
            if self._invalidate_code is not None and self._frames.is_code(frame):
                self._invalidate_code(frame)


class PageCache:
    """Every cached file of the machine, found by the host file's identity."""

    def __init__(self, frames: FrameAllocator, ram: PhysicalMemory,
                 invalidate_code: CodeInvalidate | None = None) -> None:
        """An empty cache."""
        self._frames = frames
        self._ram = ram
        self._invalidate_code = invalidate_code
        self._files: dict[tuple[int, int], CachedFile] = {}

    def file_for(self, host_fd: int, name: str) -> CachedFile:
        """The cached file for an open host descriptor (created on first use)."""
        st = os.fstat(host_fd)
        key = (st.st_dev, st.st_ino)
        cached = self._files.get(key)
        if cached is None:
            cached = self._files[key] = CachedFile(host_fd, name, self._frames, self._ram,
                                                   self._invalidate_code)
        return cached

    def anonymous(self, size: int, name: str) -> CachedFile:
        """Cached pages of an unnamed file of `size` bytes (MAP_SHARED|MAP_ANONYMOUS and
        shared /dev/zero: memory shared by every mapping and across fork, whose pages are
        never written anywhere). It is not in the cache's index; `release` frees it."""
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            return CachedFile(fd, name, self._frames, self._ram, self._invalidate_code)
        finally:
            os.close(fd)

    def release(self, cached: CachedFile) -> None:
        """Free the frames of a file no mapping uses any more (see `anonymous`)."""
        for frame in cached.pages.values():
            self._frames.release(frame)
        cached.pages.clear()
        cached.dirty.clear()

    def lookup(self, host_fd: int) -> CachedFile | None:
        """The cached file of a descriptor, if that file has ever been mapped."""
        st = os.fstat(host_fd)
        return self._files.get((st.st_dev, st.st_ino))

    def read(self, host_fd: int, count: int, offset: int | None) -> bytes:
        """Read from a host descriptor (at `offset`, or its position), seeing the writes of
        mappings that the file has not had yet."""
        if offset is None:
            cached = self.lookup(host_fd) if _is_regular(host_fd) else None
            position = os.lseek(host_fd, 0, os.SEEK_CUR) if cached else 0
            data = os.read(host_fd, count)
        else:
            cached = self.lookup(host_fd)
            position = offset
            data = os.pread(host_fd, count, offset)
        return cached.overlay(position, data) if cached else data

    def write(self, host_fd: int, data: bytes, offset: int | None) -> int:
        """Write to a host descriptor (at `offset`, or its position), updating the cached pages
        that mappings see; returns the bytes written."""
        if offset is None:
            cached = self.lookup(host_fd) if _is_regular(host_fd) else None
            position = 0
            if cached:
                appending = fcntl.fcntl(host_fd, fcntl.F_GETFL) & os.O_APPEND
                position = (os.fstat(host_fd).st_size if appending
                            else os.lseek(host_fd, 0, os.SEEK_CUR))
            written = os.write(host_fd, data)
        else:
            cached = self.lookup(host_fd)
            position = offset
            written = os.pwrite(host_fd, data, offset)
        if cached:
            cached.update(position, data[:written])
        return written


def _is_regular(host_fd: int) -> bool:
    return stat.S_ISREG(os.fstat(host_fd).st_mode)
