"""Instruction costing: classify each instruction of a block once (capstone) and sum its cycles.

Costs are remembered per block with the cumulative cost after each
instruction, so that when a fault stops a block part-way the kernel can take
back exactly what did not retire without decoding again.

Classes, first match wins:
  call_return  capstone groups CALL or RET
  branch       groups JUMP or BRANCH_RELATIVE
  div, mul     by mnemonic
  memory       x86: push*/pop*/leave, or a memory operand (not lea, nop*);
               AArch64: ldr*/prfm* (literal loads), or a memory operand
  fp_simd      x86: groups SSE1..SSE4.2 or FPU; AArch64: mnemonic f* or groups NEON/FPARMV8
  alu          everything else, and an undecodable tail (one instruction)

Speed: capstone's Python objects (`CsInsn.groups`, `.operands`) cost tens of
microseconds per instruction, so the coster calls `cs_disasm` itself (detail
mode, as before) and reads the very same C records -- groups, operand count
and operand types -- as bytes, at the offsets capstone's own ctypes structures
declare. The decision for a (groups, mnemonic) pair is made once and memoised;
only the memory-operand test looks at each instruction's operands.
"""
from __future__ import annotations

import bisect
import ctypes
import struct
from itertools import accumulate

import capstone
from capstone import arm64 as _cs_a64
from capstone import arm64_const as a64
from capstone import x86 as _cs_x86
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

# ---- capstone's C records, laid out as its ctypes binding declares them ----

_INSN = capstone._cs_insn
_DETAIL = capstone._cs_detail
_INSN_SIZE = ctypes.sizeof(_INSN)
_MNEMONIC_SIZE = _INSN.mnemonic.size


def _record_format() -> struct.Struct:
    """(size, mnemonic bytes, detail address) of one cs_insn, all else skipped."""
    fields = [(_INSN.size.offset, "H", 2), (_INSN.mnemonic.offset, f"{_MNEMONIC_SIZE}s",
                                            _MNEMONIC_SIZE), (_INSN.detail.offset, "Q", 8)]
    fmt, at = "<", 0
    for offset, code, width in fields:
        assert offset >= at
        fmt += f"{offset - at}x{code}"
        at = offset + width
    record = struct.Struct(fmt + f"{_INSN_SIZE - at}x")
    assert record.size == _INSN_SIZE and ctypes.sizeof(ctypes.c_void_p) == 8
    return record


_RECORD = _record_format()
_GROUPS = _DETAIL.groups.offset
_GROUPS_MAX = _DETAIL.groups.size                       # capacity of detail.groups
_GROUPS_END = _DETAIL.groups_count.offset + 1           # groups and their count, one key
assert _DETAIL.groups_count.offset == _GROUPS + _GROUPS_MAX


class _Operands:
    """Where one architecture's operand count and operand types sit in a cs_detail record."""

    def __init__(self, arch_detail: type[ctypes.Structure], operand: type[ctypes.Structure],
                 mem_type: int) -> None:
        """Offsets from capstone's own ctypes structures for that architecture."""
        base = _DETAIL.arch.offset
        self.count = base + arch_detail.op_count.offset
        self.first = base + arch_detail.operands.offset
        self.max = arch_detail.operands.size // ctypes.sizeof(operand)
        stride, at = ctypes.sizeof(operand), operand.type.offset
        assert operand.type.size == 4
        # the types of the first n operands as a tuple of ints, for n = 0 .. max
        self.types = [struct.Struct("<" + f"{at}xI{stride - at - 4}x" * n)
                      for n in range(self.max + 1)]
        self.mem_type = mem_type
        self.detail_bytes = ctypes.c_char * (self.first + self.max * stride)    # read per insn


_X86_OPERANDS = _Operands(_cs_x86.CsX86, _cs_x86.X86Op, x86.X86_OP_MEM)
_A64_OPERANDS = _Operands(_cs_a64.CsArm64, _cs_a64.Arm64Op, a64.ARM64_OP_MEM)

# capstone's cs_disasm, as a foreign function of our own (the binding's prototype is left
# alone) that hands back the instruction array as a plain address.
_cs_disasm = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t,
                              ctypes.c_uint64, ctypes.c_size_t,
                              ctypes.POINTER(ctypes.c_void_p))(("cs_disasm", capstone._cs))
_cs_free = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_size_t)(("cs_free", capstone._cs))
_cs_errno = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_size_t)(("cs_errno", capstone._cs))

_TRANSFER = frozenset({capstone.CS_GRP_JUMP, capstone.CS_GRP_CALL, capstone.CS_GRP_RET,
                       capstone.CS_GRP_INT, capstone.CS_GRP_IRET,
                       capstone.CS_GRP_BRANCH_RELATIVE})


