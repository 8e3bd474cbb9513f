"""The CPU engine: a Unicorn instance in virtual-TLB mode over our physical RAM.

Translation is ours: the C fast path's fill hook walks the current page table.
`run` executes guest code until something needs the kernel and reports why
(a `Stop`); the kernel handles it outside Unicorn and calls `run` again.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable

import unicorn
from unicorn import arm64_const as a64
from unicorn import x86_const
from unicorn.unicorn_py3 import unicorn as _binding

from emu.cpu.arch import SIGNAL_REGISTERS, X86_FP_REGISTERS, ArchSpec
from emu.cpu.costs import BlockCoster
from emu.cpu.faultaddr import FaultAddressDecoder
from emu.cpu.fastpath import FastPath, ffi, lib
from emu.profile import InstructionCosts

CodeReader = Callable[[int, int], bytes]
"""(vaddr, size) -> the guest code bytes there (pages the CPU just translated)."""

ACCESS_READ = lib.FP_ACCESS_READ
ACCESS_WRITE = lib.FP_ACCESS_WRITE
ACCESS_FETCH = lib.FP_ACCESS_FETCH

_NEVER = 0xFFFF_FFFF_FFFF_FFFF
_A64_EXCP_SWI = 2          # QEMU's EXCP_SWI: svc
_A64_EXCP_BKPT = 7         # brk
_A64_EXCP_UDEF = 1         # undefined instruction; Unicorn reports brk as this too
_A64_BRK_MASK, _A64_BRK = 0xFFE0001F, 0xD4200000


class StopKind(enum.Enum):
    """Why guest execution returned to the kernel."""

    SYSCALL = "syscall"
    FAULT = "fault"                 # TLB miss the fast path could not resolve
    INSN_LIMIT = "insn_limit"
    DEADLINE = "deadline"
    ILLEGAL = "illegal"             # undefined instruction
    BREAKPOINT = "breakpoint"       # int3 / brk
    ARITHMETIC = "arithmetic"       # divide error
    CPU_ERROR = "cpu_error"         # any other CPU exception


@dataclass(slots=True)
class Stop:
    """One return from guest execution."""

    kind: StopKind
    pc: int                      # where execution resumes (faulting instruction for FAULT)
    fault_vaddr: int = 0
    fault_access: int = 0        # ACCESS_READ / ACCESS_WRITE / ACCESS_FETCH
    detail: str = ""


class CpuEngine:
    """Runs one guest architecture's code with emulator-owned translation."""

    def __init__(self, spec: ArchSpec, ram_host_address: int, ram_size: int,
                 read_code: CodeReader, costs: InstructionCosts, tlb_fill_cost: int) -> None:
        """Create the engine, map RAM at physical 0 and attach the fast path.

        `read_code` fetches guest code for costing blocks the first time they run;
        `costs` prices instructions and `tlb_fill_cost` each fast-path refill.
        """
        self.spec = spec
        self.read_code = read_code
        self._coster = BlockCoster(spec, costs)
        self._fault_decoder = FaultAddressDecoder(spec)
        self.fastpath = fastpath = FastPath(self._cost_block)
        fastpath.state.tlb_fill_cost = tlb_fill_cost
        uc = unicorn.Uc(spec.uc_arch, spec.uc_mode)
        uc.ctl_set_cpu_model(spec.cpu_model)
        if spec.name == "aarch64":
            uc.ctl_set_page_size(4096)
        uc.ctl_set_tlb_mode(unicorn.UC_TLB_VIRTUAL)
        uc.mem_map_ptr(0, ram_size, unicorn.UC_PROT_ALL, ram_host_address)
        if spec.name == "aarch64":
            uc.reg_write(a64.UC_ARM64_REG_CPACR_EL1, 3 << 20)     # FP/SIMD at EL0/EL1
        else:  # SSE as a Linux user process sees it: CR4.OSFXSR | CR4.OSXMMEXCPT
            uc.reg_write(x86_const.UC_X86_REG_CR4,
                         uc.reg_read(x86_const.UC_X86_REG_CR4) | (1 << 9) | (1 << 10))
        self.uc = uc
        fastpath.attach(uc._uch.value, _binding.uclib)
        self._pending: Stop | None = None
        if spec.name == "x86_64":
            uc.hook_add(unicorn.UC_HOOK_INSN, self._on_syscall, None, 1, 0,
                        x86_const.UC_X86_INS_SYSCALL)
        uc.hook_add(unicorn.UC_HOOK_INTR, self._on_interrupt)

    def _cost_block(self, pc: int, size: int) -> tuple[int, int]:
        """(instructions, cycles) of a block executing for the first time."""
        return self._coster.cost(self.read_code(pc, size), pc)

    # ---- hooks (Python, called only for kernel entries) ----

    def _on_syscall(self, uc: unicorn.Uc, _user: object) -> None:
        self._pending = Stop(StopKind.SYSCALL, pc=0)
        uc.emu_stop()

    def _on_interrupt(self, uc: unicorn.Uc, intno: int, _user: object) -> None:
        if self.spec.name == "aarch64":
            kind = {_A64_EXCP_SWI: StopKind.SYSCALL, _A64_EXCP_BKPT: StopKind.BREAKPOINT,
                    _A64_EXCP_UDEF: StopKind.ILLEGAL}.get(intno, StopKind.CPU_ERROR)
        else:
            kind = {0: StopKind.ARITHMETIC, 3: StopKind.BREAKPOINT,
                    6: StopKind.ILLEGAL}.get(intno, StopKind.CPU_ERROR)
        self._pending = Stop(kind, pc=0, detail=f"interrupt {intno}")
        uc.emu_stop()

    # ---- running ----

    def run(self, pc: int, insn_limit: int = 0, deadline: int = 0) -> Stop:
        """Execute from `pc` until the kernel is needed; returns why execution stopped."""
        st = self.fastpath.state
        st.stop_reason = lib.FP_STOP_NONE
        st.insn_stop = insn_limit or _NEVER
        st.cycle_stop = deadline or _NEVER
        self._pending = None
        error: unicorn.UcError | None = None
        try:
            self.uc.emu_start(pc, 0)
        except unicorn.UcError as exc:
            error = exc
        if self.fastpath.callback_error is not None:
            exc, self.fastpath.callback_error = self.fastpath.callback_error, None
            raise exc
        now = self.pc
        if st.stop_reason == lib.FP_STOP_FAULT:
            self._uncount_unretired(now)
            return Stop(StopKind.FAULT, pc=now, fault_vaddr=st.fault_vaddr,
                        fault_access=st.fault_access)
        if self._pending is not None:
            kind = self._pending.kind
            if kind is not StopKind.SYSCALL:
                self._uncount_unretired(now)
            if kind is StopKind.ILLEGAL and self.spec.name == "aarch64" and self._is_brk(now):
                kind = StopKind.BREAKPOINT
            return Stop(kind, pc=now, detail=self._pending.detail)
        if error is not None:
            if error.errno == unicorn.UC_ERR_INSN_INVALID:
                self._uncount_unretired(now)
                return Stop(StopKind.ILLEGAL, pc=now, detail=str(error))
            return Stop(StopKind.CPU_ERROR, pc=now, detail=str(error))
        if st.stop_reason == lib.FP_STOP_INSN_LIMIT:
            return Stop(StopKind.INSN_LIMIT, pc=now)
        if st.stop_reason == lib.FP_STOP_DEADLINE:
            return Stop(StopKind.DEADLINE, pc=now)
        # emu_start's `until` is 0: the guest jumped to address 0
        return Stop(StopKind.FAULT, pc=now, fault_vaddr=now, fault_access=ACCESS_FETCH)

    def _is_brk(self, pc: int) -> bool:
        """Whether the AArch64 instruction at `pc` is a brk."""
        word = int.from_bytes(self.read_code(pc, 4), "little")    # it was just fetched
        return word & _A64_BRK_MASK == _A64_BRK

    def _uncount_unretired(self, pc: int) -> None:
        """Take back the instructions of the current block from `pc` on (they did not retire)."""
        st = self.fastpath.state
        block = st.last_block
        if block == ffi.NULL or not block.pc <= pc < block.pc + block.size:
            return
        done = self._coster.retired(block.pc, pc)
        if done is None:       # costed before a code flush: decode the prefix again
            done = self._coster.cost(self.read_code(block.pc, pc - block.pc), block.pc)
        retired, retired_cycles = done
        st.instructions -= block.icount - retired
        st.cycles -= block.cycles - retired_cycles

    # ---- registers and context ----

    @property
    def cycles(self) -> int:
        """The simulated clock: cycles charged so far (guest blocks, TLB fills, kernel work)."""
        return self.fastpath.state.cycles

    def now(self) -> int:
        """The simulated clock (as a callable for the scheduler and servers)."""
        return self.fastpath.state.cycles

    def charge(self, cycles: int) -> None:
        """Advance the simulated clock by `cycles` of non-guest work (or idle time)."""
        self.fastpath.state.cycles += cycles

    @property
    def instructions(self) -> int:
        """Guest instructions retired so far."""
        return self.fastpath.state.instructions

    @property
    def pc(self) -> int:
        """The program counter."""
        return self.uc.reg_read(self.spec.pc)

    def reg_read(self, reg: int) -> int:
        """Read a register by Unicorn id."""
        return self.uc.reg_read(reg)

    def reg_write(self, reg: int, value: int) -> None:
        """Write a register by Unicorn id."""
        self.uc.reg_write(reg, value)

    def syscall_number_and_args(self) -> tuple[int, tuple[int, ...]]:
        """The pending syscall's number and its six argument registers."""
        read = self.uc.reg_read
        return read(self.spec.syscall_nr), tuple(read(r) for r in self.spec.syscall_args)

    def set_syscall_result(self, value: int) -> None:
        """Store a syscall's return value (negative errno as two's complement)."""
        self.uc.reg_write(self.spec.syscall_ret, value & 0xFFFFFFFFFFFFFFFF)

    def read_registers(self) -> dict[str, int]:
        """The registers a signal frame saves, by name (emu.cpu.arch.SIGNAL_REGISTERS)."""
        read = self.uc.reg_read
        regs: dict[str, int] = {}
        for name, reg in SIGNAL_REGISTERS[self.spec.name].items():
            value = read(reg)
            if isinstance(value, tuple):        # x87 register: (mantissa, exponent)
                value = value[0] | (value[1] << 64)
            regs[name] = value
        return regs

    def write_registers(self, regs: dict[str, int]) -> None:
        """Load the named registers (names as in `read_registers`)."""
        ids = SIGNAL_REGISTERS[self.spec.name]
        for name, value in regs.items():
            reg = ids[name]
            if reg in X86_FP_REGISTERS and self.spec.name == "x86_64":
                self.uc.reg_write(reg, (value & 0xFFFF_FFFF_FFFF_FFFF, (value >> 64) & 0xFFFF))
            else:
                self.uc.reg_write(reg, value)

    def fault_address(self, code: bytes, pc: int, page: int) -> int:
        """The byte address that the faulting instruction `code` at `pc` touched in `page` (the
        fill hook records only the page); registers are the loaded thread's."""
        return self._fault_decoder.address(code, pc, page, self.uc.reg_read)

    def save_context(self) -> unicorn.UcContext:
        """Snapshot of the CPU registers (a thread's context)."""
        return self.uc.context_save()

    def restore_context(self, context: unicorn.UcContext) -> None:
        """Load a thread's registers."""
        self.uc.context_restore(context)

    # ---- translation caches ----

    def flush_tlb(self) -> None:
        """Drop every cached translation (after permissions were lowered or pages unmapped)."""
        self.uc.ctl(unicorn.UC_CTL_TLB_FLUSH, unicorn.UC_CTL_IO_WRITE)

    def flush_code(self) -> None:
        """Drop translated code and block costs (after code pages were unmapped or replaced)."""
        self.uc.ctl_flush_tb()
        self.fastpath.forget_blocks()
        self._coster.forget()
