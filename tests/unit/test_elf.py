"""read_elf: every way a file can fail to be a static x86-64/AArch64 executable, and success.

The successful parses are checked against an independent reading of the ELF
headers with `struct`, so pyelftools is not its own reference.
"""
from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from emu.errors import EmuError
from emu.loader.elf import PIE_BASE, ElfImage, map_image, read_elf
from emu.mm.fault import Access
from emu.mm.frames import PAGE_SIZE, OutOfFrames
from emu.mm.uaccess import UserMemory
from emu.mm.vmspace import PROT_EXEC, PROT_READ, PROT_WRITE, page_align_up

from .support import firmware_binary, make_memory

PT_LOAD, PT_INTERP = 1, 3
ET_REL = 1
EM_ARM, EM_RISCV = 40, 243


def headers(path: Path) -> dict:
    """The ELF64 little-endian header fields and program headers, read with struct."""
    data = path.read_bytes()
    (e_type, e_machine, _, e_entry, e_phoff, _, _, _, e_phentsize,
     e_phnum) = struct.unpack_from("<HHIQQQIHHH", data, 16)
    phdrs = [struct.unpack_from("<IIQQQQQQ", data, e_phoff + i * e_phentsize) for i in range(e_phnum)]
    return {"type": e_type, "machine": e_machine, "entry": e_entry, "phoff": e_phoff,
            "phentsize": e_phentsize, "phnum": e_phnum, "phdrs": phdrs}


def elf_header(ei_class: int = 2, ei_data: int = 1, e_type: int = 2, e_machine: int = 62,
               phnum: int = 0) -> bytes:
    """A bare ELF header with no program or section headers (+ phnum zeroed phdrs for 64-bit)."""
    ident = b"\x7fELF" + bytes([ei_class, ei_data, 1, 0]) + bytes(8)
    order = "<" if ei_data == 1 else ">"
    if ei_class == 1:
        return ident + struct.pack(order + "HHIIIIIHHHHHH", e_type, e_machine, 1, 0x8048000,
                                   52 if phnum else 0, 0, 0, 52, 32, phnum, 40, 0, 0) + bytes(32 * phnum)
    return ident + struct.pack(order + "HHIQQQIHHHHHH", e_type, e_machine, 1, 0x401000,
                               64 if phnum else 0, 0, 0, 64, 56, phnum, 64, 0, 0) + bytes(56 * phnum)


def copy_of(src: Path, tmp_path: Path, patch=None) -> Path:
    """A copy of `src` in tmp_path, optionally changed by patch(bytearray)."""
    data = bytearray(src.read_bytes())
    if patch:
        patch(data)
    dst = tmp_path / (src.name + ".copy")
    dst.write_bytes(bytes(data))
    return dst


def error_of(path) -> str:
    with pytest.raises(EmuError) as info:
        read_elf(str(path))
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


# ---- errors ----

def test_missing_file(tmp_path):
    assert "No such file or directory" in error_of(tmp_path / "nope")


def test_directory(tmp_path):
    assert "Is a directory" in error_of(tmp_path)


