"""The page cache: host files' pages in physical memory, shared by every mapping of them.

A file mapped (MAP_SHARED or MAP_PRIVATE) is reached through one `CachedFile`
per host file. Its pages are frames that the cache holds one reference to;
each page-table entry mapping one holds another. Pages written through shared
mappings are dirty until written back to the host file (msync, munmap, exit);
read()/write() on the file see and update the cached pages, so descriptors and
mappings agree.
"""
from __future__ import annotations

import os
import weakref

from emu.mm.frames import PAGE_SHIFT, PAGE_SIZE, FrameAllocator, PhysicalMemory


class CachedFile:
    """One host file's cached pages."""

    def __init__(self, host_fd: int, name: str, frames: FrameAllocator,
                 ram: PhysicalMemory) -> None:
        """Cache pages of the open file `host_fd` (the cache keeps its own descriptor)."""
        self.name = name
        self._fd = os.dup(host_fd)
        weakref.finalize(self, os.close, self._fd)
        self._frames = frames
        self._ram = ram
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


class PageCache:
    """Every cached file of the machine, found by the host file's identity."""

    def __init__(self, frames: FrameAllocator, ram: PhysicalMemory) -> None:
        """An empty cache."""
        self._frames = frames
        self._ram = ram
        self._files: dict[tuple[int, int], CachedFile] = {}
        self.msync_pages_written = 0
        self.pages_written_back = 0      # by munmap and process exit

    def file_for(self, host_fd: int, name: str) -> CachedFile:
        """The cached file for an open host descriptor (created on first use)."""
        st = os.fstat(host_fd)
        key = (st.st_dev, st.st_ino)
        cached = self._files.get(key)
        if cached is None:
            cached = self._files[key] = CachedFile(host_fd, name, self._frames, self._ram)
        return cached

    def lookup(self, host_fd: int) -> CachedFile | None:
        """The cached file of a descriptor, if that file has ever been mapped."""
        st = os.fstat(host_fd)
        return self._files.get((st.st_dev, st.st_ino))
