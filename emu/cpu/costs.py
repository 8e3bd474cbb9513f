"""Instruction costing: classify each instruction of a block once (capstone) and sum its cycles."""
from __future__ import annotations

import capstone
from capstone import arm64_const as a64
from capstone import x86_const as x86

from emu.cpu.arch import ArchSpec
from emu.profile import InstructionCosts

_X86_MUL = ("mul", "imul", "mulx")
_X86_DIV = ("div", "idiv")
_A64_MUL = ("mul", "madd", "msub", "mneg", "smull", "umull", "smulh", "umulh", "smaddl",
            "umaddl", "smsubl", "umsubl")
_A64_DIV = ("sdiv", "udiv")


class BlockCoster:
    """Prices code for one architecture under one profile's instruction costs."""

    def __init__(self, spec: ArchSpec, costs: InstructionCosts) -> None:
        """A coster with its own capstone decoder (detail mode on)."""
        self.costs = costs
        self._x86 = spec.name == "x86_64"
        self._cs = capstone.Cs(spec.cs_arch, spec.cs_mode)
        self._cs.detail = True

    def cost(self, code: bytes, address: int) -> tuple[int, int]:
        """(instructions, cycles) of `code` at `address`; an undecodable tail counts as one ALU op."""
        n = cycles = end = 0
        for insn in self._cs.disasm(code, address):
            n += 1
            cycles += self._cycles(insn)
            end = insn.address + insn.size - address
        if end < len(code):
            n += 1
            cycles += self.costs.alu
        return n, cycles

    def _cycles(self, insn: capstone.CsInsn) -> int:
        c = self.costs
        if insn.group(capstone.CS_GRP_CALL) or insn.group(capstone.CS_GRP_RET):
            return c.call_return
        if insn.group(capstone.CS_GRP_JUMP) or insn.group(capstone.CS_GRP_BRANCH_RELATIVE):
            return c.branch
        name = insn.mnemonic
        if self._x86:
            if name in _X86_DIV:
                return c.div
            if name in _X86_MUL:
                return c.mul
            if any(op.type == x86.X86_OP_MEM for op in insn.operands) and name != "lea" \
                    and not name.startswith("nop"):
                return c.memory
            if any(insn.group(g) for g in (x86.X86_GRP_SSE1, x86.X86_GRP_SSE2, x86.X86_GRP_SSE3,
                                           x86.X86_GRP_SSSE3, x86.X86_GRP_SSE41, x86.X86_GRP_SSE42,
                                           x86.X86_GRP_FPU)):
                return c.fp_simd
            return c.alu
        if name in _A64_DIV:
            return c.div
        if name in _A64_MUL:
            return c.mul
        if any(op.type == a64.ARM64_OP_MEM for op in insn.operands):
            return c.memory
        if name.startswith("f") or any(insn.group(g) for g in (a64.ARM64_GRP_NEON, a64.ARM64_GRP_FPARMV8)):
            return c.fp_simd
        return c.alu
