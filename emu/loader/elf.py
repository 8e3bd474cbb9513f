"""Parse and validate static ELF executables with pyelftools; map them into an address space."""
from __future__ import annotations

import os
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from emu.errors import EmuError
from emu.mm.frames import PAGE_MASK, PAGE_SIZE
from emu.mm.objects import FileChunk, FileImage
from emu.mm.vmspace import PROT_EXEC, PROT_READ, PROT_WRITE, AddressSpace, Mapping, Share, page_align_up

_ARCH_BY_MACHINE = {"EM_X86_64": "x86_64", "EM_AARCH64": "aarch64"}
PIE_BASE = 0x5555_5555_4000        # where a static-pie image is placed (as Linux does without ASLR)


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
    return ElfImage(path=path, arch=arch, entry=elf["e_entry"] + bias,
                    phdr_vaddr=phdr_vaddr + bias if phdr_vaddr else 0,
                    phentsize=elf["e_phentsize"], phnum=elf["e_phnum"],
                    segments=tuple(segments), load_bias=bias)


def map_image(space: AddressSpace, image: ElfImage, name: str) -> None:
    """Create the image's mappings (demand-paged from the file, named `name`: the program's
    guest path) and set the initial brk.

    A page covered by two segments gets one mapping with both segments' bytes
    and the union of their permissions.
    """
    # page -> (prot, chunks); chunk offsets relative to the page
    pages: dict[int, tuple[int, list[FileChunk]]] = {}
    for seg in image.segments:
        start = seg.vaddr + image.load_bias
        for page in range(start & PAGE_MASK, page_align_up(start + seg.memsz), PAGE_SIZE):
            prot, chunks = pages.get(page, (0, []))
            lo, hi = max(page, start), min(page + PAGE_SIZE, start + seg.filesz)
            if lo < hi:
                chunks = chunks + [FileChunk(lo - page, seg.offset + (lo - start), hi - lo)]
            pages[page] = (prot | seg.prot, chunks)
    # runs of consecutive pages with the same protection become one mapping each
    runs: list[list[int]] = []
    for page in sorted(pages):
        if runs and runs[-1][-1] + PAGE_SIZE == page and pages[runs[-1][0]][0] == pages[page][0]:
            runs[-1].append(page)
        else:
            runs.append([page])
    fd = os.open(image.path, os.O_RDONLY)
    try:
        for run in runs:
            start, prot = run[0], pages[run[0]][0]
            chunks = _merge([FileChunk(c.object_offset + p - start, c.file_offset, c.length)
                             for p in run for c in pages[p][1]])
            space.insert(Mapping(start, run[-1] + PAGE_SIZE, prot, Share.PRIVATE,
                                 FileImage(fd, name, chunks), 0, name))
    finally:
        os.close(fd)
    space.brk_start = space.brk = max(pages) + PAGE_SIZE


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
