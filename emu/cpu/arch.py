"""Per-architecture facts: Unicorn modes, register ids, syscall ABI, CPU model and HWCAP."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import capstone
import unicorn
from unicorn import arm64_const as a64
from unicorn import x86_const as x86

# AArch64 HWCAP bits (Linux arch/arm64/include/uapi/asm/hwcap.h) for features
# that Unicorn's "max" CPU model implements; SVE is deliberately not offered.
_A64_HWCAP = {
    "fp": 1 << 0, "asimd": 1 << 1, "aes": 1 << 3, "pmull": 1 << 4, "sha1": 1 << 5,
    "sha2": 1 << 6, "crc32": 1 << 7, "atomics": 1 << 8, "fphp": 1 << 9, "asimdhp": 1 << 10,
    "asimdrdm": 1 << 12, "jscvt": 1 << 13, "fcma": 1 << 14, "lrcpc": 1 << 15,
    "dcpop": 1 << 16, "sha3": 1 << 17, "sm3": 1 << 18, "sm4": 1 << 19, "asimddp": 1 << 20,
    "sha512": 1 << 21,
}


@dataclass(frozen=True)
class ArchSpec:
    """Everything the engine and kernel need to know about one guest architecture."""

    name: str                      # "x86_64" or "aarch64"
    uc_arch: int
    uc_mode: int
    cpu_model: int
    elf_machine: str               # pyelftools e_machine name
    pc: int
    sp: int
    syscall_nr: int
    syscall_args: tuple[int, ...]
    syscall_ret: int
    tls: int                       # FS base / TPIDR_EL0
    cs_arch: int
    cs_mode: int
    platform: str                  # AT_PLATFORM string
    exec_registers: tuple[tuple[int, int], ...] = ()    # (register, value) a new image starts with

    @property
    def hwcap(self) -> int:
        """AT_HWCAP for this CPU model."""
        return _x86_hwcap() if self.name == "x86_64" else sum(_A64_HWCAP.values())


X86_64 = ArchSpec(
    name="x86_64", uc_arch=unicorn.UC_ARCH_X86, uc_mode=unicorn.UC_MODE_64,
    cpu_model=x86.UC_CPU_X86_QEMU64, elf_machine="EM_X86_64",
    pc=x86.UC_X86_REG_RIP, sp=x86.UC_X86_REG_RSP, syscall_nr=x86.UC_X86_REG_RAX,
    syscall_args=(x86.UC_X86_REG_RDI, x86.UC_X86_REG_RSI, x86.UC_X86_REG_RDX,
                  x86.UC_X86_REG_R10, x86.UC_X86_REG_R8, x86.UC_X86_REG_R9),
    syscall_ret=x86.UC_X86_REG_RAX, tls=x86.UC_X86_REG_FS_BASE,
    cs_arch=capstone.CS_ARCH_X86, cs_mode=capstone.CS_MODE_64, platform="x86_64",
    # Linux's fpstate_init (arch/x86/kernel/fpu/core.c): x87 control word 0x037F (all
    # exceptions masked, 64-bit precision, round to nearest), an empty x87 stack, and
    # MXCSR_DEFAULT 0x1F80 (all SSE exceptions masked, round to nearest)
    exec_registers=((x86.UC_X86_REG_FPCW, 0x037F), (x86.UC_X86_REG_FPSW, 0),
                    (x86.UC_X86_REG_FPTAG, 0xFFFF), (x86.UC_X86_REG_MXCSR, 0x1F80),
                    *((x86.UC_X86_REG_XMM0 + i, 0) for i in range(16))),
)

AARCH64 = ArchSpec(
    name="aarch64", uc_arch=unicorn.UC_ARCH_ARM64, uc_mode=unicorn.UC_MODE_ARM,
    cpu_model=a64.UC_CPU_ARM64_MAX, elf_machine="EM_AARCH64",
    pc=a64.UC_ARM64_REG_PC, sp=a64.UC_ARM64_REG_SP, syscall_nr=a64.UC_ARM64_REG_X8,
    syscall_args=(a64.UC_ARM64_REG_X0, a64.UC_ARM64_REG_X1, a64.UC_ARM64_REG_X2,
                  a64.UC_ARM64_REG_X3, a64.UC_ARM64_REG_X4, a64.UC_ARM64_REG_X5),
    syscall_ret=a64.UC_ARM64_REG_X0, tls=a64.UC_ARM64_REG_TPIDR_EL0,
    cs_arch=capstone.CS_ARCH_ARM64, cs_mode=capstone.CS_MODE_ARM, platform="aarch64",
    # Linux starts a new image with FPCR 0 (round to nearest, no traps, no flush-to-zero)
    # and FPSR 0 (fpsimd_flush_thread), and the vector registers zero
    exec_registers=((a64.UC_ARM64_REG_FPCR, 0), (a64.UC_ARM64_REG_FPSR, 0),
                    *((a64.UC_ARM64_REG_V0 + i, 0) for i in range(32))),
)

ARCHES = {spec.name: spec for spec in (X86_64, AARCH64)}

# Registers a signal frame saves and rt_sigreturn restores, by the names emu/kernel/sigframe.py
# uses. x86 fp0-fp7 are the physical x87 registers (80 bits each), fptag the full tag word.
SIGNAL_REGISTERS: dict[str, dict[str, int]] = {
    "x86_64": {
        **{name: getattr(x86, f"UC_X86_REG_{name.upper()}") for name in (
            "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rdi", "rsi", "rbp", "rbx",
            "rdx", "rax", "rcx", "rsp", "rip", "eflags", "mxcsr", "fop", "fip", "fdp")},
        "fcw": x86.UC_X86_REG_FPCW, "fsw": x86.UC_X86_REG_FPSW, "fptag": x86.UC_X86_REG_FPTAG,
        **{f"fp{i}": x86.UC_X86_REG_FP0 + i for i in range(8)},
        **{f"xmm{i}": x86.UC_X86_REG_XMM0 + i for i in range(16)},
    },
    "aarch64": {
        **{f"x{i}": getattr(a64, f"UC_ARM64_REG_X{i}") for i in range(31)},
        "sp": a64.UC_ARM64_REG_SP, "pc": a64.UC_ARM64_REG_PC, "nzcv": a64.UC_ARM64_REG_NZCV,
        "fpsr": a64.UC_ARM64_REG_FPSR, "fpcr": a64.UC_ARM64_REG_FPCR,
        **{f"v{i}": a64.UC_ARM64_REG_V0 + i for i in range(32)},
    },
}
X86_FP_REGISTERS = range(x86.UC_X86_REG_FP0, x86.UC_X86_REG_FP7 + 1)
ELF_MACHINES = {spec.elf_machine: spec for spec in (X86_64, AARCH64)}


@lru_cache(maxsize=1)
def _x86_hwcap() -> int:
    """CPUID.1:EDX of the emulated x86 model, which Linux reports as AT_HWCAP."""
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.ctl_set_cpu_model(X86_64.cpu_model)
    uc.mem_map(0x1000, 0x1000)
    uc.mem_write(0x1000, b"\x0f\xa2")          # cpuid
    uc.reg_write(x86.UC_X86_REG_EAX, 1)
    uc.emu_start(0x1000, 0x1002)
    return uc.reg_read(x86.UC_X86_REG_EDX)