def test_not_an_elf_file(tmp_path):
    path = tmp_path / "script.sh"
    path.write_text("#!/bin/sh\necho hi\n")
    assert "not an ELF file" in error_of(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert "not an ELF file" in error_of(path)


def test_only_the_magic(tmp_path):
    path = tmp_path / "magic"
    path.write_bytes(b"\x7fELF")
    assert "malformed or truncated ELF" in error_of(path)


def test_32_bit_elf(tmp_path):
    path = tmp_path / "i386"
    path.write_bytes(elf_header(ei_class=1, e_machine=3))
    assert "only 64-bit little-endian ELF is supported" in error_of(path)


def test_big_endian_elf(tmp_path):
    path = tmp_path / "be"
    path.write_bytes(elf_header(ei_data=2, e_machine=183))
    assert "only 64-bit little-endian ELF is supported" in error_of(path)


def test_no_loadable_segments(tmp_path):
    path = tmp_path / "empty_exec"
    path.write_bytes(elf_header(phnum=1))          # one PT_NULL program header
    assert "no loadable segments" in error_of(path)


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
@pytest.mark.parametrize("size", [100, "half"])
def test_truncated_binary(tmp_path, arch, size):
    src = firmware_binary(arch)
    data = src.read_bytes()
    path = tmp_path / "truncated"
    path.write_bytes(data[:len(data) // 2 if size == "half" else size])
    assert "truncated" in error_of(path)


@pytest.mark.parametrize("machine, name", [(EM_ARM, "EM_ARM"), (EM_RISCV, "EM_RISCV")])
def test_binary_for_another_machine(tmp_path, machine, name):
    path = copy_of(firmware_binary("x86_64"), tmp_path,
                   lambda d: struct.pack_into("<H", d, 18, machine))
    message = error_of(path)
    assert f"unsupported machine {name}" in message
    assert "x86-64 and AArch64 are supported" in message


def test_relocatable_object(tmp_path):
    path = copy_of(firmware_binary("x86_64"), tmp_path,
                   lambda d: struct.pack_into("<H", d, 16, ET_REL))
    assert "not an executable (e_type ET_REL)" in error_of(path)


def test_segment_with_filesz_over_memsz_is_malformed(tmp_path):
    src = firmware_binary("x86_64")
    h = headers(src)
    index = next(i for i, ph in enumerate(h["phdrs"]) if ph[0] == PT_LOAD)

    def grow_filesz(d):
        at = h["phoff"] + index * h["phentsize"]
        memsz = struct.unpack_from("<Q", d, at + 40)[0]
        struct.pack_into("<Q", d, at + 32, memsz + 1)

    assert "malformed PT_LOAD segment" in error_of(copy_of(src, tmp_path, grow_filesz))


def test_dynamically_linked_binary(tmp_path):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not installed")
    source = tmp_path / "dyn.c"
    source.write_text("int main(void) { return 0; }\n")
    binary = tmp_path / "dyn"
    subprocess.run([gcc, "-o", str(binary), str(source)], check=True, capture_output=True)
    if not any(ph[0] == PT_INTERP for ph in headers(binary)["phdrs"]):
        pytest.skip("this gcc links statically by default")
    message = error_of(binary)
    assert "dynamically linked (interpreter /" in message
    assert "only static executables are supported" in message


# ---- success ----

@pytest.mark.parametrize("arch, machine", [("x86_64", 62), ("aarch64", 183)])
def test_hello_parses_like_its_headers_say(arch, machine):
    path = firmware_binary(arch)
    h = headers(path)
    assert h["machine"] == machine
    image = read_elf(str(path))
    assert isinstance(image, ElfImage)
    assert image.path == str(path)
    assert image.arch == arch
    assert image.load_bias == (PIE_BASE if h["type"] == 3 else 0)
    assert image.entry == h["entry"] + image.load_bias
    assert (image.phentsize, image.phnum) == (56, h["phnum"])
    loads = [ph for ph in h["phdrs"] if ph[0] == PT_LOAD and ph[6] > 0]
    assert [(s.vaddr, s.memsz, s.offset, s.filesz) for s in image.segments] == \
           [(ph[3], ph[6], ph[2], ph[5]) for ph in loads]
    prot_of = {ph[3]: ph[1] for ph in loads}
    for seg in image.segments:
        flags = prot_of[seg.vaddr]
        assert seg.prot == ((PROT_READ if flags & 4 else 0) | (PROT_WRITE if flags & 2 else 0)
                            | (PROT_EXEC if flags & 1 else 0))


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_hello_entry_is_in_an_executable_segment(arch):
    image = read_elf(str(firmware_binary(arch)))
    seg = next(s for s in image.segments if s.vaddr <= image.entry - image.load_bias < s.vaddr + s.memsz)
    assert seg.prot & PROT_EXEC and not seg.prot & PROT_WRITE


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_hello_phdr_address_is_where_the_headers_are_loaded(arch):
    path = firmware_binary(arch)
    h = headers(path)
    image = read_elf(str(path))
    seg = next(s for s in image.segments if s.offset <= h["phoff"] < s.offset + s.filesz)
    assert image.phdr_vaddr == seg.vaddr + h["phoff"] - seg.offset + image.load_bias


# ---- map_image ----

IMAGE_FRAMES = 2048             # enough to commit a static glibc program

@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_map_image_covers_every_segment_with_its_permissions(arch):
    image = read_elf(str(firmware_binary(arch)))
    mem = make_memory(IMAGE_FRAMES)
    map_image(mem.space, image, "/prog")
    for seg in image.segments:
        start = seg.vaddr + image.load_bias
        for vaddr in (start, start + seg.memsz - 1):
            m = mem.space.find(vaddr)
            assert m is not None and m.prot & seg.prot == seg.prot
    last = max(s.vaddr + s.memsz for s in image.segments) + image.load_bias
    assert mem.space.brk == mem.space.brk_start == page_align_up(last)
    assert mem.frames.in_use == 0                  # demand paged: nothing read yet
    pages = sum(m.length for m in mem.space.mappings()) // 4096
    assert mem.frames.reserved == pages            # but committed (QNX: at mmap)


def test_an_image_bigger_than_ram_is_refused_before_anything_is_mapped():
    image = read_elf(str(firmware_binary("x86_64")))
    mem = make_memory(16)
    with pytest.raises(OutOfFrames):
        map_image(mem.space, image, "/prog")
    assert mem.frames.reserved == 0


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_mapped_image_reads_back_the_file_and_zero_bss(arch):
    path = firmware_binary(arch)
    image = read_elf(str(path))
    data = path.read_bytes()
    mem = make_memory(IMAGE_FRAMES)
    map_image(mem.space, image, "/prog")
    user = UserMemory(mem.space, mem.ram, mem.fault_in)
    for seg in image.segments:
        start = seg.vaddr + image.load_bias
        n = min(seg.filesz, 3 * PAGE_SIZE)
        assert user.read(start, n) == data[seg.offset:seg.offset + n]
        if seg.memsz > seg.filesz:                 # .bss starts zeroed
            tail = min(seg.memsz - seg.filesz, 64)
            assert user.read(start + seg.filesz, tail) == bytes(tail)


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_code_at_the_entry_point_is_fetchable_file_bytes(arch):
    path = firmware_binary(arch)
    image = read_elf(str(path))
    data = path.read_bytes()
    mem = make_memory(IMAGE_FRAMES)
    map_image(mem.space, image, "/prog")
    assert mem.fault_in(image.entry, Access.FETCH)
    seg = next(s for s in image.segments if s.vaddr <= image.entry - image.load_bias < s.vaddr + s.memsz)
    offset = seg.offset + (image.entry - image.load_bias - seg.vaddr)
    user = UserMemory(mem.space, mem.ram, mem.fault_in)
    assert user.peek(image.entry, 16, Access.FETCH) == data[offset:offset + 16]