class BlockCoster:
    """Prices code for one architecture under one profile's instruction costs."""

    def __init__(self, spec: ArchSpec, costs: InstructionCosts) -> None:
        """A coster with its own capstone decoder (detail mode on)."""
        self.costs = costs
        self._x86 = spec.name == "x86_64"
        self._cs = capstone.Cs(spec.cs_arch, spec.cs_mode)
        self._cs.detail = True
        self._operands = _X86_OPERANDS if self._x86 else _A64_OPERANDS
        self._records: dict[int, type[ctypes.Array[ctypes.c_char]]] = {}   # count -> array type
        # (groups and their count, mnemonic) -> cycles, or (cycles with, without a memory operand)
        self._rules: dict[tuple[bytes, bytes], int | tuple[int, int]] = {}
        # (groups, mnemonic) -> whether the instruction transfers control
        self._transfers: dict[tuple[bytes, bytes], bool] = {}
        # block key -> (end offsets of its instructions, cumulative cycles after each,
        # whether it ends with a control transfer)
        self._prefixes: dict[object, tuple[list[int], list[int], bool]] = {}

    def cost(self, code: bytes, address: int, key: object = None) -> tuple[int, int]:
        """(instructions, cycles) of the block `code` at `address`; remembered for `retired`
        under `key` (default: the address; the engine uses (physical address, size))."""
        code = bytes(code)
        remember_as = address if key is None else key
        last_key: tuple[bytes, bytes] | None = None
        sizes: list[int] = []
        each: list[int] = []
        handle = self._cs.csh
        array = ctypes.c_void_p()                   # set to cs_disasm's cs_insn array
        count = _cs_disasm(handle, code, len(code), address, 0, ctypes.byref(array))
        if count:
            try:
                records = self._records.get(count)
                if records is None:
                    records = self._records[count] = ctypes.c_char * (count * _INSN_SIZE)
                ops = self._operands
                detail_at = ops.detail_bytes.from_address
                op_count, op_first, op_max = ops.count, ops.first, ops.max
                types, mem_type = ops.types, ops.mem_type
                rules = self._rules
                for size, mnemonic, detail in _RECORD.iter_unpack(
                        records.from_address(array.value).raw):
                    d = detail_at(detail).raw          # (bytes past a string's NUL are junk)
                    key = (d[_GROUPS:_GROUPS_END], mnemonic.split(b"\0", 1)[0])
                    rule = rules.get(key)
                    if rule is None:
                        rule = rules[key] = self._rule(*key)
                    if rule.__class__ is tuple:          # (with, without) a memory operand
                        n = d[op_count]
                        if n > op_max:
                            n = op_max
                        rule = rule[0] if mem_type in types[n].unpack_from(d, op_first) else rule[1]
                    sizes.append(size)
                    each.append(rule)
                    last_key = key
            finally:
                _cs_free(array, count)
        else:
            status = _cs_errno(handle)
            if status != capstone.CS_ERR_OK:
                raise capstone.CsError(status)
        ends = list(accumulate(sizes))
        cumulative = list(accumulate(each))
        transfer = last_key is not None and self._transfer(*last_key)
        if not ends or ends[-1] < len(code):       # undecodable tail: one ALU op
            cumulative.append(cumulative[-1] + self.costs.alu if cumulative else self.costs.alu)
            ends.append(len(code))
            transfer = False
        self._prefixes[remember_as] = (ends, cumulative, transfer)
        return len(ends), cumulative[-1]

    def retired(self, key: object, offset: int) -> tuple[int, int] | None:
        """(instructions, cycles) of the block remembered under `key` that lie before byte
        `offset` of it, or None if the block is unknown."""
        entry = self._prefixes.get(key)
        if entry is None:
            return None
        ends, cumulative, _ = entry
        n = bisect.bisect_right(ends, offset)
        return n, cumulative[n - 1] if n else 0

    def ends_with_branch(self, key: object) -> bool:
        """Whether the block remembered under `key` ends with a control transfer (a block
        started anywhere inside it then ends at the same place)."""
        entry = self._prefixes.get(key)
        return entry is not None and entry[2]

    def instruction_ends(self, code: bytes, address: int, count: int) -> int:
        """The byte offset in `code` (at `address`) just after its first `count` instructions."""
        end = 0
        for n, (_, size, _, _) in enumerate(self._cs.disasm_lite(bytes(code), address), 1):
            end += size
            if n == count:
                return end
        raise ValueError(f"fewer than {count} instructions at {address:#x}")

    def forget(self) -> None:
        """Drop remembered blocks (code changed)."""
        self._prefixes.clear()

    def forget_keys(self, lo: int, hi: int) -> None:
        """Drop the blocks remembered under keys (or (key, size) pairs) in [lo, hi)."""
        for key in [k for k in self._prefixes
                    if lo <= (k[0] if isinstance(k, tuple) else k) < hi]:  # type: ignore[index]
            del self._prefixes[key]

    def _transfer(self, groups_record: bytes, mnemonic: bytes) -> bool:
        """Whether an instruction with these groups and mnemonic transfers control."""
        known = self._transfers.get((groups_record, mnemonic))
        if known is None:
            groups = set(groups_record[:_GROUPS_MAX][:groups_record[_GROUPS_MAX]])
            known = bool(groups & _TRANSFER) or mnemonic in (b"syscall", b"svc", b"brk",
                                                             b"hlt", b"ud2", b"int3")
            self._transfers[(groups_record, mnemonic)] = known
        return known

    def _rule(self, groups_record: bytes, mnemonic: bytes) -> int | tuple[int, int]:
        """Cycles for this groups record and mnemonic, or (with, without) a memory operand."""
        c = self.costs
        groups = set(groups_record[:_GROUPS_MAX][:groups_record[_GROUPS_MAX]])
        if groups & _CALL_RET:
            return c.call_return
        if groups & _BRANCH:
            return c.branch
        name = mnemonic.decode("ascii")
        if self._x86:
            if name in _X86_DIV:
                return c.div
            if name in _X86_MUL:
                return c.mul
            other = c.fp_simd if groups & _X86_SIMD_GROUPS else c.alu
            if name.startswith(_X86_STACK):
                return c.memory
            if name == "lea" or name.startswith("nop"):
                return other
            return (c.memory, other)
        if name in _A64_DIV:
            return c.div
        if name in _A64_MUL:
            return c.mul
        if name.startswith(_A64_LOADS_STORES):
            return c.memory
        other = c.fp_simd if name.startswith("f") or groups & _A64_SIMD_GROUPS else c.alu
        return (c.memory, other)
