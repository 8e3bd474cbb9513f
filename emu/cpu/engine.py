"""The CPU engine: a Unicorn instance in virtual-TLB mode over our physical RAM.

Translation is ours: the C fast path's fill hook walks the current page table.
`run` executes guest code until something needs the kernel and reports why
(a `Stop`); the kernel handles it outside Unicorn and calls `run` again. Stops
are instruction-precise: at a fault, an exception, a breakpoint or the end of
an instruction budget the PC names the next instruction to execute, and the
instruction and cycle counters cover exactly the instructions that retired.
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
from emu.cpu import fpustate
from emu.cpu.costs import BlockCoster
from emu.cpu.faultaddr import FaultAddressDecoder
from emu.cpu.traps import (A64_EXCP_SWI, X86_FP_FLAGS, X86_FSW_SF, X86_GP, X86_MF, classify_a64,
                           classify_x86)
from emu.cpu.fastpath import (FAULT_DONE, FAULT_DONE_STOP, FAULT_STOP, FastPath, StuckValue,
                              ffi, lib)
from emu.cpu.tlbmodel import DetailedTlb, TlbGeometry, WalkCacheGeometry
from emu.profile import InstructionCosts

CodeReader = Callable[[int, int], bytes]
"""(vaddr, size) -> the guest code bytes there (pages the CPU just translated)."""

ACCESS_READ = lib.FP_ACCESS_READ
ACCESS_WRITE = lib.FP_ACCESS_WRITE
ACCESS_FETCH = lib.FP_ACCESS_FETCH
# one definition of the constants (emu/cpu/csrc/fastpath.h): Unicorn must agree with it
assert (ACCESS_READ, ACCESS_WRITE, ACCESS_FETCH) == (
    unicorn.UC_MEM_READ, unicorn.UC_MEM_WRITE, unicorn.UC_MEM_FETCH)
assert (lib.FP_PTE_READ, lib.FP_PTE_WRITE, lib.FP_PTE_EXEC) == (
    unicorn.UC_PROT_READ, unicorn.UC_PROT_WRITE, unicorn.UC_PROT_EXEC)

NEVER = 0xFFFF_FFFF_FFFF_FFFF
SYSCALLS_COUNTED = lib.FP_MAX_SYSCALL     # the CPU counts calls with numbers below this


def _canonical(vaddr: int) -> bool:
    """Whether an x86-64 address is canonical (bits 63..47 all equal)."""
    return (vaddr >> 47) in (0, 0x1FFFF)


class StopKind(enum.Enum):
    """Why guest execution returned to the kernel."""

    SYSCALL = "syscall"
    FAULT = "fault"                 # TLB miss the fast path could not resolve
    INSN_LIMIT = "insn_limit"       # the instruction budget is used up, exactly
    DEADLINE = "deadline"           # the simulated clock reached the deadline
    BREAKPOINT_PC = "breakpoint_pc"  # a requested stop address (not a guest brk/int3)
    ILLEGAL = "illegal"             # undefined instruction
    BREAKPOINT = "breakpoint"       # int3 / brk
    ARITHMETIC = "arithmetic"       # divide error
    ALIGNMENT = "alignment"         # misaligned access, PC or SP (fault_vaddr: the address)
    PROTECTION = "protection"       # x86 #GP and kin: a privileged or forbidden instruction
    FLOATING_POINT = "floating_point"   # unmasked x87 / SSE exception (fp_status: its flags)
    CPU_ERROR = "cpu_error"         # an exception no user program can cause (IRQ, ...)

    @property
    def is_exception(self) -> bool:
        """Whether the guest's own instruction raised it (the kernel answers with a signal)."""
        return self in _EXCEPTION_KINDS


