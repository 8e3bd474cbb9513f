"""Signal frames: the bytes Linux puts on the stack to run a handler, per architecture.

Pure layout: registers come in and go out as dicts keyed by name (see
`emu.cpu.arch.SIGNAL_REGISTERS`); the caller writes the frame to guest memory,
loads the handler's registers, and on rt_sigreturn hands back a reader of
guest memory to parse the frame.

x86-64 (arch/x86/include/asm/sigframe.h): `struct rt_sigframe { char *pretcode;
struct ucontext uc; struct siginfo info; }` with an fxsave area (512 bytes,
64-aligned) above it that `uc_mcontext.fpstate` points to. The handler is
entered as if called: (rsp + 8) is 16-byte aligned and [rsp] is the restorer.

AArch64 (arch/arm64/kernel/signal.c): `struct rt_sigframe { struct siginfo info;
struct ucontext uc; }`, the fpsimd_context record and the end record in
`uc_mcontext.__reserved`, and a frame record {x29, x30} above it that the new
x29 points to; the handler returns through x30 (the restorer).
"""
from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from emu.kernel.signals import AltStack, SigInfo

Registers = dict[str, int]
ReadMemory = Callable[[int, int], bytes]


class BadFrame(Exception):
    """rt_sigreturn found no valid signal frame (the thread gets SIGSEGV)."""


@dataclass
class Delivery:
    """What one signal frame records: the interrupted state and the handler to run."""

    info: SigInfo
    siginfo: bool           # SA_SIGINFO: the handler gets (signo, &info, &uc)
    handler: int
    restorer: int
    mask: int               # uc_sigmask: restored by rt_sigreturn
    stack: bytes            # uc_stack: the stack_t as it was (restored by rt_sigreturn)
    regs: Registers         # the interrupted registers


@dataclass
class Built:
    """A frame ready to go: `data` belongs at `start`; the handler runs with `regs`."""

    start: int
    data: bytes
    regs: Registers


@dataclass
class Restored:
    """What rt_sigreturn takes back from a frame."""

    regs: Registers
    mask: int
    stack: AltStack


def _align_down(value: int, align: int) -> int:
    return value & ~(align - 1)


# ---------------------------------------------------------------- x86-64

X86_GPRS = ("r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rdi", "rsi", "rbp", "rbx",
            "rdx", "rax", "rcx", "rsp", "rip", "eflags")     # struct sigcontext order
X86_REDZONE = 128
X86_UC = 8                                  # offsetof(rt_sigframe, uc)
X86_UC_STACK = X86_UC + 16
X86_MCONTEXT = X86_UC + 40                  # struct sigcontext, 256 bytes
X86_FPSTATE_PTR = X86_MCONTEXT + 184
X86_SIGMASK = X86_MCONTEXT + 256            # uc_sigmask
X86_INFO = X86_SIGMASK + 8                  # 312
X86_FRAME_SIZE = X86_INFO + SigInfo.SIZE    # 440
FXSAVE_SIZE = 512
X86_USER_CS, X86_USER_DS = 0x33, 0x2B
UC_SIGCONTEXT_SS, UC_STRICT_RESTORE_SS = 0x2, 0x4
X86_FLAGS_TF, X86_FLAGS_DF, X86_FLAGS_RF = 0x100, 0x400, 0x10000
FIX_EFLAGS = 0x50DD5        # AC OF DF TF SF ZF AF PF CF RF: what sigreturn may change
_X86_MC = struct.Struct("<18Q4H5Q64x")
_FX_HEAD = struct.Struct("<HHBxHQQII")


def fxsave(regs: Registers) -> bytes:
    """The 512-byte fxsave image of the x87/SSE state (ST(i) in stack order, abridged tags)."""
    top = (regs["fsw"] >> 11) & 7
    ftw = sum(1 << i for i in range(8) if (regs["fptag"] >> (2 * i)) & 3 != 3)
    out = bytearray(_FX_HEAD.pack(regs["fcw"], regs["fsw"], ftw, regs["fop"], regs["fip"],
                                  regs["fdp"], regs["mxcsr"], 0xFFFF))
    for i in range(8):
        out += (regs[f"fp{(top + i) & 7}"] & ((1 << 80) - 1)).to_bytes(16, "little")
    for i in range(16):
        out += regs[f"xmm{i}"].to_bytes(16, "little")
    return bytes(out.ljust(FXSAVE_SIZE, b"\0"))


