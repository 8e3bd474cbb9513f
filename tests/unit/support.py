"""Helpers shared by the unit tests: a small machine's memory (no Unicorn engine), firmware paths."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from emu.mm.fault import Access, Resolved
from emu.mm.frames import FrameAllocator, PhysicalMemory, PAGE_SIZE
from emu.mm.objects import AnonymousMemory
from emu.mm.pagecache import PageCache
from emu.mm.pager import Pager
from emu.mm.pagetable import PageTableFormat, TableFrames
from emu.mm.vmspace import AddressSpace, Mapping, Share

REPO = Path(__file__).resolve().parents[2]
FIRMWARE_BUILD = REPO / "firmware" / "build"

RAM_FRAMES = 64


@dataclass
class Memory:
    """RAM, frames, one address space and a pager, plus a log of the translation ranges the
    space asked to invalidate."""

    ram: PhysicalMemory
    frames: FrameAllocator
    space: AddressSpace
    pager: Pager
    tlb_changes: list[tuple[int, int]] = field(default_factory=list)

    def fault_in(self, vaddr: int, access: Access) -> bool:
        """What the kernel does for a copy-in/out fault: resolve, then let the pager work."""
        step = self.pager.serve(self.space, vaddr, access, after_read=True)
        return isinstance(step, Resolved)

    def map_anon(self, start: int, pages: int, prot: int, name: str = "[anon]",
                 lazy: bool = False) -> Mapping:
        """Insert an anonymous private mapping of `pages` pages at `start` (committed unless lazy)."""
        mapping = Mapping(start, start + pages * PAGE_SIZE, prot, Share.PRIVATE,
                          AnonymousMemory(), 0, name, lazy=lazy)
        self.space.insert(mapping)
        return mapping

    def populate(self, start: int, end: int) -> None:
        """Make every page of [start, end) present, as first-touch writes would (reads where
        the mapping is not writable)."""
        for vaddr in range(start, end, PAGE_SIZE):
            mapping = self.space.find(vaddr)
            assert mapping is not None
            access = Access.WRITE if mapping.prot & 2 else Access.READ
            assert self.fault_in(vaddr, access)


def table_frames(fmt: PageTableFormat = PageTableFormat.X86_64, frames: int = 4096) -> TableFrames:
    """Page-table frames in a RAM of their own, so that a test's frame counts are its pages'."""
    return TableFrames(PhysicalMemory(frames * PAGE_SIZE), FrameAllocator(frames), fmt)


def make_memory(frames: int = RAM_FRAMES) -> Memory:
    """A fresh Memory with `frames` frames of RAM (page tables apart: `table_frames`)."""
    ram = PhysicalMemory(frames * PAGE_SIZE)
    allocator = FrameAllocator(frames)
    changes: list[tuple[int, int]] = []
    space = AddressSpace(allocator, table_frames(),
                         lambda space, start, end: changes.append((start, end)))
    return Memory(ram, allocator, space, Pager(ram, allocator, PageCache(allocator, ram)), changes)


def firmware_binary(arch: str, name: str = "hello") -> Path:
    """Path of a built firmware program; skips the test when firmware/build is missing."""
    path = FIRMWARE_BUILD / arch / name
    if not path.is_file():
        pytest.skip(f"{path} not built (run `make -C firmware -j2`)")
    return path


def dispatch_order(sched) -> list:  # type: ignore[no-untyped-def]
    """Dispatch until nothing is ready, parking each thread (NANOSLEEP) after its turn:
    the order in which threads get the CPU, each once."""
    from emu.kernel.process import ThreadState

    order = []
    while (t := sched.dispatch()) is not None:
        order.append(t)
        sched.block(t, ThreadState.NANOSLEEP)
    return order
