"""CPU exceptions as the kernel sees them: Unicorn's exception number -> a `Trap`.

Unicorn reports a guest exception through its interrupt hook with QEMU's number: the
x86 vector (0 #DE ... 19 #XM, or N for a software `int N`), or on AArch64 one of the
EXCP_* numbers of qemu/target/arm/cpu.h. `classify` turns that number, the PC and the
instruction there into the kind of trap Linux would have taken (and the address it
reports), so that the kernel can raise the signal Linux raises.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

CodeReader = Callable[[int, int], bytes]
AccessAddress = Callable[[bytes, int], "int | None"]

# QEMU's AArch64 exception numbers (qemu/target/arm/cpu.h)
A64_EXCP_UDEF, A64_EXCP_SWI, A64_EXCP_PREFETCH_ABORT, A64_EXCP_DATA_ABORT = 1, 2, 3, 4
A64_EXCP_BKPT, A64_EXCP_HVC, A64_EXCP_HYP_TRAP, A64_EXCP_SMC, A64_EXCP_SEMIHOST = 7, 11, 12, 13, 16
_A64_BRK_MASK, _A64_BRK = 0xFFE0001F, 0xD4200000
_A64_UNDEFINED = frozenset({A64_EXCP_UDEF, A64_EXCP_HVC, A64_EXCP_HYP_TRAP, A64_EXCP_SMC,
                            A64_EXCP_SEMIHOST})

# x86 vectors
X86_DE, X86_DB, X86_BP, X86_OF, X86_BR, X86_UD, X86_NM = 0, 1, 3, 4, 5, 6, 7
X86_NP, X86_SS, X86_GP, X86_PF, X86_MF, X86_AC, X86_MC, X86_XM = 11, 12, 13, 14, 16, 17, 18, 19
_X86_KINDS = {X86_DE: "arithmetic", X86_DB: "breakpoint", X86_BP: "breakpoint",
              X86_UD: "illegal", X86_MF: "floating_point", X86_XM: "floating_point",
              X86_AC: "alignment"}
X86_FP_FLAGS = 0x3F                 # IE DE ZE OE UE PE, in FSW and MXCSR alike
X86_FSW_SF = 0x40                   # x87 stack fault (with IE)


@dataclass(frozen=True, slots=True)
class Trap:
    """One guest exception: its kind (a StopKind value), where and what it touched."""

    kind: str
    pc: int                         # the PC the signal frame saves
    trap: int                       # the exception number Unicorn reported
    address: int = 0                # ALIGNMENT: the misaligned address
    fp_status: int = 0              # FLOATING_POINT: the unmasked exception flags


def classify_x86(intno: int, pc: int, read_code: CodeReader, fp_flags: Callable[[int], int]) -> Trap:
    """The trap of x86 vector `intno` at `pc` (Unicorn leaves the PC after a software `int
    N`, at the instruction for a fault). `fp_flags(vector)` gives the unmasked flags of #MF
    (x87 status & ~control) or #XM (MXCSR flags & ~masks)."""
    if intno not in (X86_BP, X86_DB) and _software_int(read_code, pc, intno):
        # `int N`: Linux's gates for N other than 3, 4 and 0x80 are for the kernel (#GP),
        # and vector 4's handler (overflow) raises SIGSEGV as well
        return Trap("protection", pc, X86_GP if intno != X86_OF else X86_OF)
    kind = _X86_KINDS.get(intno, "protection")
    if kind == "floating_point":
        return Trap(kind, pc, intno, fp_status=fp_flags(intno))
    return Trap(kind, pc, intno)


def classify_a64(intno: int, pc: int, read_code: CodeReader, access_address: AccessAddress) -> Trap:
    """The trap of AArch64 exception `intno` at `pc`. A data abort that is not a refused
    TLB fill is an alignment fault (exclusive, acquire/release and atomic accesses must be
    aligned); a misaligned PC is an alignment fault at the PC."""
    if intno in (A64_EXCP_UDEF, A64_EXCP_PREFETCH_ABORT) and pc & 3:
        return Trap("alignment", pc, intno, address=pc)
    if intno == A64_EXCP_DATA_ABORT:
        code = read_code(pc, 4)
        address = access_address(code, pc)
        return Trap("alignment", pc, intno, address=pc if address is None else address)
    if intno == A64_EXCP_BKPT:
        return Trap("breakpoint", pc, intno)
    if intno in _A64_UNDEFINED:
        word = int.from_bytes(read_code(pc, 4), "little")
        return Trap("breakpoint" if word & _A64_BRK_MASK == _A64_BRK else "illegal", pc, intno)
    if intno == A64_EXCP_PREFETCH_ABORT:
        return Trap("protection", pc, intno)
    return Trap("cpu_error", pc, intno)


def _software_int(read_code: CodeReader, pc: int, intno: int) -> bool:
    """Whether the instruction just before `pc` is `int intno` (CD ib)."""
    try:
        return read_code(pc - 2, 2) == bytes((0xCD, intno & 0xFF))
    except Exception:       # noqa: BLE001 - an unreadable page: not a software interrupt
        return False