def fxrstor(data: bytes) -> Registers:
    """Registers from an fxsave image (the inverse of `fxsave`)."""
    fcw, fsw, ftw, fop, fip, fdp, mxcsr, _ = _FX_HEAD.unpack_from(data)
    top = (fsw >> 11) & 7
    regs = {"fcw": fcw, "fsw": fsw, "fop": fop, "fip": fip, "fdp": fdp, "mxcsr": mxcsr,
            "fptag": sum(0 if ftw >> i & 1 else 3 << (2 * i) for i in range(8))}
    for i in range(8):
        regs[f"fp{(top + i) & 7}"] = int.from_bytes(data[32 + 16 * i:32 + 16 * i + 10], "little")
    for i in range(16):
        regs[f"xmm{i}"] = int.from_bytes(data[160 + 16 * i:176 + 16 * i], "little")
    return regs


class X86_64Frames:
    """The x86-64 rt_sigframe."""

    syscall_insn_size = 2

    def build(self, sp: int, use_altstack: AltStack | None, d: Delivery) -> Built:
        """The frame below `sp` (minus the red zone), or at the top of `use_altstack`."""
        top = sp - X86_REDZONE
        if use_altstack is not None:
            top = use_altstack.sp + use_altstack.size
        fpstate = _align_down(top - FXSAVE_SIZE, 64)
        frame = _align_down(fpstate - X86_FRAME_SIZE, 16) - 8
        r = d.regs
        info = d.info
        data = bytearray(fpstate + FXSAVE_SIZE - frame)
        struct.pack_into("<QQQ", data, 0, d.restorer, UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS, 0)
        data[X86_UC_STACK:X86_UC_STACK + AltStack.SIZE] = d.stack
        _X86_MC.pack_into(data, X86_MCONTEXT, *(r[n] for n in X86_GPRS), X86_USER_CS, 0, 0,
                          X86_USER_DS, info.error_code, info.trapno, d.mask,
                          info.addr if info.trapno == 14 else 0, fpstate)
        struct.pack_into("<Q", data, X86_SIGMASK, d.mask)
        data[X86_INFO:X86_INFO + SigInfo.SIZE] = info.pack()
        data[fpstate - frame:] = fxsave(r)
        regs = {"rdi": info.signo, "rsi": frame + X86_INFO, "rdx": frame + X86_UC, "rax": 0,
                "rsp": frame, "rip": d.handler,
                "eflags": r["eflags"] & ~(X86_FLAGS_DF | X86_FLAGS_RF | X86_FLAGS_TF)}
        return Built(frame, bytes(data), regs)

    def frame_for_sigreturn(self, sp: int) -> int:
        """Where the frame is when the restorer calls rt_sigreturn (pretcode was popped)."""
        return sp - 8

    def parse(self, frame: int, read: ReadMemory) -> Restored:
        """The registers, mask and alternate stack saved in the frame at `frame`."""
        data = read(frame, X86_FRAME_SIZE)
        fields = _X86_MC.unpack_from(data, X86_MCONTEXT)
        regs = dict(zip(X86_GPRS, fields[:18]))
        regs["eflags"] = (regs["eflags"] & FIX_EFLAGS) | 0x2
        fpstate = fields[-1]
        if fpstate:
            if fpstate % 16:
                raise BadFrame(f"misaligned fpstate {fpstate:#x}")
            regs.update(fxrstor(read(fpstate, FXSAVE_SIZE)))
        mask = struct.unpack_from("<Q", data, X86_SIGMASK)[0]
        stack = AltStack.unpack(data[X86_UC_STACK:X86_UC_STACK + AltStack.SIZE])
        return Restored(regs, mask, stack)


# ---------------------------------------------------------------- AArch64

A64_UC = SigInfo.SIZE                           # offsetof(rt_sigframe, uc) = 128
A64_UC_STACK = A64_UC + 16
A64_SIGMASK = A64_UC + 40
A64_MCONTEXT = A64_UC + 176                     # struct sigcontext (16-aligned): 304
A64_REGS = A64_MCONTEXT + 8                     # regs[31]
A64_SP, A64_PC, A64_PSTATE = A64_MCONTEXT + 256, A64_MCONTEXT + 264, A64_MCONTEXT + 272
A64_RESERVED = A64_MCONTEXT + 288               # __reserved[4096]: 592
A64_RESERVED_SIZE = 4096
A64_FRAME_SIZE = A64_RESERVED + A64_RESERVED_SIZE   # 4688
FPSIMD_MAGIC, ESR_MAGIC = 0x46508001, 0x45535201
FPSIMD_SIZE = 16 + 32 * 16                      # 528
PSR_MODE_MASK, PSR_MODE32 = 0xF, 0x10
NZCV_MASK = 0xF000_0000


