"""UserMemory: kernel copy-in/copy-out through the page tables, faulting pages in on demand."""
from __future__ import annotations

import pytest

from emu.mm.fault import Access
from emu.mm.frames import PAGE_SIZE
from emu.mm.uaccess import BadAddress, UserMemory
from emu.mm.vmspace import PROT_EXEC, PROT_READ, PROT_WRITE

from .support import make_memory

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
BASE = 0x40_0000


@pytest.fixture
def user(mem) -> UserMemory:
    """UserMemory over `mem`, with 4 RW pages at BASE and 1 read-only page after them."""
    mem.map_anon(BASE, 4, RW)
    mem.map_anon(BASE + 4 * P, 1, PROT_READ)
    return UserMemory(mem.space, mem.ram, mem.fault_in)


def frame_of(mem, vaddr: int) -> int:
    return mem.space.page_table.lookup(vaddr >> 12).frame


def test_write_then_read_across_a_page_boundary(mem, user):
    data = bytes(range(200))
    user.write(BASE + P - 50, data)
    assert user.read(BASE + P - 50, 200) == data
    # the bytes really are split between the two pages' frames
    assert mem.ram.read((frame_of(mem, BASE) << 12) + P - 50, 50) == data[:50]
    assert mem.ram.read(frame_of(mem, BASE + P) << 12, 150) == data[50:]


def test_write_spanning_three_pages(user):
    data = bytes(i % 256 for i in range(2 * P + 10))
    user.write(BASE + 5, data)
    assert user.read(BASE + 5, len(data)) == data


def test_reading_untouched_memory_faults_in_zero_pages(mem, user):
    assert user.read(BASE + P + 10, 100) == bytes(100)
    assert len(mem.space.page_table) == 1
    assert mem.frames.in_use == 1


def test_write_accepts_bytearray_and_memoryview(user):
    user.write(BASE, bytearray(b"abc"))
    user.write(BASE + 3, memoryview(b"def"))
    assert user.read(BASE, 6) == b"abcdef"


def test_zero_length_access_touches_nothing(mem, user):
    assert user.read(BASE, 0) == b""
    user.write(BASE, b"")
    assert len(mem.space.page_table) == 0


def test_read_of_an_unmapped_address_is_bad_address(user):
    with pytest.raises(BadAddress):
        user.read(0x1000, 4)


def test_read_running_off_the_end_of_mappings_is_bad_address(user):
    with pytest.raises(BadAddress, match=hex(BASE + 5 * P)):
        user.read(BASE + 5 * P - 4, 8)


def test_write_to_a_read_only_mapping_is_bad_address(mem, user):
    with pytest.raises(BadAddress):
        user.write(BASE + 4 * P, b"x")
    assert user.read(BASE + 4 * P, 1) == b"\0"


def test_read_cstring(user):
    user.write(BASE + 100, b"hello\0world\0")
    assert user.read_cstring(BASE + 100) == b"hello"
    assert user.read_cstring(BASE + 106) == b"world"
    assert user.read_cstring(BASE + 200) == b""


def test_read_cstring_across_a_page_boundary(user):
    text = b"x" * 30 + b"y" * 30
    user.write(BASE + 2 * P - 30, text + b"\0")
    assert user.read_cstring(BASE + 2 * P - 30) == text


def test_read_cstring_ending_at_a_page_end_does_not_touch_the_next_page(mem):
    mem.map_anon(BASE, 1, RW)                    # nothing mapped after this page
    user = UserMemory(mem.space, mem.ram, mem.fault_in)
    user.write(BASE + P - 4, b"end\0")
    assert user.read_cstring(BASE + P - 4) == b"end"


def test_read_cstring_running_into_unmapped_memory_is_bad_address(mem):
    mem.map_anon(BASE, 1, RW)
    user = UserMemory(mem.space, mem.ram, mem.fault_in)
    user.write(BASE + P - 4, b"open")
    with pytest.raises(BadAddress):
        user.read_cstring(BASE + P - 4)


def test_read_cstring_longer_than_the_limit_is_bad_address(user):
    user.write(BASE, b"a" * 64 + b"\0")
    assert user.read_cstring(BASE, limit=65) == b"a" * 64
    with pytest.raises(BadAddress, match="longer than 64"):
        user.read_cstring(BASE, limit=64)


def test_u64_round_trip_is_little_endian_and_wraps(user):
    user.write_u64(BASE + P - 4, 0x1122334455667788)
    assert user.read(BASE + P - 4, 8) == bytes.fromhex("8877665544332211")
    assert user.read_u64(BASE + P - 4) == 0x1122334455667788
    user.write_u64(BASE, -1)
    assert user.read_u64(BASE) == 0xFFFF_FFFF_FFFF_FFFF


def test_peek_never_faults(mem, user):
    with pytest.raises(BadAddress):
        user.peek(BASE, 4, Access.READ)
    assert len(mem.space.page_table) == 0
    assert mem.frames.in_use == 0


def test_peek_reads_present_pages(user):
    user.write(BASE + P - 2, b"wxyz")
    assert user.peek(BASE + P - 2, 4, Access.READ) == b"wxyz"


def test_peek_stops_at_a_page_that_is_not_present(user):
    user.write(BASE + P - 2, b"ab")               # only the first page is present
    with pytest.raises(BadAddress, match=hex(BASE + P)):
        user.peek(BASE + P - 2, 4, Access.READ)


def test_peek_checks_the_access(mem):
    mem.map_anon(BASE, 1, RW)
    mem.map_anon(BASE + P, 1, PROT_READ | PROT_EXEC)
    mem.populate(BASE, BASE + 2 * P)
    user = UserMemory(mem.space, mem.ram, mem.fault_in)
    with pytest.raises(BadAddress):
        user.peek(BASE, 4)                        # default access is FETCH: data page refused
    assert user.peek(BASE + P, 4) == bytes(4)


def test_fault_in_refusal_is_bad_address(mem):
    mem.map_anon(BASE, 1, RW)
    calls = []

    def refuse(vaddr, access):
        calls.append((vaddr, access))
        return False

    user = UserMemory(mem.space, mem.ram, refuse)
    with pytest.raises(BadAddress):
        user.read(BASE + 8, 1)
    assert calls == [(BASE + 8, Access.READ)]


def test_fault_in_gets_the_access_of_the_copy(mem):
    mem.map_anon(BASE, 1, RW)
    seen = []

    def record(vaddr, access):
        seen.append(access)
        return mem.fault_in(vaddr, access)

    user = UserMemory(mem.space, mem.ram, record)
    user.write(BASE, b"x")
    assert seen == [Access.WRITE]


def test_out_of_frames_during_copy_is_bad_address():
    mem = make_memory(frames=1)
    mem.map_anon(BASE, 2, RW, lazy=True)
    user = UserMemory(mem.space, mem.ram, mem.fault_in)
    with pytest.raises(BadAddress):
        user.write(BASE + P - 1, b"ab")
