"""Memory objects: what a mapping's pages contain before anyone wrote them.

A mapping refers to a backing object at an offset; the pager asks the object
to fill a fresh frame with the page at a given object offset.
"""
from __future__ import annotations

import os
import weakref
from dataclasses import dataclass

from emu.mm.frames import PAGE_SIZE
from emu.mm.pagecache import CachedFile


@dataclass(frozen=True)
class FileChunk:
    """`length` bytes of the file at `file_offset` appear at `object_offset` of the object."""

    object_offset: int
    file_offset: int
    length: int


class AnonymousMemory:
    """Pages that start out as zeros."""

    is_file = False
    cached = False
    name = "[anon]"

    def fill(self, object_offset: int, frame_view: memoryview) -> None:
        """Nothing to copy: the pager hands out zeroed frames for anonymous memory."""


class FileImage:
    """Pages copied from a host file (a program image, or a private file mapping).

    The object keeps its own descriptor of the file, so it stays readable after
    the guest closes or unlinks it.
    """

    is_file = True
    cached = False

    def __init__(self, host_fd: int, name: str, chunks: list[FileChunk]) -> None:
        """An image of `chunks` of the already-open `host_fd` (duplicated); bytes elsewhere are zero."""
        self.name = name
        self.chunks = sorted(chunks, key=lambda c: c.object_offset)
        self._fd = os.dup(host_fd)
        weakref.finalize(self, os.close, self._fd)

    def fill(self, object_offset: int, frame_view: memoryview) -> None:
        """Copy the file bytes that fall in the page at `object_offset` into a zeroed frame."""
        page_end = object_offset + PAGE_SIZE
        for chunk in self.chunks:
            lo = max(object_offset, chunk.object_offset)
            hi = min(page_end, chunk.object_offset + chunk.length)
            if lo >= hi:
                continue
            data = os.pread(self._fd, hi - lo, chunk.file_offset + (lo - chunk.object_offset))
            frame_view[lo - object_offset:lo - object_offset + len(data)] = data


class CachedFileObject:
    """A file mapped through the page cache (mmap of a guest file, shared or private).

    Its pages are the cache's frames: shared mappings write into them; private
    mappings copy one on first write (copy-on-write). With `nosync`
    (MAP_NOSYNCFILE) changes never reach the file.
    """

    is_file = True
    cached = True

    def __init__(self, file: CachedFile, nosync: bool = False) -> None:
        """Map `file` from the page cache."""
        self.file = file
        self.nosync = nosync
        self.name = file.name

    def fill(self, object_offset: int, frame_view: memoryview) -> None:
        """Never called: cached pages are mapped, not copied."""
        raise AssertionError("cached file pages are shared, not filled")


MemoryObject = AnonymousMemory | FileImage | CachedFileObject
