"""Precise fault addresses for si_addr.

Unicorn's TLB-fill hook is given only the page being translated, so a fault is
known to the page. When a fault becomes a signal, the byte address the
instruction touched is recomputed from its memory operands (capstone) and the
registers: the operand whose address falls in the faulting page, or the start of
the page when an access crosses into it from below; the PC for an instruction
fetch. If nothing matches, the page address is all there is.
"""
from __future__ import annotations

from collections.abc import Callable

import capstone
from capstone import arm64_const as cs_a64
from capstone import x86_const as cs_x86
from unicorn import arm64_const as uc_a64
from unicorn import x86_const as uc_x86

from emu.cpu.arch import ArchSpec

PAGE = 4096                     # the engine's translation granule on both architectures
_MASK64 = (1 << 64) - 1
_MAX_ACCESS = 64                # the widest single access (AVX-512 / ldp q, q): spanning check
_X86_PUSHES = frozenset({"push", "call", "pushfq"})
_X86_POPS = frozenset({"pop", "ret", "popfq"})

ReadRegister = Callable[[int], int]


class FaultAddressDecoder:
    """Decodes one faulting instruction to find the address it touched."""

    def __init__(self, spec: ArchSpec) -> None:
        """A decoder for `spec`'s instruction set."""
        self._x86 = spec.name == "x86_64"
        self._cs = capstone.Cs(spec.cs_arch, spec.cs_mode)
        self._cs.detail = True

    def address(self, code: bytes, pc: int, page: int, read: ReadRegister) -> int:
        """The address in `page` that the instruction `code` at `pc` faulted on."""
        insn = next(self._cs.disasm(code, pc, 1), None)
        accesses = [] if insn is None else (self._x86_accesses(insn, read) if self._x86
                                             else self._a64_accesses(insn, read))
        for ea, _ in accesses:
            if page <= ea < page + PAGE:
                return ea
        for ea, size in accesses:
            if ea < page < ea + size:
                return page
        if page <= pc < page + PAGE:
            return pc                       # the instruction itself could not be fetched
        return page

    def access_address(self, code: bytes, pc: int, read: ReadRegister) -> int | None:
        """The address of the first memory access of the instruction `code` at `pc`, or None
        (an alignment fault's si_addr)."""
        insn = next(self._cs.disasm(code, pc, 1), None)
        if insn is None:
            return None
        accesses = self._x86_accesses(insn, read) if self._x86 else self._a64_accesses(insn, read)
        return accesses[0][0] if accesses else None

    def _x86_accesses(self, insn: capstone.CsInsn, read: ReadRegister) -> list[tuple[int, int]]:
        out = []
        for op in insn.operands:
            if op.type != cs_x86.X86_OP_MEM:
                continue
            mem = op.mem
            ea = mem.disp
            narrow = False
            if mem.base:
                name = insn.reg_name(mem.base)
                ea += insn.address + insn.size if name == "rip" else _x86_reg(name, read)
                narrow = name.startswith("e")
            if mem.index:
                ea += _x86_reg(insn.reg_name(mem.index), read) * mem.scale
            if narrow:                      # 32-bit addressing (0x67 prefix)
                ea &= 0xFFFF_FFFF
            if mem.segment == cs_x86.X86_REG_FS:
                ea += read(uc_x86.UC_X86_REG_FS_BASE)
            elif mem.segment == cs_x86.X86_REG_GS:
                ea += read(uc_x86.UC_X86_REG_GS_BASE)
            out.append((ea & _MASK64, op.size or _MAX_ACCESS))
        rsp = read(uc_x86.UC_X86_REG_RSP)
        if insn.mnemonic in _X86_PUSHES:
            out.append(((rsp - 8) & _MASK64, 8))
        elif insn.mnemonic in _X86_POPS:
            out.append((rsp, 8))
        return out

    def _a64_accesses(self, insn: capstone.CsInsn, read: ReadRegister) -> list[tuple[int, int]]:
        out = []
        for op in insn.operands:
            if op.type != cs_a64.ARM64_OP_MEM:
                continue
            mem = op.mem
            ea = mem.disp + (_a64_reg(insn.reg_name(mem.base), read) if mem.base else 0)
            if mem.index:
                index = _a64_reg(insn.reg_name(mem.index), read)
                if op.ext == cs_a64.ARM64_EXT_SXTW and index & 0x8000_0000:
                    index -= 1 << 32
                if op.shift.type == cs_a64.ARM64_SFT_LSL:
                    index <<= op.shift.value
                ea += index
            out.append((ea & _MASK64, _MAX_ACCESS))
        return out


def _x86_reg(name: str, read: ReadRegister) -> int:
    return read(getattr(uc_x86, f"UC_X86_REG_{name.upper()}"))


def _a64_reg(name: str, read: ReadRegister) -> int:
    if name in ("xzr", "wzr"):
        return 0
    return read(getattr(uc_a64, f"UC_ARM64_REG_{name.upper()}"))
