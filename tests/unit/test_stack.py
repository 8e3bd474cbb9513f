"""build_initial_stack: the System V process entry stack (argc, argv, envp, auxv, strings)."""
from __future__ import annotations

import struct

import pytest

from emu.loader.elf import ElfImage, Segment
from emu.loader.stack import (AT_EGID, AT_ENTRY, AT_EUID, AT_EXECFN, AT_GID, AT_HWCAP, AT_NULL,
                              AT_PAGESZ, AT_PHDR, AT_PHENT, AT_PHNUM, AT_PLATFORM, AT_RANDOM,
                              AT_SECURE, AT_UID, ProcessIdentity, build_initial_stack)
from emu.mm.uaccess import UserMemory
from emu.mm.vmspace import PROT_EXEC, PROT_READ, PROT_WRITE, STACK_TOP

IMAGE = ElfImage(path="/tmp/prog", arch="x86_64", entry=0x401630, phdr_vaddr=0x400040,
                 phentsize=56, phnum=10,
                 segments=(Segment(0x400000, 0x1000, 0, 0x1000, PROT_READ | PROT_EXEC),),
                 load_bias=0)
WHO = ProcessIdentity(uid=1000, gid=100, hwcap=0x178BFBFF, platform="x86_64")


class FakeMemory:
    """Collects what is written; reading an address that was never written is a test failure."""

    def __init__(self) -> None:
        self.bytes: dict[int, int] = {}

    def write(self, vaddr: int, data: bytes) -> None:
        for i, b in enumerate(bytes(data)):
            self.bytes[vaddr + i] = b

    def read(self, vaddr: int, length: int) -> bytes:
        missing = [hex(a) for a in range(vaddr, vaddr + length) if a not in self.bytes]
        assert not missing, f"read of unwritten stack bytes {missing[:4]}"
        return bytes(self.bytes[a] for a in range(vaddr, vaddr + length))

    def u64(self, vaddr: int) -> int:
        return struct.unpack("<Q", self.read(vaddr, 8))[0]

    def cstring(self, vaddr: int) -> str:
        out = bytearray()
        while (b := self.read(vaddr + len(out), 1)) != b"\0":
            out += b
        return out.decode()


class Stack:
    """The parsed initial stack."""

    def __init__(self, mem: FakeMemory, sp: int) -> None:
        self.mem, self.sp = mem, sp
        self.argc = mem.u64(sp)
        at = sp + 8
        self.argv_ptrs = [mem.u64(at + 8 * i) for i in range(self.argc)]
        at += 8 * self.argc
        assert mem.u64(at) == 0, "argv not NULL-terminated"
        at += 8
        self.envp_ptrs = []
        while (p := mem.u64(at)) != 0:
            self.envp_ptrs.append(p)
            at += 8
        at += 8
        self.auxv: dict[int, int] = {}
        self.auxv_order: list[int] = []
        while True:
            key, value = mem.u64(at), mem.u64(at + 8)
            at += 16
            if key == AT_NULL:
                break
            assert key not in self.auxv, f"auxv key {key} twice"
            self.auxv[key] = value
            self.auxv_order.append(key)
        self.end_of_vectors = at

    @property
    def argv(self) -> list[str]:
        return [self.mem.cstring(p) for p in self.argv_ptrs]

    @property
    def envp(self) -> list[str]:
        return [self.mem.cstring(p) for p in self.envp_ptrs]


SEEDED = bytes(range(0xA0, 0xB0))


def build(argv=("/bin/prog", "one", "two"), envp=("HOME=/root", "LANG=C"), execfn="/bin/prog",
          top=STACK_TOP, image=IMAGE, who=WHO, random16=SEEDED) -> Stack:
    mem = FakeMemory()
    sp = build_initial_stack(mem, top, image, list(argv), list(envp), execfn, who, random16)
    return Stack(mem, sp)


def test_sp_is_16_byte_aligned_and_below_the_top():
    stack = build()
    assert stack.sp % 16 == 0
    assert stack.sp < STACK_TOP


@pytest.mark.parametrize("argv", [[], ["a"], ["ab", "c"], ["x" * 7] * 3, ["prog"] * 9])
@pytest.mark.parametrize("envp", [[], ["A=1"], ["LONGER_NAME=value", "B="]])
def test_alignment_for_any_number_and_length_of_strings(argv, envp):
    stack = build(argv=argv, envp=envp)
    assert stack.sp % 16 == 0
    assert stack.argv == argv and stack.envp == envp