class Aarch64Frames:
    """The AArch64 rt_sigframe."""

    syscall_insn_size = 4

    def build(self, sp: int, use_altstack: AltStack | None, d: Delivery) -> Built:
        """The frame record and frame below `sp`, or at the top of `use_altstack`."""
        top = sp if use_altstack is None else use_altstack.sp + use_altstack.size
        record = _align_down(top - 16, 16)
        frame = record - A64_FRAME_SIZE
        r = d.regs
        data = bytearray(record + 16 - frame)
        data[0:SigInfo.SIZE] = d.info.pack()
        struct.pack_into("<QQ", data, A64_UC, 0, 0)
        data[A64_UC_STACK:A64_UC_STACK + AltStack.SIZE] = d.stack
        struct.pack_into("<Q", data, A64_SIGMASK, d.mask)
        fault = d.info.addr if d.info.is_fault else 0
        struct.pack_into("<32Q", data, A64_MCONTEXT, fault, *(r[f"x{i}"] for i in range(31)))
        struct.pack_into("<QQQ", data, A64_SP, r["sp"], r["pc"], r["nzcv"] & NZCV_MASK)
        struct.pack_into("<IIII", data, A64_RESERVED, FPSIMD_MAGIC, FPSIMD_SIZE, r["fpsr"],
                         r["fpcr"])
        for i in range(32):
            at = A64_RESERVED + 16 + 16 * i
            data[at:at + 16] = r[f"v{i}"].to_bytes(16, "little")
        # the end record {0, 0} follows at A64_RESERVED + FPSIMD_SIZE: already zero
        struct.pack_into("<QQ", data, record - frame, r["x29"], r["x30"])
        regs = {"x0": d.info.signo, "sp": frame, "x29": record, "x30": d.restorer,
                "pc": d.handler}
        if d.siginfo:
            regs.update(x1=frame, x2=frame + A64_UC)
        return Built(frame, bytes(data), regs)

    def frame_for_sigreturn(self, sp: int) -> int:
        """Where the frame is when the restorer calls rt_sigreturn (at sp)."""
        return sp

    def parse(self, frame: int, read: ReadMemory) -> Restored:
        """The registers, mask and alternate stack saved in the frame at `frame`."""
        if frame % 16:
            raise BadFrame(f"misaligned frame {frame:#x}")
        data = read(frame, A64_FRAME_SIZE)
        values = struct.unpack_from("<31Q", data, A64_REGS)
        regs = {f"x{i}": v for i, v in enumerate(values)}
        sp, pc, pstate = struct.unpack_from("<QQQ", data, A64_SP)
        if pstate & (PSR_MODE_MASK | PSR_MODE32):
            raise BadFrame(f"pstate {pstate:#x} is not EL0t AArch64")
        regs.update(sp=sp, pc=pc, nzcv=pstate & NZCV_MASK)
        regs.update(_fpsimd(data))
        mask = struct.unpack_from("<Q", data, A64_SIGMASK)[0]
        stack = AltStack.unpack(data[A64_UC_STACK:A64_UC_STACK + AltStack.SIZE])
        return Restored(regs, mask, stack)


def _fpsimd(data: bytes) -> Registers:
    """The FP/SIMD registers from the records in __reserved (fpsimd required, esr allowed)."""
    offset, end = A64_RESERVED, A64_RESERVED + A64_RESERVED_SIZE
    regs: Registers | None = None
    while True:
        if end - offset < 8:
            raise BadFrame("records run past __reserved")
        magic, size = struct.unpack_from("<II", data, offset)
        if magic == 0:
            if size:
                raise BadFrame("end record with a size")
            break
        if size < 8 or size > end - offset:
            raise BadFrame(f"record {magic:#x} of size {size}")
        if magic == FPSIMD_MAGIC:
            if regs is not None or size != FPSIMD_SIZE:
                raise BadFrame("bad fpsimd_context")
            fpsr, fpcr = struct.unpack_from("<II", data, offset + 8)
            regs = {"fpsr": fpsr, "fpcr": fpcr}
            for i in range(32):
                at = offset + 16 + 16 * i
                regs[f"v{i}"] = int.from_bytes(data[at:at + 16], "little")
        elif magic != ESR_MAGIC:
            raise BadFrame(f"unknown record {magic:#x}")
        offset += size
    if regs is None:
        raise BadFrame("no fpsimd_context")
    return regs


FRAMES: dict[str, X86_64Frames | Aarch64Frames] = {"x86_64": X86_64Frames(),
                                                   "aarch64": Aarch64Frames()}
