"""Kernel access to guest virtual memory (copy-in / copy-out for syscalls).

Pages that are not present are faulted in through the same resolver and pager
as guest faults; an address no mapping allows gives EFAULT.
"""
from __future__ import annotations

import struct
from typing import Callable

from emu.mm.fault import Access
from emu.mm.frames import PAGE_SHIFT, PAGE_SIZE, FrameAllocator, PhysicalMemory
from emu.mm.vmspace import AddressSpace

FaultIn = Callable[[int, Access], bool]
"""(vaddr, access) -> True once the page is present with that access, False if it cannot be."""
CodeInvalidate = Callable[[int], None]
"""frame -> None: drop the CPU's translated code of a frame whose contents change."""


class BadAddress(Exception):
    """A guest pointer that no mapping allows (the syscall fails with EFAULT)."""


class UserMemory:
    """Reads and writes a process's virtual memory from the kernel."""

    def __init__(self, space: AddressSpace, ram: PhysicalMemory, fault_in: FaultIn,
                 frames: FrameAllocator | None = None,
                 invalidate_code: CodeInvalidate | None = None) -> None:
        """Access `space` through `ram`, making pages present with `fault_in`; writes into a
        frame that may hold translated code drop that code (`invalidate_code`)."""
        self.space = space
        self.ram = ram
        self.fault_in = fault_in
        self.frames = frames
        self.invalidate_code = invalidate_code

    def _wrote(self, paddr: int) -> None:
        frame = paddr >> PAGE_SHIFT
        if self.frames is not None and self.invalidate_code is not None \
                and self.frames.is_code(frame):
            self.invalidate_code(frame)

    def _frame_address(self, vaddr: int, access: Access) -> int:
        for _ in range(2):
            pte = self.space.page_table.lookup(vaddr >> PAGE_SHIFT)
            if pte is not None and pte.perms & access.prot:
                return (pte.frame << PAGE_SHIFT) | (vaddr & (PAGE_SIZE - 1))
            if not self.fault_in(vaddr, access):
                break
        raise BadAddress(hex(vaddr))

    def _chunks(self, vaddr: int, length: int, access: Access):  # type: ignore[no-untyped-def]
        done = 0
        while done < length:
            addr = vaddr + done
            n = min(length - done, PAGE_SIZE - (addr & (PAGE_SIZE - 1)))
            yield done, self._frame_address(addr, access), n
            done += n

    def read(self, vaddr: int, length: int) -> bytes:
        """`length` bytes at guest address `vaddr`."""
        out = bytearray(length)
        for done, paddr, n in self._chunks(vaddr, length, Access.READ):
            out[done:done + n] = self.ram.view[paddr:paddr + n]
        return bytes(out)

    def write(self, vaddr: int, data: bytes | bytearray | memoryview) -> None:
        """Store `data` at guest address `vaddr`."""
        view = memoryview(data).cast("B")
        for done, paddr, n in self._chunks(vaddr, len(view), Access.WRITE):
            self.ram.view[paddr:paddr + n] = view[done:done + n]
            self._wrote(paddr)

    def peek(self, vaddr: int, length: int, access: Access = Access.FETCH) -> bytes:
        """Bytes at `vaddr` from pages already present with `access`; never faults (BadAddress)."""
        out = bytearray()
        while len(out) < length:
            addr = vaddr + len(out)
            pte = self.space.page_table.lookup(addr >> PAGE_SHIFT)
            if pte is None or not pte.perms & access.prot:
                raise BadAddress(hex(addr))
            n = min(length - len(out), PAGE_SIZE - (addr & (PAGE_SIZE - 1)))
            paddr = (pte.frame << PAGE_SHIFT) | (addr & (PAGE_SIZE - 1))
            out += self.ram.view[paddr:paddr + n]
        return bytes(out)

    def inspect(self, vaddr: int, length: int) -> bytes:
        """Bytes at `vaddr` as the guest would read them, for debuggers and injectors: present
        pages from RAM, mapped pages not yet present from their memory object; never faults
        a page in, ignores protections, charges nothing (BadAddress where nothing is mapped)."""
        out = bytearray()
        while len(out) < length:
            addr = vaddr + len(out)
            n = min(length - len(out), PAGE_SIZE - (addr & (PAGE_SIZE - 1)))
            pte = self.space.page_table.lookup(addr >> PAGE_SHIFT)
            if pte is not None:
                paddr = (pte.frame << PAGE_SHIFT) | (addr & (PAGE_SIZE - 1))
                out += self.ram.view[paddr:paddr + n]
                continue
            mapping = self.space.find(addr)
            if mapping is None:
                raise BadAddress(hex(addr))
            page = bytearray(PAGE_SIZE)
            offset = mapping.object_offset(addr)
            if mapping.obj.cached:
                page[:] = mapping.obj.file.peek_page(offset >> PAGE_SHIFT)
            else:
                mapping.obj.fill(offset, memoryview(page))
            start = addr & (PAGE_SIZE - 1)
            out += page[start:start + n]
        return bytes(out)

    def poke(self, vaddr: int, data: bytes) -> None:
        """Store `data` at `vaddr` for a debugger or injector: into present, unshared pages
        only, whatever their protection; never faults a page in, charges nothing. BadAddress
        (nothing written) if a page is absent or shared copy-on-write."""
        chunks = []
        done = 0
        while done < len(data):
            addr = vaddr + done
            n = min(len(data) - done, PAGE_SIZE - (addr & (PAGE_SIZE - 1)))
            pte = self.space.page_table.lookup(addr >> PAGE_SHIFT)
            if pte is None:
                raise BadAddress(f"{addr:#x} (page not present)")
            if self.space.frame_shared(pte.frame):
                raise BadAddress(f"{addr:#x} (page shared copy-on-write)")
            chunks.append(((pte.frame << PAGE_SHIFT) | (addr & (PAGE_SIZE - 1)), done, n))
            done += n
        for paddr, start, n in chunks:
            self.ram.view[paddr:paddr + n] = data[start:start + n]
            self._wrote(paddr)

    def read_cstring(self, vaddr: int, limit: int = 4096) -> bytes:
        """The NUL-terminated string at `vaddr` (without the NUL), at most `limit` bytes."""
        out = bytearray()
        while len(out) < limit:
            n = min(limit - len(out), PAGE_SIZE - ((vaddr + len(out)) & (PAGE_SIZE - 1)))
            chunk = self.read(vaddr + len(out), n)
            end = chunk.find(0)
            if end >= 0:
                return bytes(out + chunk[:end])
            out += chunk
        raise BadAddress(f"string at {vaddr:#x} longer than {limit} bytes")

    def read_u64(self, vaddr: int) -> int:
        """The little-endian 64-bit word at `vaddr`."""
        return struct.unpack("<Q", self.read(vaddr, 8))[0]

    def write_u64(self, vaddr: int, value: int) -> None:
        """Store a little-endian 64-bit word."""
        self.write(vaddr, struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF))
