"""BlockCoster: instruction classes priced from the profile, prefix costs for partly retired blocks."""
from __future__ import annotations

import random
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import capstone
import pytest
from capstone import arm64_const as cs_a64
from capstone import x86_const as cs_x86
from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile

from emu.cpu.arch import AARCH64, X86_64, ArchSpec
from emu.cpu.costs import BlockCoster
from emu.profile import InstructionCosts

from .support import FIRMWARE_BUILD, firmware_binary

# Distinct prime costs, so a wrong class can never produce the right number by accident.
COSTS = InstructionCosts(alu=1, mul=3, div=37, memory=5, branch=7, call_return=11, fp_simd=13)
BASE = 0x40_0000

# Hand-assembled x86-64 (bytes as `objdump -d` prints them).
X86 = {
    "add rax, rbx": ("48 01 d8", "alu"),
    "lea rax, [rbx+8]": ("48 8d 43 08", "alu"),
    "nop": ("90", "alu"),
    "nop dword [rax]": ("0f 1f 40 00", "alu"),
    "syscall": ("0f 05", "alu"),
    "imul rax, rbx": ("48 0f af c3", "mul"),
    "mul rbx": ("48 f7 e3", "mul"),
    "div rbx": ("48 f7 f3", "div"),
    "idiv rbx": ("48 f7 fb", "div"),
    "mov rax, [rbx]": ("48 8b 03", "memory"),
    "mov [rbx], rax": ("48 89 03", "memory"),
    "movaps xmm0, [rax]": ("0f 28 00", "memory"),
    "rep stosb": ("f3 aa", "memory"),
    "jmp rel8": ("eb 00", "branch"),
    "jne rel8": ("75 00", "branch"),
    "jmp rax": ("ff e0", "branch"),
    "call rel32": ("e8 00 00 00 00", "call_return"),
    "call [rax]": ("ff 10", "call_return"),
    "ret": ("c3", "call_return"),
    "addsd xmm0, xmm1": ("f2 0f 58 c1", "fp_simd"),
    "pxor xmm0, xmm0": ("66 0f ef c0", "fp_simd"),
    "fadd st(1)": ("d8 c1", "fp_simd"),
}

# Hand-assembled AArch64 (little-endian words as bytes).
A64 = {
    "add x0, x1, x2": ("20 00 02 8b", "alu"),
    "nop": ("1f 20 03 d5", "alu"),
    "mul x0, x1, x2": ("20 7c 02 9b", "mul"),
    "madd x0, x1, x2, x2": ("20 08 02 9b", "mul"),
    "umulh x0, x1, x2": ("20 7c c2 9b", "mul"),
    "smull x0, w1, w2": ("20 7c 22 9b", "mul"),
    "sdiv x0, x1, x2": ("20 0c c2 9a", "div"),
    "udiv x0, x1, x2": ("20 08 c2 9a", "div"),
    "ldr x0, [x1]": ("20 00 40 f9", "memory"),
    "str x0, [x1]": ("20 00 00 f9", "memory"),
    "stp x29, x30, [sp, #-16]!": ("fd 7b bf a9", "memory"),
    "b": ("00 00 00 14", "branch"),
    "b.ne": ("01 00 00 54", "branch"),
    "cbz x0": ("00 00 00 b4", "branch"),
    "br x0": ("00 00 1f d6", "branch"),
    "bl": ("00 00 00 94", "call_return"),
    "blr x0": ("00 00 3f d6", "call_return"),
    "ret": ("c0 03 5f d6", "call_return"),
    "fadd d0, d1, d2": ("20 28 62 1e", "fp_simd"),
    "fmov d0, d1": ("20 40 60 1e", "fp_simd"),
    "add v0.4s, v1.4s, v2.4s": ("20 84 a2 4e", "fp_simd"),
}


def code(*hexes: str) -> bytes:
    return b"".join(bytes.fromhex(h) for h in hexes)


@pytest.fixture
def x86() -> BlockCoster:
    return BlockCoster(X86_64, COSTS)


@pytest.fixture
def a64() -> BlockCoster:
    return BlockCoster(AARCH64, COSTS)


# ---- classes ----

