"""Parse and validate static ELF executables with pyelftools; map them into an address space."""
from __future__ import annotations

import os
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from emu.errors import EmuError
from emu.mm.frames import PAGE_MASK, PAGE_SIZE, OutOfFrames
from emu.mm.objects import FileChunk, FileImage
from emu.mm.vmspace import (PROT_EXEC, PROT_READ, PROT_WRITE, STACK_SIZE, STACK_TOP,
                            AddressSpace, Mapping, Share, page_align_up)

_ARCH_BY_MACHINE = {"EM_X86_64": "x86_64", "EM_AARCH64": "aarch64"}
PIE_BASE = 0x5555_5555_4000        # where a static-pie image is placed (as Linux does without ASLR)
USER_LIMIT = {"x86_64": 0x7FFF_FFFF_F000, "aarch64": 1 << 48}   # end of user space
STACK_AREA = (STACK_TOP - STACK_SIZE, STACK_TOP)
_PHENTSIZE = 56                    # sizeof(Elf64_Phdr)


@dataclass(frozen=True)
class Segment:
    """One PT_LOAD segment."""

    vaddr: int
    memsz: int
    offset: int
    filesz: int
    prot: int


@dataclass(frozen=True)
class ElfImage:
    """A validated static executable."""

    path: str
    arch: str                   # "x86_64" or "aarch64"
    entry: int
    phdr_vaddr: int
    phentsize: int
    phnum: int
    segments: tuple[Segment, ...]
    load_bias: int              # added to every address (non-zero for static-pie)


def _prot(p_flags: int) -> int:
    return ((PROT_READ if p_flags & 4 else 0) | (PROT_WRITE if p_flags & 2 else 0)
            | (PROT_EXEC if p_flags & 1 else 0))


