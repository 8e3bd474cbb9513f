"""Instruction costing: classify each instruction of a block once (capstone) and sum its cycles.

Costs are remembered per block with the cumulative cost after each
instruction, so that when a fault stops a block part-way the kernel can take
back exactly what did not retire without decoding again.
"""
from __future__ import annotations

import bisect

import capstone
from capstone import arm64_const as a64
from capstone import x86_const as x86

from emu.cpu.arch import ArchSpec
from emu.profile import InstructionCosts

_X86_MUL = frozenset({"mul", "imul", "mulx"})
_X86_DIV = frozenset({"div", "idiv"})
_X86_SIMD_GROUPS = frozenset({x86.X86_GRP_SSE1, x86.X86_GRP_SSE2, x86.X86_GRP_SSE3,
                              x86.X86_GRP_SSSE3, x86.X86_GRP_SSE41, x86.X86_GRP_SSE42,
                              x86.X86_GRP_FPU})
_A64_MUL = frozenset({"mul", "madd", "msub", "mneg", "smull", "umull", "smulh", "umulh",
                      "smaddl", "umaddl", "smsubl", "umsubl"})
_A64_DIV = frozenset({"sdiv", "udiv"})
_X86_STACK = ("push", "pop", "leave")        # memory accesses without a memory operand
_A64_LOADS_STORES = ("ldr", "prfm")          # includes PC-relative literal loads
_A64_SIMD_GROUPS = frozenset({a64.ARM64_GRP_NEON, a64.ARM64_GRP_FPARMV8})
_CALL_RET = frozenset({capstone.CS_GRP_CALL, capstone.CS_GRP_RET})
_BRANCH = frozenset({capstone.CS_GRP_JUMP, capstone.CS_GRP_BRANCH_RELATIVE})


class BlockCoster:
    """Prices code for one architecture under one profile's instruction costs."""

    def __init__(self, spec: ArchSpec, costs: InstructionCosts) -> None:
        """A coster with its own capstone decoder (detail mode on)."""
        self.costs = costs
        self._x86 = spec.name == "x86_64"
        self._cs = capstone.Cs(spec.cs_arch, spec.cs_mode)
        self._cs.detail = True
        # block start -> (end offsets of its instructions, cumulative cycles after each)
        self._prefixes: dict[int, tuple[list[int], list[int]]] = {}

    def cost(self, code: bytes, address: int) -> tuple[int, int]:
        """(instructions, cycles) of the block `code` at `address`; remembered for `retired`."""
        ends: list[int] = []
        cumulative: list[int] = []
        cycles = 0
        for insn in self._cs.disasm(code, address):
            cycles += self._cycles(insn)
            ends.append(insn.address + insn.size - address)
            cumulative.append(cycles)
        if not ends or ends[-1] < len(code):       # undecodable tail: one ALU op
            cycles += self.costs.alu
            ends.append(len(code))
            cumulative.append(cycles)
        self._prefixes[address] = (ends, cumulative)
        return len(ends), cycles

    def retired(self, block: int, pc: int) -> tuple[int, int] | None:
        """(instructions, cycles) of block `block` before `pc`, or None if the block is unknown."""
        entry = self._prefixes.get(block)
        if entry is None:
            return None
        ends, cumulative = entry
        n = bisect.bisect_right(ends, pc - block)
        return n, cumulative[n - 1] if n else 0

    def forget(self) -> None:
        """Drop remembered blocks (code changed)."""
        self._prefixes.clear()

    def _cycles(self, insn: capstone.CsInsn) -> int:
        c = self.costs
        groups = set(insn.groups)
        if groups & _CALL_RET:
            return c.call_return
        if groups & _BRANCH:
            return c.branch
        name = insn.mnemonic
        if self._x86:
            if name in _X86_DIV:
                return c.div
            if name in _X86_MUL:
                return c.mul
            if name.startswith(_X86_STACK) or (name != "lea" and not name.startswith("nop") and
                                               any(op.type == x86.X86_OP_MEM for op in insn.operands)):
                return c.memory
            return c.fp_simd if groups & _X86_SIMD_GROUPS else c.alu
        if name in _A64_DIV:
            return c.div
        if name in _A64_MUL:
            return c.mul
        if name.startswith(_A64_LOADS_STORES) or any(op.type == a64.ARM64_OP_MEM
                                                     for op in insn.operands):
            return c.memory
        return c.fp_simd if name.startswith("f") or groups & _A64_SIMD_GROUPS else c.alu