@pytest.mark.parametrize("asm", list(X86))
def test_x86_instruction_class(x86, asm):
    hexes, cls = X86[asm]
    assert x86.cost(code(hexes), BASE) == (1, getattr(COSTS, cls))


@pytest.mark.parametrize("asm", list(A64))
def test_aarch64_instruction_class(a64, asm):
    hexes, cls = A64[asm]
    assert a64.cost(code(hexes), BASE) == (1, getattr(COSTS, cls))


@pytest.mark.parametrize("hexes", ["50", "58", "c9"], ids=["push rax", "pop rax", "leave"])
def test_x86_stack_push_pop_are_memory(x86, hexes):
    assert x86.cost(code(hexes), BASE) == (1, COSTS.memory)


def test_aarch64_literal_load_is_memory(a64):
    assert a64.cost(code("40 00 00 58"), BASE) == (1, COSTS.memory)     # ldr x0, #8


def test_block_cost_is_the_sum_of_its_instructions(x86):
    block = code(X86["add rax, rbx"][0], X86["mov rax, [rbx]"][0], X86["imul rax, rbx"][0],
                 X86["jne rel8"][0])
    assert x86.cost(block, BASE) == (4, COSTS.alu + COSTS.memory + COSTS.mul + COSTS.branch)


def test_costs_follow_the_profile(a64):
    cheap = BlockCoster(AARCH64, InstructionCosts(alu=2, mul=2, div=2, memory=2, branch=2,
                                                  call_return=2, fp_simd=2))
    block = code(A64["sdiv x0, x1, x2"][0], A64["ldr x0, [x1]"][0], A64["ret"][0])
    assert cheap.cost(block, BASE) == (3, 6)
    assert a64.cost(block, BASE) == (3, COSTS.div + COSTS.memory + COSTS.call_return)


# ---- undecodable bytes ----

def test_undecodable_tail_counts_as_one_alu_instruction(x86):
    block = code(X86["add rax, rbx"][0], X86["div rbx"][0], "06 06")     # 06 is invalid in 64-bit
    assert x86.cost(block, BASE) == (3, COSTS.alu + COSTS.div + COSTS.alu)


def test_wholly_undecodable_block_is_one_instruction(a64):
    assert a64.cost(code("00 00 00 00"), BASE) == (1, COSTS.alu)      # udf #0 / invalid


def test_truncated_instruction_at_the_end_is_one_instruction(x86):
    block = code(X86["mov rax, [rbx]"][0], "48 8b")                   # mov cut short
    assert x86.cost(block, BASE) == (2, COSTS.memory + COSTS.alu)


# ---- retired prefixes ----

@pytest.fixture
def x86_block(x86):
    """add (3 bytes, alu) | mov [rbx] (3, memory) | div (3, div) | ret (1, call_return)."""
    block = code(X86["add rax, rbx"][0], X86["mov rax, [rbx]"][0], X86["div rbx"][0],
                 X86["ret"][0])
    x86.cost(block, BASE)
    return x86


@pytest.mark.parametrize("offset, expected", [
    (0, (0, 0)),
    (3, (1, COSTS.alu)),
    (6, (2, COSTS.alu + COSTS.memory)),
    (9, (3, COSTS.alu + COSTS.memory + COSTS.div)),
    (10, (4, COSTS.alu + COSTS.memory + COSTS.div + COSTS.call_return)),
])
def test_retired_counts_the_instructions_before_pc(x86_block, offset, expected):
    assert x86_block.retired(BASE, offset) == expected


def test_retired_with_pc_inside_an_instruction_excludes_it(x86_block):
    assert x86_block.retired(BASE, 4) == (1, COSTS.alu)


def test_retired_on_aarch64(a64):
    block = code(A64["ldr x0, [x1]"][0], A64["mul x0, x1, x2"][0], A64["b.ne"][0])
    a64.cost(block, BASE)
    assert a64.retired(BASE, 8) == (2, COSTS.memory + COSTS.mul)


def test_retired_of_an_unknown_block_is_none(x86):
    assert x86.retired(BASE, 0) is None