def read_elf(path: str) -> ElfImage:
    """Parse `path` as a static x86-64/AArch64 executable; EmuError with one line if it is not one."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if f.read(4) != b"\x7fELF":
                raise EmuError(f"{path}: not an ELF file")
            f.seek(0)
            return _parse(path, ELFFile(f), size)
    except OSError as exc:
        raise EmuError(f"{path}: {exc.strerror}") from None
    except (ELFError, ValueError, KeyError) as exc:
        raise EmuError(f"{path}: malformed or truncated ELF ({exc})") from None
    except EmuError:
        raise
    except Exception as exc:  # pyelftools raises struct/construct errors on truncated input
        raise EmuError(f"{path}: malformed or truncated ELF ({type(exc).__name__})") from None


def _parse(path: str, elf: ELFFile, file_size: int) -> ElfImage:
    if elf.elfclass != 64 or not elf.little_endian:
        raise EmuError(f"{path}: only 64-bit little-endian ELF is supported")
    machine = elf["e_machine"]
    arch = _ARCH_BY_MACHINE.get(machine)
    if arch is None:
        raise EmuError(f"{path}: unsupported machine {machine} (x86-64 and AArch64 are supported)")
    if elf["e_type"] not in ("ET_EXEC", "ET_DYN"):
        raise EmuError(f"{path}: not an executable (e_type {elf['e_type']})")
    if elf["e_phoff"] + elf["e_phnum"] * elf["e_phentsize"] > file_size:
        raise EmuError(f"{path}: truncated ELF (program headers past the end of the file)")
    if elf["e_phnum"] and elf["e_phentsize"] != _PHENTSIZE:
        raise EmuError(f"{path}: malformed ELF (program header size {elf['e_phentsize']})")
    segments = []
    phdr_vaddr = None
    for ph in elf.iter_segments():
        kind = ph["p_type"]
        if kind == "PT_INTERP":
            interp = ph.get_interp_name()
            raise EmuError(f"{path}: dynamically linked (interpreter {interp}); "
                           "only static executables are supported")
        if kind == "PT_PHDR":
            phdr_vaddr = ph["p_vaddr"]
        if kind != "PT_LOAD" or ph["p_memsz"] == 0:
            continue
        if ph["p_offset"] + ph["p_filesz"] > file_size:
            raise EmuError(f"{path}: truncated ELF (segment data past the end of the file)")
        if ph["p_filesz"] > ph["p_memsz"] or (ph["p_vaddr"] - ph["p_offset"]) % PAGE_SIZE:
            raise EmuError(f"{path}: malformed PT_LOAD segment at {ph['p_vaddr']:#x}")
        segments.append(Segment(ph["p_vaddr"], ph["p_memsz"], ph["p_offset"],
                                ph["p_filesz"], _prot(ph["p_flags"])))
    if not segments:
        raise EmuError(f"{path}: no loadable segments")
    if phdr_vaddr is None:
        for seg in segments:
            if seg.offset <= elf["e_phoff"] < seg.offset + seg.filesz:
                phdr_vaddr = seg.vaddr + elf["e_phoff"] - seg.offset
                break
        else:
            phdr_vaddr = 0
    bias = PIE_BASE if elf["e_type"] == "ET_DYN" and segments[0].vaddr < PAGE_SIZE * 16 else 0
    _check_layout(path, arch, segments, bias)
    return ElfImage(path=path, arch=arch, entry=elf["e_entry"] + bias,
                    phdr_vaddr=phdr_vaddr + bias if phdr_vaddr else 0,
                    phentsize=elf["e_phentsize"], phnum=elf["e_phnum"],
                    segments=tuple(segments), load_bias=bias)


def _check_layout(path: str, arch: str, segments: list[Segment], bias: int) -> None:
    """Refuse (EmuError, one line) PT_LOAD segments that wrap around, leave user space,
    overlap each other or the stack area, before anything is built."""
    limit = USER_LIMIT[arch]
    ranges = []
    for seg in segments:
        start, end = seg.vaddr + bias, seg.vaddr + bias + seg.memsz
        if end > limit or page_align_up(end) > limit:
            raise EmuError(f"{path}: PT_LOAD segment at {seg.vaddr:#x} (size {seg.memsz:#x}) "
                           "lies beyond the end of user space")
        if start < STACK_AREA[1] and end > STACK_AREA[0]:
            raise EmuError(f"{path}: PT_LOAD segment at {seg.vaddr:#x} overlaps the stack")
        ranges.append((start, end))
    ranges.sort()
    for (_, end), (start, _) in zip(ranges, ranges[1:]):
        if start < end:
            raise EmuError(f"{path}: PT_LOAD segments overlap at {start - bias:#x}")


def map_image(space: AddressSpace, image: ElfImage, name: str) -> None:
    """Create the image's mappings (paged in from the file at first touch, their frames
    committed now; named `name`: the program's guest path) and set the initial brk;
    OutOfFrames, with nothing mapped, if RAM cannot commit them.

    A page covered by two segments gets one mapping with both segments' bytes
    and the union of their permissions. The work is proportional to the number of
    segments, never to their size (a huge .bss is one lazily filled mapping).
    """
    spans = [(seg, seg.vaddr + image.load_bias) for seg in image.segments]
    # the page boundaries where the set of covering segments can change
    points = sorted({p for seg, start in spans
                     for p in (start & PAGE_MASK, page_align_up(start + seg.memsz))})
    # pieces [lo, hi) with their protection and (absolute-address) file chunks
    pieces: list[tuple[int, int, int, list[FileChunk]]] = []
    for lo, hi in zip(points, points[1:]):
        prot, chunks, covered = 0, [], False
        for seg, start in spans:
            if start & PAGE_MASK < hi and page_align_up(start + seg.memsz) > lo:
                covered = True
                prot |= seg.prot
                a, b = max(lo, start), min(hi, start + seg.filesz)
                if a < b:
                    chunks.append(FileChunk(a, seg.offset + (a - start), b - a))
        if covered:
            pieces.append((lo, hi, prot, chunks))
    # runs of adjoining pieces with the same protection become one mapping each
    runs: list[tuple[int, int, int, list[FileChunk]]] = []
    for lo, hi, prot, chunks in pieces:
        if runs and runs[-1][1] == lo and runs[-1][2] == prot:
            runs[-1] = (runs[-1][0], hi, prot, runs[-1][3] + chunks)
        else:
            runs.append((lo, hi, prot, chunks))
    fd = os.open(image.path, os.O_RDONLY)
    try:
        for k, (lo, hi, prot, chunks) in enumerate(runs):
            relative = sorted((FileChunk(c.object_offset - lo, c.file_offset, c.length)
                               for c in chunks), key=lambda c: c.object_offset)
            try:                # the image's frames are committed: all of it fits, or none
                space.insert(Mapping(lo, hi, prot, Share.PRIVATE,
                                     FileImage(fd, name, _merge(relative)), 0, name))
            except OutOfFrames:
                for done_lo, done_hi, _prot, _chunks in runs[:k]:
                    space.remove(done_lo, done_hi)
                raise
    finally:
        os.close(fd)
    space.brk_start = space.brk = runs[-1][1]


def _merge(chunks: list[FileChunk]) -> list[FileChunk]:
    """Join chunks that continue each other both in the object and in the file."""
    merged: list[FileChunk] = []
    for c in chunks:
        last = merged[-1] if merged else None
        if (last is not None and last.object_offset + last.length == c.object_offset
                and last.file_offset + last.length == c.file_offset):
            merged[-1] = FileChunk(last.object_offset, last.file_offset, last.length + c.length)
        else:
            merged.append(c)
    return merged