def test_argc_and_argv_strings():
    stack = build()
    assert stack.argc == 3
    assert stack.argv == ["/bin/prog", "one", "two"]


def test_envp_strings():
    assert build().envp == ["HOME=/root", "LANG=C"]


def test_empty_argv_and_envp():
    stack = build(argv=(), envp=())
    assert (stack.argc, stack.argv_ptrs, stack.envp_ptrs) == (0, [], [])


def test_non_ascii_strings_are_utf8():
    assert build(argv=("prog", "héllo")).argv == ["prog", "héllo"]


def test_strings_and_vectors_all_lie_between_sp_and_the_top():
    stack = build()
    for p in stack.argv_ptrs + stack.envp_ptrs + [stack.auxv[AT_EXECFN], stack.auxv[AT_RANDOM],
                                                  stack.auxv[AT_PLATFORM]]:
        assert stack.end_of_vectors <= p < STACK_TOP
    assert max(stack.mem.bytes) < STACK_TOP
    assert min(stack.mem.bytes) == stack.sp


def test_strings_do_not_overlap():
    stack = build()
    spans = []
    for p in stack.argv_ptrs + stack.envp_ptrs + [stack.auxv[AT_EXECFN], stack.auxv[AT_PLATFORM]]:
        spans.append((p, p + len(stack.mem.cstring(p).encode()) + 1))
    spans.append((stack.auxv[AT_RANDOM], stack.auxv[AT_RANDOM] + 16))
    spans.sort()
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))


def test_auxv_describes_the_image_and_page_size():
    aux = build().auxv
    assert aux[AT_PAGESZ] == 4096
    assert aux[AT_ENTRY] == IMAGE.entry
    assert aux[AT_PHDR] == IMAGE.phdr_vaddr
    assert aux[AT_PHENT] == 56
    assert aux[AT_PHNUM] == 10


def test_auxv_identity_and_cpu():
    aux = build().auxv
    assert (aux[AT_UID], aux[AT_EUID], aux[AT_GID], aux[AT_EGID]) == (1000, 1000, 100, 100)
    assert aux[AT_HWCAP] == WHO.hwcap
    assert aux[AT_SECURE] == 0


def test_at_platform_names_the_platform():
    stack = build()
    assert stack.mem.cstring(stack.auxv[AT_PLATFORM]) == "x86_64"


def test_at_execfn_names_the_program():
    stack = build(argv=("prog",), execfn="/usr/bin/prog")
    assert stack.mem.cstring(stack.auxv[AT_EXECFN]) == "/usr/bin/prog"


def test_at_random_points_to_the_seeded_bytes():
    stack = build()
    assert stack.mem.read(stack.auxv[AT_RANDOM], 16) == SEEDED


def test_at_random_comes_from_the_seed_not_the_program():
    a, b, c = build(), build(execfn="/bin/other"), build(random16=bytes(16))
    bytes_of = lambda s: s.mem.read(s.auxv[AT_RANDOM], 16)
    assert bytes_of(a) == bytes_of(b) == SEEDED
    assert bytes_of(c) == bytes(16)


def test_whole_stack_is_deterministic():
    assert build().mem.bytes == build().mem.bytes


def test_stack_below_an_arbitrary_top():
    top = 0x7FF0_0000_0000 + 0x123            # not aligned: the result still is
    stack = build(top=top)
    assert stack.sp % 16 == 0 and max(stack.mem.bytes) < top
    assert stack.argv == ["/bin/prog", "one", "two"]


def test_page_size_comes_from_the_identity():
    who = ProcessIdentity(uid=0, gid=0, hwcap=0, platform="aarch64", page_size=16384)
    assert build(who=who).auxv[AT_PAGESZ] == 16384


def test_stack_written_through_user_memory(mem):
    mem.map_anon(STACK_TOP - 4 * 4096, 4, PROT_READ | PROT_WRITE, "[stack]")
    user = UserMemory(mem.space, mem.ram, mem.fault_in)
    sp = build_initial_stack(user, STACK_TOP, IMAGE, ["prog", "arg"], ["K=V"], "/prog", WHO, SEEDED)
    assert sp % 16 == 0
    assert user.read_u64(sp) == 2
    assert user.read_cstring(user.read_u64(sp + 8)) == b"prog"
    assert user.read_cstring(user.read_u64(sp + 16)) == b"arg"
    assert user.read_u64(sp + 24) == 0
    assert user.read_cstring(user.read_u64(sp + 32)) == b"K=V"