@dataclass(slots=True)
class Stop:
    """One return from guest execution."""

    kind: StopKind
    pc: int                      # where execution resumes (faulting instruction for FAULT)
    fault_vaddr: int = 0
    fault_access: int = 0        # ACCESS_READ / ACCESS_WRITE / ACCESS_FETCH
    detail: str = ""
    trap: int = -1               # exceptions: the x86 vector or QEMU's AArch64 EXCP_* number
    fp_status: int = 0           # FLOATING_POINT: the unmasked flags (x87/MXCSR bits 0..6)


_EXCEPTION_KINDS = frozenset({StopKind.ILLEGAL, StopKind.BREAKPOINT, StopKind.ARITHMETIC,
                              StopKind.ALIGNMENT, StopKind.PROTECTION, StopKind.FLOATING_POINT,
                              StopKind.CPU_ERROR})


@dataclass(frozen=True, slots=True)
class Unretired:
    """Instructions and cycles taken back from the clock for a block cut short."""

    instructions: int
    cycles: int


class CpuEngine:
    """Runs one guest architecture's code with emulator-owned translation."""

    def __init__(self, spec: ArchSpec, ram_host_address: int, ram_size: int,
                 read_code: CodeReader, costs: InstructionCosts, tlb_fill_cost: int,
                 syscall_cost: int = 0, frequency_hz: int = 1_000_000_000,
                 walk_level_cycles: tuple[int, int, int, int] = (0, 0, 0, 0)) -> None:
        """Create the engine, map RAM at physical 0 and attach the fast path.

        `read_code` fetches guest code for costing blocks the first time they run;
        `costs` prices instructions, `tlb_fill_cost` each fast-path refill (plus
        `walk_level_cycles[l]` per page-table entry of level l its walk reads) and
        `syscall_cost` each system-call entry.
        """
        self.spec = spec
        self._ram_size = ram_size
        self.read_code = read_code
        self._coster = BlockCoster(spec, costs)
        self._fault_decoder = FaultAddressDecoder(spec)
        self.fastpath = fastpath = FastPath(self._cost_block)
        st = fastpath.state
        st.tlb_fill_cost = tlb_fill_cost
        st.walk_level_cycles = list(walk_level_cycles)
        self.tlb_model: DetailedTlb | None = None
        st.syscall_cost = syscall_cost
        st.ram = ffi.cast("uint8_t *", ram_host_address)
        st.ram_size = ram_size
        st.frequency_hz = frequency_hz
        st.insn_stop = st.cycle_stop = NEVER
        lib.fp_clock_reset()            # a new engine's TLB starts from simulated time 0
        uc = unicorn.Uc(spec.uc_arch, spec.uc_mode)
        uc.ctl_set_cpu_model(spec.cpu_model)
        if spec.name == "aarch64":
            uc.ctl_set_page_size(4096)
        uc.ctl_set_tlb_mode(unicorn.UC_TLB_VIRTUAL)
        uc.mem_map_ptr(0, ram_size, unicorn.UC_PROT_ALL, ram_host_address)
        if spec.name == "aarch64":
            uc.reg_write(a64.UC_ARM64_REG_CPACR_EL1, 3 << 20)     # FP/SIMD at EL0/EL1
        else:  # SSE as a Linux user process sees it: CR4.OSFXSR | CR4.OSXMMEXCPT, and
            # CR0.NE: an unmasked x87 exception is #MF (SIGFPE), not the FERR# pin
            uc.reg_write(x86_const.UC_X86_REG_CR4,
                         uc.reg_read(x86_const.UC_X86_REG_CR4) | (1 << 9) | (1 << 10))
            uc.reg_write(x86_const.UC_X86_REG_CR0, uc.reg_read(x86_const.UC_X86_REG_CR0) | (1 << 5))
        self.uc = uc
        x86 = spec.name == "x86_64"
        fastpath.attach(uc._uch.value, _binding.uclib, spec.name, pc_reg=spec.pc,
                        syscall_regs=(spec.syscall_nr, *spec.syscall_args),
                        result_reg=spec.syscall_ret,
                        syscall_insn=x86_const.UC_X86_INS_SYSCALL if x86 else 0,
                        syscall_intno=-1 if x86 else A64_EXCP_SWI)
        fastpath.locate_cpu()
        if x86 and fastpath.state.cpu != ffi.NULL:
            fpustate.install(fastpath.state, fpustate.locate(uc, int(ffi.cast("uintptr_t",
                                                                              fastpath.state.cpu))))

    def model_tlb(self, tlb: TlbGeometry, cache: WalkCacheGeometry) -> None:
        """Charge every access through a detailed model of these TLBs (`--tlb detailed`)
        instead of charging Unicorn's fills; before the first run."""
        assert self.tlb_model is None, "the TLB model is set up once"
        self.tlb_model = DetailedTlb(self.fastpath, tlb, cache, self._ram_size >> 12)

    def invalidate_tlb_of(self, table_handle, start: int, end: int) -> None:  # type: ignore[no-untyped-def]
        """Translations of [start, end) of a space not loaded now changed: drop what the TLB
        model holds of them (Unicorn's TLB holds only the loaded space's)."""
        if self.tlb_model is not None:
            self.tlb_model.invalidate(table_handle, start, end)

    def _cost_block(self, pc: int, paddr: int, size: int) -> tuple[int, int]:
        """(instructions, cycles) of a block executing for the first time."""
        return self._coster.cost(self.read_code(pc, size), pc, key=(paddr, size))

    # ---- running ----

    def run(self, pc: int, insn_stop: int = NEVER, deadline: int = NEVER,
            step_over: int | None = None) -> Stop:
        """Execute from `pc` until the kernel is needed; returns why execution stopped.

        It stops before the first block that starts at or after the clock `deadline`,
        and exactly when `instructions` reaches `insn_stop` or the PC reaches a
        breakpoint (`set_breakpoints`) — except one at `step_over` where the run starts
        (resuming from a stop there)."""
        fastpath = self.fastpath
        st = fastpath.state
        st.insn_stop = insn_stop
        st.cycle_stop = deadline
        st.resume_pc = NEVER if step_over is None else step_over
        err = fastpath.run(pc)
        self._raise_callback_error()
        reason, now = st.stop_reason, st.stop_pc
        if reason == lib.FP_STOP_PRECISE:
            return self._run_to(now, st.precise_pc or self._insn_target(now))
        return self._stop(reason, err, now)

    def _stop(self, reason: int, err: int, now: int) -> Stop:
        st = self.fastpath.state
        if reason == lib.FP_STOP_FAULT:
            self.take_back_unretired(now)
            if self.spec.name == "x86_64" and not _canonical(st.fault_vaddr):
                # x86-64 raises #GP, not a page fault, for a non-canonical address
                return Stop(StopKind.PROTECTION, pc=now, detail="non-canonical address "
                            f"{st.fault_vaddr:#x}", trap=X86_GP)
            return Stop(StopKind.FAULT, pc=now, fault_vaddr=st.fault_vaddr,
                        fault_access=st.fault_access)
        if reason == lib.FP_STOP_FAULT_DONE:        # taken back before the fault was served
            return Stop(StopKind.DEADLINE, pc=now)
        if reason == lib.FP_STOP_SYSCALL:
            return Stop(StopKind.SYSCALL, pc=now)
        if reason == lib.FP_STOP_DEADLINE:
            return Stop(StopKind.DEADLINE, pc=now)
        if reason == lib.FP_STOP_INSN_LIMIT:
            return Stop(StopKind.INSN_LIMIT, pc=now)
        if reason == lib.FP_STOP_BREAKPOINT:
            return Stop(StopKind.BREAKPOINT_PC, pc=now)
        if reason == lib.FP_STOP_EXCEPTION:
            return self._exception(st.intno, now)
        if err == unicorn.UC_ERR_INSN_INVALID:
            self.take_back_unretired(now)
            return Stop(StopKind.ILLEGAL, pc=now, detail=str(unicorn.UcError(err)))
        if err != unicorn.UC_ERR_OK:
            return Stop(StopKind.CPU_ERROR, pc=now, detail=str(unicorn.UcError(err)))
        # emu_start's `until` is 0: the guest jumped to address 0
        return Stop(StopKind.FAULT, pc=now, fault_vaddr=now, fault_access=ACCESS_FETCH)

    def _exception(self, intno: int, now: int) -> Stop:
        """A CPU exception other than a system call, as the trap Linux would take."""
        self.take_back_unretired(now)
        if self.spec.name == "x86_64":
            trap = classify_x86(intno, now, self.read_code, self._x86_fp_flags)
        else:
            trap = classify_a64(intno, now, self.read_code, self._access_address)
        return Stop(StopKind(trap.kind), pc=trap.pc, fault_vaddr=trap.address,
                    detail=f"interrupt {intno}", trap=trap.trap, fp_status=trap.fp_status)

    def _access_address(self, code: bytes, pc: int) -> int | None:
        """The address the memory instruction `code` at `pc` accesses (loaded registers)."""
        return self._fault_decoder.access_address(code, pc, self.uc.reg_read)

    def _x86_fp_flags(self, vector: int) -> int:
        """The unmasked exception flags behind an x87 #MF or an SSE #XM."""
        read = self.uc.reg_read
        if vector == X86_MF:
            fsw = read(x86_const.UC_X86_REG_FPSW)
            return fsw & ~read(x86_const.UC_X86_REG_FPCW) & X86_FP_FLAGS | fsw & X86_FSW_SF
        mxcsr = read(x86_const.UC_X86_REG_MXCSR)
        return mxcsr & ~(mxcsr >> 7) & X86_FP_FLAGS

    def _run_to(self, block_pc: int, target: int) -> Stop:
        """The next block holds a stop point at `target`: translate it again with `target`
        as an exit, run up to there, and drop that translation again."""
        fastpath = self.fastpath
        st = fastpath.state
        pages = self._code_frames(block_pc, target)
        for lo in pages:
            lib.fp_tb_invalidate(st, lo, lo + 0x1000)
        try:
            err = fastpath.run(block_pc, target)
            self._raise_callback_error()
            reason, now = st.stop_reason, st.stop_pc
            if reason == lib.FP_STOP_NONE and err == unicorn.UC_ERR_OK and now == target:
                at_limit = st.instructions >= st.insn_stop
                return Stop(StopKind.INSN_LIMIT if at_limit else StopKind.BREAKPOINT_PC, pc=now)
            if reason == lib.FP_STOP_PRECISE:           # another stop point, earlier
                return self._run_to(now, st.precise_pc or self._insn_target(now))
            return self._stop(reason, err, now)
        finally:    # the translation with the exit inside must not be used again
            for lo in pages:
                lib.fp_tb_invalidate(st, lo, lo + 0x1000)

    def _code_frames(self, start: int, end: int) -> list[int]:
        """Physical page addresses of the code pages of [start, end]."""
        frames = []
        for page in sorted({start & ~0xFFF, end & ~0xFFF}):
            paddr = lib.fp_translate(self.fastpath.state, page)
            if paddr != NEVER:
                frames.append(paddr)
        return frames

    def _insn_target(self, block_pc: int) -> int:
        """The address after the instruction that uses up the budget, in the block at
        `block_pc` (the budget ends inside it)."""
        st = self.fastpath.state
        left = st.insn_stop - st.instructions
        assert left > 0
        code = self.read_code(block_pc, st.stop_block_size)
        return block_pc + self._coster.instruction_ends(code, block_pc, left)

    def instruction_end(self, code: bytes, pc: int, count: int) -> int:
        """The byte offset in `code` (at `pc`) just after its first `count` instructions;
        ValueError if it holds fewer."""
        return self._coster.instruction_ends(code, pc, count)

    def _raise_callback_error(self) -> None:
        fastpath = self.fastpath
        if fastpath.callback_error is not None:
            exc, fastpath.callback_error = fastpath.callback_error, None
            raise exc

    def take_back_unretired(self, pc: int) -> Unretired:
        """Take back the instructions and cycles of the current block from `pc` on (they
        did not retire); returns what was taken."""
        st = self.fastpath.state
        block = st.last_block
        if block == ffi.NULL or not block.pc <= pc < block.pc + block.size:
            return Unretired(0, 0)
        done = self._coster.retired((block.paddr, block.size), pc - block.pc)
        if done is None:       # costed before a code flush: decode the prefix again
            done = self._coster.cost(self.read_code(block.pc, pc - block.pc), block.pc)
        retired, retired_cycles = done
        taken = Unretired(block.icount - retired, block.cycles - retired_cycles)
        st.instructions -= taken.instructions
        st.cycles -= taken.cycles
        return taken

    def give_back(self, taken: Unretired) -> None:
        """Charge again what `take_back_unretired` took (the block goes on after all)."""
        st = self.fastpath.state
        st.instructions += taken.instructions
        st.cycles += taken.cycles

    def block_ends_at_branch(self) -> bool:
        """Whether the executing block ends with a control transfer or at a page end, so that
        a block started anywhere inside it ends at the same place."""
        st = self.fastpath.state
        block = st.last_block
        if block == ffi.NULL:
            return False
        end = block.pc + block.size
        return end % 0x1000 == 0 or self._coster.ends_with_branch((block.paddr, block.size))

    def fault_pc(self) -> int:
        """The faulting instruction's address, inside the fill hook (Unicorn restored it)."""
        return self.fastpath.state.stop_pc

    def stop_after_fault(self) -> None:
        """Inside the fill hook, after a fault completed in place: stop the CPU at the
        faulting instruction instead of going on (`FAULT_DONE_STOP`)."""
        self.fastpath.state.stop_reason = lib.FP_STOP_FAULT_DONE

    def set_stuck(self, stuck: list[StuckValue]) -> None:
        """Stuck-at values asserted before every block (see FastPath.set_stuck)."""
        self.fastpath.set_stuck(stuck)

    def set_breakpoints(self, addresses: list[int]) -> None:
        """Stop before the instruction at any of `addresses` (see `run`'s `step_over`)."""
        self.fastpath.set_breakpoints(addresses)

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
        """The pending syscall's number and its six arguments (captured by the C hook)."""
        st = self.fastpath.state
        return st.sc_nr, tuple(st.sc_args)

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

    def derived_context(self, registers: dict[int, int]) -> unicorn.UcContext:
        """A copy of the loaded registers with `registers` (Unicorn id -> value) changed; the
        CPU keeps its own (a new thread's or process's starting registers)."""
        saved = self.uc.context_save()
        for reg, value in registers.items():
            self.uc.reg_write(reg, value)
        context = self.uc.context_save()
        self.uc.context_restore(saved)
        return context

    # ---- translation caches ----

    def flush_tlb(self) -> None:
        """Drop every cached translation (switching address spaces)."""
        self.fastpath.flush_tlb()

    def invalidate_tlb(self, start: int, end: int) -> None:
        """Drop the cached translations of the running space's pages in [start, end)."""
        self.fastpath.flush_tlb_range(start, min(end, NEVER))

    def invalidate_code(self, first_frame: int, count: int = 1) -> None:
        """Drop translated code and block costs held for frames whose contents change."""
        self.fastpath.invalidate_code(first_frame, count)
        self._coster.forget_keys(first_frame << 12, (first_frame + count) << 12)


# keep the names the rest of the package imports from here
__all__ = ["ACCESS_FETCH", "ACCESS_READ", "ACCESS_WRITE", "CpuEngine", "FAULT_DONE",
           "FAULT_DONE_STOP", "FAULT_STOP", "NEVER", "SYSCALLS_COUNTED", "Stop", "StopKind",
           "Unretired"]
