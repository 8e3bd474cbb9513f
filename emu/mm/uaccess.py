"""Kernel access to guest virtual memory (copy-in / copy-out for syscalls).

Pages that are not present are faulted in through the same resolver and pager
as guest faults; an address no mapping allows gives EFAULT.
"""
from __future__ import annotations

import struct
from typing import Callable

from emu.mm.fault import Access
from emu.mm.frames import PAGE_SHIFT, PAGE_SIZE, PhysicalMemory
from emu.mm.vmspace import AddressSpace

FaultIn = Callable[[int, Access], bool]
"""(vaddr, access) -> True once the page is present with that access, False if it cannot be."""


class BadAddress(Exception):
    """A guest pointer that no mapping allows (the syscall fails with EFAULT)."""


class UserMemory:
    """Reads and writes a process's virtual memory from the kernel."""

    def __init__(self, space: AddressSpace, ram: PhysicalMemory, fault_in: FaultIn) -> None:
        """Access `space` through `ram`, making pages present with `fault_in`."""
        self.space = space
        self.ram = ram
        self.fault_in = fault_in

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