def test_retired_counts_an_undecodable_tail_only_when_passed(x86):
    x86.cost(code(X86["add rax, rbx"][0], "06 06"), BASE)
    assert x86.retired(BASE, 3) == (1, COSTS.alu)
    assert x86.retired(BASE, 5) == (2, 2 * COSTS.alu)


def test_blocks_are_remembered_by_address(x86):
    x86.cost(code(X86["add rax, rbx"][0]), BASE)
    x86.cost(code(X86["div rbx"][0]), BASE + 0x100)
    assert x86.retired(BASE, 3) == (1, COSTS.alu)
    assert x86.retired(BASE + 0x100, 3) == (1, COSTS.div)


def test_forget_drops_remembered_blocks(x86_block):
    x86_block.forget()
    assert x86_block.retired(BASE, 3) is None


# ---- real compiler output: the register-only loop of firmware compute_loop ----

OBJDUMP = {"x86_64": "objdump", "aarch64": "aarch64-linux-gnu-objdump"}
SPECS = {"x86_64": X86_64, "aarch64": AARCH64}


def mix_loop(arch: str) -> tuple[bytes, int, int]:
    """(bytes, address, objdump's instruction count) of mix()'s loop: head .. backward branch."""
    path = firmware_binary(arch, "compute_loop")
    tool = shutil.which(OBJDUMP[arch])
    if tool is None:
        pytest.skip(f"{OBJDUMP[arch]} not installed")
    listing = subprocess.run([tool, "-d", "--no-show-raw-insn", str(path)], check=True,
                             capture_output=True, text=True).stdout
    lines = listing.split("<mix>:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    insns = []                                   # (address, mnemonic and operands)
    for line in lines:
        addr, _, text = line.strip().partition(":")
        insns.append((int(addr, 16), text.strip()))
    # the loop's backward conditional branch: its target is the loop head
    for index, (addr, text) in enumerate(insns):
        match = re.search(r"([0-9a-f]+) <mix\+0x[0-9a-f]+>", text)
        if match and int(match.group(1), 16) < addr:
            head, branch_index = int(match.group(1), 16), index
            break
    else:
        pytest.fail("no backward branch in mix()")
    end = insns[branch_index + 1][0]
    count = sum(1 for a, _ in insns if head <= a < end)
    with open(path, "rb") as f:
        elf = ELFFile(f)
        text = elf.get_section_by_name(".text")
        start = head - text["sh_addr"]
        data = text.data()[start:start + end - head]
    return data, head, count


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_compute_loop_body_is_alu_work_and_one_branch(arch):
    data, head, count = mix_loop(arch)
    coster = BlockCoster(SPECS[arch], COSTS)
    assert coster.cost(data, head) == (count, (count - 1) * COSTS.alu + COSTS.branch)
    assert coster.retired(head, len(data)) == (count, (count - 1) * COSTS.alu
                                                      + COSTS.branch)


# ---- differential: the coster against capstone's detailed Python objects, on all of glibc ----
#
# ReferenceCoster is the coster as it was before it read capstone's C records itself: every
# instruction a `CsInsn` in detail mode, classified from `insn.groups` and `insn.operands`.
# BlockCoster must agree with it on every instruction of every firmware program (static glibc
# binaries, so all of glibc's code), on random windows of that code, and on random bytes.

class ReferenceCoster:
    """Per-instruction cycles exactly as capstone's detailed CsInsn objects classify them."""

    _X86_MUL = frozenset({"mul", "imul", "mulx"})
    _X86_DIV = frozenset({"div", "idiv"})
    _X86_SIMD_GROUPS = frozenset({cs_x86.X86_GRP_SSE1, cs_x86.X86_GRP_SSE2, cs_x86.X86_GRP_SSE3,
                                  cs_x86.X86_GRP_SSSE3, cs_x86.X86_GRP_SSE41,
                                  cs_x86.X86_GRP_SSE42, cs_x86.X86_GRP_FPU})
    _A64_MUL = frozenset({"mul", "madd", "msub", "mneg", "smull", "umull", "smulh", "umulh",
                          "smaddl", "umaddl", "smsubl", "umsubl"})
    _A64_DIV = frozenset({"sdiv", "udiv"})
    _X86_STACK = ("push", "pop", "leave")
    _A64_LOADS_STORES = ("ldr", "prfm")
    _A64_SIMD_GROUPS = frozenset({cs_a64.ARM64_GRP_NEON, cs_a64.ARM64_GRP_FPARMV8})
    _CALL_RET = frozenset({capstone.CS_GRP_CALL, capstone.CS_GRP_RET})
    _BRANCH = frozenset({capstone.CS_GRP_JUMP, capstone.CS_GRP_BRANCH_RELATIVE})

    def __init__(self, spec: ArchSpec, costs: InstructionCosts) -> None:
        self.costs = costs
        self.x86 = spec.name == "x86_64"
        self.cs = capstone.Cs(spec.cs_arch, spec.cs_mode)
        self.cs.detail = True

    def insns(self, code: bytes, address: int) -> list[tuple[capstone.CsInsn, int]]:
        """(instruction, cycles) of each instruction capstone decodes from the start of `code`."""
        return [(insn, self.cycles(insn)) for insn in self.cs.disasm(code, address)]

    def prefixes(self, code: bytes, address: int) -> tuple[list[int], list[int]]:
        """(end offsets, cumulative cycles) of the block, undecodable tail as one ALU op."""
        ends: list[int] = []
        cumulative: list[int] = []
        cycles = 0
        for insn, insn_cycles in self.insns(code, address):
            cycles += insn_cycles
            ends.append(insn.address + insn.size - address)
            cumulative.append(cycles)
        if not ends or ends[-1] < len(code):
            cycles += self.costs.alu
            ends.append(len(code))
            cumulative.append(cycles)
        return ends, cumulative

    def cycles(self, insn: capstone.CsInsn) -> int:
        """The class rules, verbatim from the detail-mode coster."""
        c = self.costs
        groups = set(insn.groups)
        if groups & self._CALL_RET:
            return c.call_return
        if groups & self._BRANCH:
            return c.branch
        name = insn.mnemonic
        if self.x86:
            if name in self._X86_DIV:
                return c.div
            if name in self._X86_MUL:
                return c.mul
            if name.startswith(self._X86_STACK) or (
                    name != "lea" and not name.startswith("nop") and
                    any(op.type == cs_x86.X86_OP_MEM for op in insn.operands)):
                return c.memory
            return c.fp_simd if groups & self._X86_SIMD_GROUPS else c.alu
        if name in self._A64_DIV:
            return c.div
        if name in self._A64_MUL:
            return c.mul
        if name.startswith(self._A64_LOADS_STORES) or any(op.type == cs_a64.ARM64_OP_MEM
                                                          for op in insn.operands):
            return c.memory
        return c.fp_simd if name.startswith("f") or groups & self._A64_SIMD_GROUPS else c.alu


CLASS_OF = {getattr(COSTS, name): name for name in
            ("alu", "mul", "div", "memory", "branch", "call_return", "fp_simd")}
ARCHES = ["x86_64", "aarch64"]
STEP = {"x86_64": 1, "aarch64": 4}           # where decoding resumes after a bad instruction


@dataclass
class Run:
    """Consecutive decoded instructions of real code, with the reference's verdict on each."""

    address: int
    code: bytes                              # exactly the bytes of the instructions
    sizes: list[int]
    cycles: list[int]
    text: list[str]                          # "mnemonic op_str", for messages


def _exec_ranges(path: Path) -> tuple[list[tuple[int, bytes]], list[tuple[str, int, int]]]:
    """Executable sections (address, bytes) and function symbols (name, address, size)."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        sections = [(s["sh_addr"], s.data()) for s in elf.iter_sections()
                    if s["sh_flags"] & SH_FLAGS.SHF_EXECINSTR and s["sh_type"] == "SHT_PROGBITS"]
        symtab = elf.get_section_by_name(".symtab")
        functions = [] if symtab is None else [
            (sym.name, sym["st_value"], sym["st_size"]) for sym in symtab.iter_symbols()
            if sym["st_info"]["type"] in ("STT_FUNC", "STT_GNU_IFUNC") and sym["st_size"]]
    return sections, functions


def _runs_of(reference: ReferenceCoster, verdicts: dict[bytes, int], arch: str, address: int,
             code: bytes) -> list[Run]:
    """Decode `code` linearly, skipping undecodable bytes, into runs of decoded instructions.

    Boundaries come from capstone's light decoder; the reference classifies each distinct
    encoding once, decoded on its own at its first address (its class depends on its bytes
    only -- the window and random-bytes tests check the reference on whole blocks as well).
    """
    runs = []
    offset = 0
    while offset < len(code):
        decoded = list(reference.cs.disasm_lite(code[offset:], address + offset))
        if decoded:
            sizes, cycles = [], []
            for insn_address, size, _, _ in decoded:
                encoding = code[insn_address - address:insn_address - address + size]
                if encoding not in verdicts:
                    (insn, verdict), = reference.insns(encoding, insn_address)
                    assert insn.size == size
                    verdicts[encoding] = verdict
                sizes.append(size)
                cycles.append(verdicts[encoding])
            length = sum(sizes)
            runs.append(Run(address + offset, code[offset:offset + length], sizes, cycles,
                            [f"{mnemonic} {op_str}" for _, _, mnemonic, op_str in decoded]))
            offset += length
        offset += STEP[arch] if offset < len(code) else 0
    return runs


@lru_cache(maxsize=None)
def firmware_corpus(arch: str) -> tuple[Run, ...]:
    """All code of hello, plus every function of the other programs that hello lacks."""
    programs = sorted(p for p in (FIRMWARE_BUILD / arch).glob("*") if p.is_file())
    hello = FIRMWARE_BUILD / arch / "hello"
    if hello not in programs:
        pytest.skip(f"{hello} not built (run `make -C firmware -j2`)")
    reference = ReferenceCoster(SPECS[arch], COSTS)
    verdicts: dict[bytes, int] = {}
    runs: list[Run] = []
    sections, functions = _exec_ranges(hello)
    for address, data in sections:
        runs += _runs_of(reference, verdicts, arch, address, data)
    seen = {(name, size) for name, _, size in functions}
    for program in programs:
        if program == hello:
            continue
        sections, functions = _exec_ranges(program)
        starts = set()
        for name, start, size in functions:
            if (name, size) in seen or start in starts:
                continue                     # the same glibc function, only relocated
            seen.add((name, size))
            starts.add(start)
            for base, data in sections:
                if base <= start and start + size <= base + len(data):
                    runs += _runs_of(reference, verdicts, arch, start,
                                     data[start - base:start + size - base])
    return tuple(runs)


def assert_same(coster: BlockCoster, address: int, code: bytes, ends: list[int],
                cumulative: list[int], what: str) -> None:
    """The coster's block total and retired() at and inside every instruction match."""
    assert coster.cost(code, address) == (len(ends), cumulative[-1]), what
    before = (0, 0)
    start = 0
    for index, end in enumerate(ends):
        at_end = (index + 1, cumulative[index])
        if coster.retired(address, end) != at_end or (
                end - start > 1 and coster.retired(address, end - 1) != before):
            got = coster.retired(address, end)
            pytest.fail(f"{what}: instruction {index} (bytes {code[start:end].hex()}) "
                        f"expected {at_end}, got {got}")
        before, start = at_end, end


@pytest.mark.parametrize("arch", ARCHES)
def test_every_firmware_instruction_is_classed_as_with_capstone_detail(arch):
    runs = firmware_corpus(arch)
    coster = BlockCoster(SPECS[arch], COSTS)
    mnemonics = set()
    for run in runs:
        mnemonics.update(text.split(" ", 1)[0] for text in run.text)
        # blocks as the CPU forms them: up to a branch, call or return (or 64 instructions)
        first = offset = 0
        for index, insn_cycles in enumerate(run.cycles):
            offset += run.sizes[index]
            if (insn_cycles in (COSTS.branch, COSTS.call_return) or index - first == 63
                    or index == len(run.cycles) - 1):
                start = offset - sum(run.sizes[first:index + 1])
                cycles = run.cycles[first:index + 1]
                got_n, got_cycles = coster.cost(run.code[start:offset], run.address + start)
                if (got_n, got_cycles) != (len(cycles), sum(cycles)):
                    block, end, total, got = run.address + start, 0, 0, []
                    for size in run.sizes[first:index + 1]:
                        end += size
                        retired = coster.retired(block, end)
                        got.append(CLASS_OF.get(retired[1] - total, retired))
                        total = retired[1]
                    pytest.fail(f"block at {block:#x} {run.text[first:index + 1]}: "
                                f"expected {[CLASS_OF[c] for c in cycles]}, got {got}")
                first = index + 1
    assert len(mnemonics) > 150                      # really glibc, not an empty corpus


@pytest.mark.parametrize("arch", ARCHES)
def test_random_windows_of_firmware_code_match_capstone_detail(arch):
    runs = [run for run in firmware_corpus(arch) if len(run.sizes) >= 2]
    rng = random.Random(f"windows-{arch}")
    coster = BlockCoster(SPECS[arch], COSTS)
    for _ in range(3000):                   # whole instructions: the reference's own verdicts
        run = rng.choice(runs)
        first = rng.randrange(len(run.sizes))
        last = min(len(run.sizes), first + rng.randint(1, 64))
        start = sum(run.sizes[:first])
        ends, cumulative, end, cycles = [], [], start, 0
        for size, insn_cycles in zip(run.sizes[first:last], run.cycles[first:last]):
            end += size
            cycles += insn_cycles
            ends.append(end - start)
            cumulative.append(cycles)
        assert_same(coster, run.address + start, run.code[start:end], ends, cumulative,
                    f"window {run.text[first:last]}")
    reference = ReferenceCoster(SPECS[arch], COSTS)
    for _ in range(1000):                   # any byte offset and length: misaligned, cut short
        run = rng.choice(runs)
        start = rng.randrange(len(run.code))
        code = run.code[start:start + rng.randint(1, 256)]
        address = run.address + start
        assert_same(coster, address, code, *reference.prefixes(code, address),
                    f"bytes {code.hex()} at {address:#x}")


@pytest.mark.parametrize("arch", ARCHES)
def test_random_bytes_match_capstone_detail(arch):
    """Encodings glibc never uses (AVX-512, SVE, system instructions, garbage) agree too."""
    rng = random.Random(f"bytes-{arch}")
    coster = BlockCoster(SPECS[arch], COSTS)
    reference = ReferenceCoster(SPECS[arch], COSTS)
    for _ in range(4000):
        code = rng.randbytes(rng.randint(1, 64))
        address = rng.randrange(1 << 47)
        assert_same(coster, address, code, *reference.prefixes(code, address),
                    f"bytes {code.hex()} at {address:#x}")


def test_decoding_edge_cases_match_capstone_detail():
    for spec in (X86_64, AARCH64):
        coster = BlockCoster(spec, COSTS)
        reference = ReferenceCoster(spec, COSTS)
        for code in (b"", b"\x90", bytearray(b"\x90\x90"), b"\x1f\x20\x03\xd5" * 3,
                     b"\x00" * 3):
            ends, cumulative = reference.prefixes(bytes(code), BASE)
            assert_same(coster, BASE, code, ends, cumulative, f"{spec.name} {bytes(code).hex()}")


def test_blocks_are_remembered_under_the_key_they_are_given(x86):
    x86.cost(bytes.fromhex("4801d8" "c3"), BASE, key=0x7000)         # add; ret
    assert x86.retired(BASE, 3) is None                                # not under the address
    assert x86.retired(0x7000, 3) == (1, COSTS.alu)
    assert x86.ends_with_branch(0x7000)
    x86.cost(bytes.fromhex("4801d8" "4801d8"), BASE, key=0x8000)      # no branch at the end
    assert not x86.ends_with_branch(0x8000)
    x86.forget_keys(0x7000, 0x7001)
    assert x86.retired(0x7000, 3) is None and x86.retired(0x8000, 3) == (1, COSTS.alu)


def test_instruction_ends_counts_whole_instructions(x86):
    code = bytes.fromhex("4801d8" "90" "48f7f1")                        # add; nop; div rcx
    assert [x86.instruction_ends(code, BASE, n) for n in (1, 2, 3)] == [3, 4, 7]
    with pytest.raises(ValueError):
        x86.instruction_ends(code, BASE, 4)
