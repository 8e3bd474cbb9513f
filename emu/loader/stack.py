"""The initial process stack: argc, argv, envp and the auxiliary vector (System V ABI)."""
from __future__ import annotations

import struct
from dataclasses import dataclass

from emu.loader.elf import ElfImage
from emu.mm.uaccess import UserMemory

# auxv types (Linux include/uapi/linux/auxvec.h)
AT_NULL, AT_PHDR, AT_PHENT, AT_PHNUM, AT_PAGESZ, AT_BASE, AT_FLAGS, AT_ENTRY = 0, 3, 4, 5, 6, 7, 8, 9
AT_UID, AT_EUID, AT_GID, AT_EGID, AT_PLATFORM, AT_HWCAP, AT_CLKTCK = 11, 12, 13, 14, 15, 16, 17
AT_SECURE, AT_RANDOM, AT_HWCAP2, AT_EXECFN = 23, 25, 26, 31


@dataclass(frozen=True)
class ProcessIdentity:
    """What the auxiliary vector tells a new program about its process and CPU."""

    uid: int
    gid: int
    hwcap: int
    platform: str
    page_size: int = 4096


def build_initial_stack(mem: UserMemory, stack_top: int, image: ElfImage, argv: list[str],
                        envp: list[str], execfn: str, who: ProcessIdentity,
                        random16: bytes) -> int:
    """Write argv, envp, auxv and their strings below `stack_top` (AT_RANDOM pointing at
    `random16`, the run's seeded bytes); returns the initial SP."""
    assert len(random16) == 16, "AT_RANDOM is 16 bytes"
    sp = stack_top

    def push_bytes(data: bytes) -> int:
        nonlocal sp
        sp -= len(data)
        mem.write(sp, data)
        return sp

    execfn_addr = push_bytes(execfn.encode() + b"\0")
    env_addrs = [push_bytes(e.encode() + b"\0") for e in reversed(envp)][::-1]
    arg_addrs = [push_bytes(a.encode() + b"\0") for a in reversed(argv)][::-1]
    platform_addr = push_bytes(who.platform.encode() + b"\0")
    random_addr = push_bytes(random16)      # from the run's --seed: reproducible
    auxv = [
        (AT_PHDR, image.phdr_vaddr), (AT_PHENT, image.phentsize), (AT_PHNUM, image.phnum),
        (AT_PAGESZ, who.page_size), (AT_BASE, 0), (AT_FLAGS, 0), (AT_ENTRY, image.entry),
        (AT_UID, who.uid), (AT_EUID, who.uid), (AT_GID, who.gid), (AT_EGID, who.gid),
        (AT_PLATFORM, platform_addr), (AT_HWCAP, who.hwcap), (AT_HWCAP2, 0), (AT_CLKTCK, 100),
        (AT_SECURE, 0), (AT_RANDOM, random_addr), (AT_EXECFN, execfn_addr), (AT_NULL, 0),
    ]
    words = [len(argv), *arg_addrs, 0, *env_addrs, 0]
    for key, value in auxv:
        words += [key, value]
    sp = (sp - 8 * len(words)) & ~0xF          # 16-byte aligned at argc
    mem.write(sp, struct.pack(f"<{len(words)}Q", *words))
    return sp
