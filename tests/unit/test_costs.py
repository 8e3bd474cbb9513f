"""BlockCoster: instruction classes priced from the profile, prefix costs for partly retired blocks."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from elftools.elf.elffile import ELFFile

from emu.cpu.arch import AARCH64, X86_64
from emu.cpu.costs import BlockCoster
from emu.profile import InstructionCosts

from .support import firmware_binary

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
    assert x86_block.retired(BASE, BASE + offset) == expected


def test_retired_with_pc_inside_an_instruction_excludes_it(x86_block):
    assert x86_block.retired(BASE, BASE + 4) == (1, COSTS.alu)


def test_retired_on_aarch64(a64):
    block = code(A64["ldr x0, [x1]"][0], A64["mul x0, x1, x2"][0], A64["b.ne"][0])
    a64.cost(block, BASE)
    assert a64.retired(BASE, BASE + 8) == (2, COSTS.memory + COSTS.mul)


def test_retired_of_an_unknown_block_is_none(x86):
    assert x86.retired(BASE, BASE) is None


def test_retired_counts_an_undecodable_tail_only_when_passed(x86):
    x86.cost(code(X86["add rax, rbx"][0], "06 06"), BASE)
    assert x86.retired(BASE, BASE + 3) == (1, COSTS.alu)
    assert x86.retired(BASE, BASE + 5) == (2, 2 * COSTS.alu)


def test_blocks_are_remembered_by_address(x86):
    x86.cost(code(X86["add rax, rbx"][0]), BASE)
    x86.cost(code(X86["div rbx"][0]), BASE + 0x100)
    assert x86.retired(BASE, BASE + 3) == (1, COSTS.alu)
    assert x86.retired(BASE + 0x100, BASE + 0x103) == (1, COSTS.div)


def test_forget_drops_remembered_blocks(x86_block):
    x86_block.forget()
    assert x86_block.retired(BASE, BASE + 3) is None


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
    assert coster.retired(head, head + len(data)) == (count, (count - 1) * COSTS.alu
                                                      + COSTS.branch)
