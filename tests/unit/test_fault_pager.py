"""resolve_fault (the decision) and Pager.service (the work), with anonymous and file objects."""
from __future__ import annotations

import os
import signal

import pytest

from emu.mm.frames import OutOfFrames

from emu.mm.fault import (BUS_OBJERR, SEGV_ACCERR, SEGV_MAPERR, Access, Deliver, FaultCause,
                          NeedsPage, PageRequest, Resolved, resolve_fault)
from emu.mm.pager import PageIn
from emu.mm.frames import PAGE_SIZE
from emu.mm.objects import AnonymousMemory, FileChunk, FileImage
from emu.mm.pagetable import PTE_EXEC, PTE_READ, PTE_WRITE
from emu.mm.vmspace import PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE, Mapping, Share

from .support import make_memory

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
BASE = 0x20_0000


@pytest.fixture
def data_file(tmp_path):
    """A 3.5-page host file whose byte i is (i * 7 + i // 256) % 256, opened read-only."""
    content = bytes((i * 7 + i // 256) % 256 for i in range(3 * P + P // 2))
    path = tmp_path / "image.bin"
    path.write_bytes(content)
    fd = os.open(path, os.O_RDONLY)
    yield fd, content
    os.close(fd)


def file_mapping(fd: int, chunks: list[FileChunk], pages: int, prot: int = PROT_READ,
                 offset: int = 0) -> Mapping:
    return Mapping(BASE, BASE + pages * P, prot, Share.PRIVATE, FileImage(fd, "image", chunks),
                   offset, "image")


def page_bytes(mem, vaddr: int) -> bytes:
    pte = mem.space.page_table.lookup(vaddr >> 12)
    assert pte is not None, f"{vaddr:#x} not present"
    return mem.ram.read(pte.frame << 12, P)


def service(mem, vaddr: int, access: Access = Access.READ):
    verdict = resolve_fault(mem.space, vaddr, access)
    assert isinstance(verdict, NeedsPage)
    return mem.pager.service(mem.space, verdict.request)


# ---- Access ----

def test_access_values_are_unicorns_and_map_to_prot_bits():
    assert (Access.READ, Access.WRITE, Access.FETCH) == (16, 17, 18)
    assert (Access.READ.prot, Access.WRITE.prot, Access.FETCH.prot) == (PROT_READ, PROT_WRITE,
                                                                        PROT_EXEC)


# ---- resolve_fault ----

def test_unmapped_address_is_sigsegv_maperr(mem):
    verdict = resolve_fault(mem.space, 0xDEAD000, Access.READ)
    assert verdict == Deliver(signal.SIGSEGV, SEGV_MAPERR, 0xDEAD000, FaultCause.SIGSEGV)


def test_address_just_past_a_mapping_is_maperr(mem):
    mem.map_anon(BASE, 1, RW)
    assert resolve_fault(mem.space, BASE + P, Access.READ).code == SEGV_MAPERR


@pytest.mark.parametrize("prot, access", [
    (PROT_READ, Access.WRITE),
    (RW, Access.FETCH),
    (PROT_NONE, Access.READ),
    (PROT_EXEC, Access.WRITE),
])
def test_protection_violation_is_sigsegv_accerr(mem, prot, access):
    mem.map_anon(BASE, 1, prot)
    verdict = resolve_fault(mem.space, BASE + 8, access)
    assert isinstance(verdict, Deliver)
    assert (verdict.signal, verdict.code) == (signal.SIGSEGV, SEGV_ACCERR)


def test_accerr_even_when_the_page_is_present(mem):
    mem.map_anon(BASE, 1, PROT_READ)
    mem.populate(BASE, BASE + P)
    assert resolve_fault(mem.space, BASE, Access.WRITE).code == SEGV_ACCERR


def test_first_touch_of_anonymous_memory_needs_a_zero_fill(mem):
    m = mem.map_anon(BASE, 4, RW)
    verdict = resolve_fault(mem.space, BASE + 2 * P + 5, Access.WRITE)
    assert verdict == NeedsPage(PageRequest(BASE + 2 * P + 5, Access.WRITE, m,
                                            FaultCause.ZERO_FILL))
    assert verdict.cause is FaultCause.ZERO_FILL


def test_first_touch_of_a_file_image_needs_a_page_in(mem, data_file):
    fd, _ = data_file
    m = file_mapping(fd, [FileChunk(0, 0, P)], 1)
    mem.space.insert(m)
    verdict = resolve_fault(mem.space, BASE, Access.READ)
    assert isinstance(verdict, NeedsPage) and verdict.request.needs_read
    assert verdict.cause is FaultCause.PAGE_IN
    assert verdict.request.mapping is m


def test_fault_on_a_present_page_with_the_access_is_resolved(mem):
    mem.map_anon(BASE, 1, RW)
    mem.populate(BASE, BASE + P)
    verdict = resolve_fault(mem.space, BASE + 100, Access.WRITE)
    assert verdict == Resolved(FaultCause.SPURIOUS)


def test_resolve_fault_changes_nothing(mem):
    mem.map_anon(BASE, 2, RW)
    resolve_fault(mem.space, BASE, Access.READ)
    resolve_fault(mem.space, 0x1000, Access.READ)
    assert len(mem.space.page_table) == 0 and mem.frames.in_use == 0


# ---- Pager.service: anonymous ----

def test_zero_fill_maps_a_zeroed_frame_with_the_mapping_permissions(mem):
    mem.map_anon(BASE, 1, PROT_READ | PROT_WRITE | PROT_EXEC)
    dirty = mem.frames.allocate()                  # leave garbage in the frame handed out next
    mem.ram.write(dirty << 12, b"\xAA" * P)
    mem.frames.release(dirty)

    result = service(mem, BASE + 17, Access.WRITE)

    assert result == Resolved(FaultCause.ZERO_FILL)
    pte = mem.space.page_table.lookup(BASE >> 12)
    assert pte.frame == dirty
    assert pte.perms == PTE_READ | PTE_WRITE | PTE_EXEC
    assert pte.modified is True                    # set up by a write: modified at once
    assert page_bytes(mem, BASE) == bytes(P)
    assert mem.frames.in_use == 1


def test_after_service_the_fault_resolves(mem):
    mem.map_anon(BASE, 1, RW)
    service(mem, BASE, Access.WRITE)
    assert resolve_fault(mem.space, BASE, Access.READ) == Resolved(FaultCause.SPURIOUS)
    assert resolve_fault(mem.space, BASE, Access.WRITE) == Resolved(FaultCause.SPURIOUS)


def test_a_page_first_read_is_read_only_until_its_first_write(mem):
    mem.map_anon(BASE, 1, RW)
    assert service(mem, BASE, Access.READ).cause is FaultCause.ZERO_FILL
    pte = mem.space.page_table.lookup(BASE >> 12)
    assert (pte.perms, pte.modified) == (PTE_READ, False)
    assert resolve_fault(mem.space, BASE, Access.READ) == Resolved(FaultCause.SPURIOUS)
    verdict = resolve_fault(mem.space, BASE, Access.WRITE)
    assert isinstance(verdict, NeedsPage) and verdict.cause is FaultCause.WRITE_TRACK
    assert mem.pager.service(mem.space, verdict.request).cause is FaultCause.WRITE_TRACK
    pte = mem.space.page_table.lookup(BASE >> 12)
    assert (pte.perms, pte.modified) == (PTE_READ | PTE_WRITE, True)
    assert mem.frames.in_use == 1                  # the same frame: tracking copies nothing


def test_committed_mapping_reserves_frames_and_fails_when_short():
    mem = make_memory(frames=4)
    mem.map_anon(BASE, 3, RW)
    assert (mem.frames.reserved, mem.frames.unreserved) == (3, 1)
    with pytest.raises(OutOfFrames):
        mem.map_anon(BASE + 8 * P, 2, RW)
    assert mem.space.find(BASE + 8 * P) is None
    service(mem, BASE, Access.WRITE)               # consumes one reservation
    assert (mem.frames.reserved, mem.frames.in_use) == (2, 1)
    mem.space.remove(BASE, BASE + 3 * P)           # gives back the rest
    assert (mem.frames.reserved, mem.frames.in_use) == (0, 0)


def test_lazy_mapping_takes_a_frame_at_first_touch(mem):
    mem.map_anon(BASE, 2, RW, lazy=True)
    assert mem.frames.reserved == 0
    assert service(mem, BASE, Access.WRITE) == Resolved(FaultCause.LAZY_ALLOC)
    assert mem.frames.in_use == 1


def test_each_page_gets_its_own_frame(mem):
    mem.map_anon(BASE, 3, RW)
    for i in range(3):
        service(mem, BASE + i * P)
    frames = {mem.space.page_table.lookup((BASE >> 12) + i).frame for i in range(3)}
    assert len(frames) == 3 and mem.frames.in_use == 3


def test_out_of_frames_is_sigbus_objerr_and_maps_nothing():
    mem = make_memory(frames=2)
    mem.map_anon(BASE, 3, RW, lazy=True)
    service(mem, BASE)
    service(mem, BASE + P)
    result = service(mem, BASE + 2 * P)
    assert result == Deliver(signal.SIGBUS, BUS_OBJERR, BASE + 2 * P, FaultCause.SIGBUS)
    assert mem.space.page_table.lookup((BASE >> 12) + 2) is None
    assert mem.frames.in_use == 2


# ---- Pager.service: file images ----

def test_page_in_copies_the_file_page(mem, data_file):
    fd, content = data_file
    mem.space.insert(file_mapping(fd, [FileChunk(0, 0, len(content))], 4, PROT_READ | PROT_EXEC))
    result = service(mem, BASE + P + 300, Access.FETCH)
    assert result == Resolved(FaultCause.PAGE_IN)
    assert page_bytes(mem, BASE + P) == content[P:2 * P]
    assert mem.space.page_table.lookup((BASE >> 12) + 1).perms == PTE_READ | PTE_EXEC


def test_page_in_of_the_last_partial_page_has_a_zero_tail(mem, data_file):
    fd, content = data_file                        # 3.5 pages long
    mem.space.insert(file_mapping(fd, [FileChunk(0, 0, len(content))], 4))
    service(mem, BASE + 3 * P)
    assert page_bytes(mem, BASE + 3 * P) == content[3 * P:] + bytes(P // 2)


def test_chunk_shorter_than_the_page_leaves_zeros(mem, data_file):
    fd, content = data_file                        # like a .data segment followed by .bss
    mem.space.insert(file_mapping(fd, [FileChunk(0, 0x100, 0x300)], 1))
    service(mem, BASE)
    assert page_bytes(mem, BASE) == content[0x100:0x400] + bytes(P - 0x300)


def test_chunk_not_starting_at_a_page_boundary(mem, data_file):
    fd, content = data_file
    # object bytes [0x1800, 0x2800) come from file bytes [0x200, 0x1200)
    mem.space.insert(file_mapping(fd, [FileChunk(0x1800, 0x200, 0x1000)], 4))
    for i in range(4):
        service(mem, BASE + i * P)
    assert page_bytes(mem, BASE) == bytes(P)
    assert page_bytes(mem, BASE + P) == bytes(0x800) + content[0x200:0xA00]
    assert page_bytes(mem, BASE + 2 * P) == content[0xA00:0x1200] + bytes(0x800)
    assert page_bytes(mem, BASE + 3 * P) == bytes(P)


def test_two_chunks_in_one_page(mem, data_file):
    fd, content = data_file                        # e.g. the end of text and start of data
    chunks = [FileChunk(0x800, 0x2000, 0x100), FileChunk(0x10, 0x0, 0x20)]
    mem.space.insert(file_mapping(fd, chunks, 1))
    service(mem, BASE)
    expected = bytearray(P)
    expected[0x10:0x30] = content[0:0x20]
    expected[0x800:0x900] = content[0x2000:0x2100]
    assert page_bytes(mem, BASE) == bytes(expected)


def test_chunk_running_past_the_end_of_the_file_reads_zeros(mem, data_file):
    fd, content = data_file
    mem.space.insert(file_mapping(fd, [FileChunk(0, 3 * P, 2 * P)], 2))
    service(mem, BASE)
    service(mem, BASE + P)
    assert page_bytes(mem, BASE) == content[3 * P:] + bytes(P // 2)
    assert page_bytes(mem, BASE + P) == bytes(P)


def test_mapping_offset_selects_the_object_page(mem, data_file):
    fd, content = data_file
    mem.space.insert(file_mapping(fd, [FileChunk(0, 0, len(content))], 2, offset=2 * P))
    service(mem, BASE)
    assert page_bytes(mem, BASE) == content[2 * P:3 * P]


def test_page_in_after_a_split_uses_the_clipped_offset(mem, data_file):
    fd, content = data_file
    mem.space.insert(file_mapping(fd, [FileChunk(0, 0, len(content))], 4))
    mem.space.remove(BASE, BASE + P)               # the rest now starts at object offset 1 page
    service(mem, BASE + 2 * P)
    assert page_bytes(mem, BASE + 2 * P) == content[2 * P:3 * P]


def test_file_image_stays_readable_after_the_original_descriptor_is_closed(mem, tmp_path):
    path = tmp_path / "gone.bin"
    path.write_bytes(b"persist" * 100)
    fd = os.open(path, os.O_RDONLY)
    image = FileImage(fd, "gone", [FileChunk(0, 0, 700)])
    os.close(fd)
    path.unlink()
    mem.space.insert(Mapping(BASE, BASE + P, PROT_READ, Share.PRIVATE, image, 0, "gone"))
    service(mem, BASE)
    assert page_bytes(mem, BASE)[:700] == b"persist" * 100


def test_file_image_sorts_its_chunks():
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        image = FileImage(fd, "null", [FileChunk(0x2000, 0, 1), FileChunk(0, 5, 1)])
    finally:
        os.close(fd)
    assert [c.object_offset for c in image.chunks] == [0, 0x2000]
    assert image.is_file and not AnonymousMemory.is_file


# ---- Pager.serve: the one step every fault path takes ----

def test_serve_stops_before_a_read_and_finishes_after_it(mem, data_file):
    fd, content = data_file
    mem.space.insert(file_mapping(fd, [FileChunk(0, 0, len(content))], 4))
    step = mem.pager.serve(mem.space, BASE, Access.READ)
    assert isinstance(step, PageIn) and step.request.cause is FaultCause.PAGE_IN
    assert mem.space.page_table.lookup(BASE >> 12) is None          # nothing done yet
    assert mem.pager.serve(mem.space, BASE, Access.READ, after_read=True) == \
        Resolved(FaultCause.PAGE_IN)
    assert page_bytes(mem, BASE) == content[:P]


def test_serve_without_a_read_does_the_work_at_once(mem):
    mem.map_anon(BASE, 1, RW)
    assert mem.pager.serve(mem.space, BASE, Access.WRITE) == Resolved(FaultCause.ZERO_FILL)
    assert mem.pager.serve(mem.space, BASE, Access.WRITE) == Resolved(FaultCause.SPURIOUS)
    assert mem.pager.serve(mem.space, 0xDEAD000, Access.READ).cause is FaultCause.SIGSEGV
