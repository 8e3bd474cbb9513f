"""FrameAllocator (reference-counted frames) and PhysicalMemory (the RAM buffer)."""
from __future__ import annotations

import pytest

from emu.mm.frames import PAGE_SIZE, FrameAllocator, OutOfFrames, PhysicalMemory

needs_asserts = pytest.mark.skipif(not __debug__, reason="allocator checks are assertions (python -O)")


# ---- FrameAllocator ----

def test_new_allocator_has_every_frame_free():
    frames = FrameAllocator(8)
    assert (frames.total, frames.in_use, frames.free_count, frames.peak) == (8, 0, 8, 0)


def test_allocate_hands_out_lowest_frames_first_with_refcount_one():
    frames = FrameAllocator(8)
    got = [frames.allocate() for _ in range(3)]
    assert got == [0, 1, 2]
    assert [frames.refcount(f) for f in got] == [1, 1, 1]
    assert frames.in_use == 3 and frames.free_count == 5


def test_share_adds_a_reference_and_returns_the_frame():
    frames = FrameAllocator(4)
    f = frames.allocate()
    assert frames.share(f) == f
    assert frames.refcount(f) == 2
    assert frames.in_use == 1


def test_release_frees_only_with_the_last_reference():
    frames = FrameAllocator(4)
    f = frames.allocate()
    frames.share(f)
    frames.share(f)
    assert frames.release(f) is False
    assert frames.release(f) is False
    assert frames.in_use == 1 and frames.refcount(f) == 1
    assert frames.release(f) is True
    assert frames.in_use == 0 and frames.refcount(f) == 0


def test_lowest_free_frame_is_handed_out_first():
    frames = FrameAllocator(8)
    a, b, c = frames.allocate(), frames.allocate(), frames.allocate()
    assert (a, b, c) == (0, 1, 2)
    frames.release(b)
    assert frames.allocate() == b
    frames.release(c)
    frames.release(a)
    assert frames.allocate() == a       # the lowest free frame first
    assert frames.allocate() == c


def test_aligned_blocks_of_contiguous_frames():
    frames = FrameAllocator(64)
    frames.allocate()                   # frame 0 taken: the first aligned block of 16 is 16..31
    assert frames.allocate_block(16) == 16
    assert [frames.refcount(f) for f in (16, 31, 32)] == [1, 1, 0]
    assert frames.in_use == 17
    frames.reserve(frames.unreserved - 15)
    with pytest.raises(OutOfFrames):
        frames.allocate_block(16)       # only 15 unpromised frames left


def test_peak_records_the_high_water_mark():
    frames = FrameAllocator(8)
    got = [frames.allocate() for _ in range(5)]
    for f in got[:4]:
        frames.release(f)
    frames.allocate()
    assert frames.in_use == 2
    assert frames.peak == 5


def test_out_of_frames_when_exhausted():
    frames = FrameAllocator(2)
    frames.allocate()
    frames.allocate()
    with pytest.raises(OutOfFrames):
        frames.allocate()
    assert frames.in_use == 2


def test_allocation_succeeds_again_after_a_release():
    frames = FrameAllocator(1)
    f = frames.allocate()
    frames.release(f)
    assert frames.allocate() == f


@needs_asserts
def test_releasing_a_free_frame_is_an_assertion():
    frames = FrameAllocator(4)
    with pytest.raises(AssertionError, match="releasing free frame 3"):
        frames.release(3)


@needs_asserts
def test_releasing_twice_is_an_assertion():
    frames = FrameAllocator(4)
    f = frames.allocate()
    frames.release(f)
    with pytest.raises(AssertionError):
        frames.release(f)
    assert frames.free_count == 4       # the bad release did not add the frame twice


@needs_asserts
def test_sharing_a_free_frame_is_an_assertion():
    frames = FrameAllocator(4)
    with pytest.raises(AssertionError, match="sharing free frame"):
        frames.share(0)


# ---- PhysicalMemory ----

@pytest.mark.parametrize("size", [0, -PAGE_SIZE, PAGE_SIZE + 1, 100])
def test_ram_size_must_be_a_positive_number_of_pages(size):
    with pytest.raises(ValueError):
        PhysicalMemory(size)


def test_fresh_ram_is_zero():
    ram = PhysicalMemory(4 * PAGE_SIZE)
    assert ram.size == 4 * PAGE_SIZE
    assert ram.read(0, 4 * PAGE_SIZE) == bytes(4 * PAGE_SIZE)
    assert ram.host_address != 0


def test_write_then_read_across_a_frame_boundary():
    ram = PhysicalMemory(4 * PAGE_SIZE)
    data = bytes(range(256)) * 2
    ram.write(PAGE_SIZE - 100, data)
    assert ram.read(PAGE_SIZE - 100, len(data)) == data
    assert ram.read(PAGE_SIZE - 101, 1) == b"\0"
    assert ram.read(PAGE_SIZE - 100 + len(data), 1) == b"\0"


def test_write_accepts_a_memoryview():
    ram = PhysicalMemory(PAGE_SIZE)
    ram.write(8, memoryview(b"abcd"))
    assert ram.read(8, 4) == b"abcd"


def test_view_is_the_same_memory_as_read_and_write():
    ram = PhysicalMemory(2 * PAGE_SIZE)
    ram.view[10:13] = b"xyz"
    assert ram.read(10, 3) == b"xyz"
    ram.write(20, b"q")
    assert ram.view[20] == ord("q")


def test_zero_frame_clears_exactly_one_frame():
    ram = PhysicalMemory(3 * PAGE_SIZE)
    ram.write(0, b"\xff" * (3 * PAGE_SIZE))
    ram.zero_frame(1)
    assert ram.read(PAGE_SIZE, PAGE_SIZE) == bytes(PAGE_SIZE)
    assert ram.read(0, PAGE_SIZE) == b"\xff" * PAGE_SIZE
    assert ram.read(2 * PAGE_SIZE, PAGE_SIZE) == b"\xff" * PAGE_SIZE


def test_copy_frame_copies_one_frame_and_leaves_the_source():
    ram = PhysicalMemory(3 * PAGE_SIZE)
    pattern = bytes(i % 251 for i in range(PAGE_SIZE))
    ram.write(2 * PAGE_SIZE, pattern)
    ram.copy_frame(0, 2)
    assert ram.read(0, PAGE_SIZE) == pattern
    assert ram.read(2 * PAGE_SIZE, PAGE_SIZE) == pattern
    assert ram.read(PAGE_SIZE, PAGE_SIZE) == bytes(PAGE_SIZE)
