"""Python side of the C fast path: its state block, Unicorn's entry points, the callbacks.

The C module (built by fastpath_build.py) holds the TLB-fill, block, system-call and
interrupt hooks. Here we create its per-engine state, hand it the addresses of the
libunicorn entry points it calls (so it is never linked against Unicorn), and route its
three callbacks — cost a new block, handle an inline system call, offer a fault to the
kernel — to Python.
"""
from __future__ import annotations

import ctypes
import struct
import sys
from dataclasses import dataclass
from typing import Any, Callable

try:
    from emu.cpu._fastpath import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "emu's C fast path is not built: run `pip install -e .` "
        "(or `python emu/cpu/fastpath_build.py`)") from exc

BlockCoster = Callable[[int, int, int], tuple[int, int]]
"""(pc, paddr, size) -> (instructions, cycles) for a block seen for the first time."""

InlineSyscall = Callable[[], int | None]
"""Handle the captured system call without stopping the CPU: its result, or None to stop."""

FaultOffer = Callable[[int, int], int]
"""(vaddr, access) -> 0 stop for the fault, 1 completed (retry the access), 2 completed and
stop here (the stop reason is set)."""

FAULT_STOP, FAULT_DONE, FAULT_DONE_STOP = 0, 1, 2

_FN_NAMES = ("uc_hook_add", "uc_emu_start", "uc_emu_stop", "uc_reg_read", "uc_reg_write",
             "uc_reg_read_batch", "tcg_flush_softmmu_tlb_{arch}", "tlb_flush_page_{arch}",
             "tb_invalidate_phys_range_{arch}")
_clock_patched: dict[str, bool] = {}


@ffi.def_extern()
def fp_cost_block(handle, pc, paddr, size, icount, cycles):  # type: ignore[no-untyped-def]
    """C callback: cost a new block through the FastPath that owns `handle`."""
    fastpath: FastPath = ffi.from_handle(handle)
    try:
        n, c = fastpath.cost_block(pc, paddr, size)
    except BaseException as exc:  # never let an exception cross the C boundary
        fastpath.fail(exc)
        n, c = 1, 1
        icount[0], cycles[0] = n, c
        return -1
    icount[0] = n
    cycles[0] = c
    return 0


@ffi.def_extern()
def fp_syscall(handle, result):  # type: ignore[no-untyped-def]
    """C callback: handle an inline system call (1, result stored), or ask for a stop (0)."""
    fastpath: FastPath = ffi.from_handle(handle)
    if fastpath.on_syscall is None or fastpath.callback_error is not None:
        return 0
    try:
        value = fastpath.on_syscall()
    except BaseException as exc:
        fastpath.fail(exc)
        return -1
    if value is None:
        return 0
    result[0] = value
    return 1


@ffi.def_extern()
def fp_fault(handle, vaddr, access):  # type: ignore[no-untyped-def]
    """C callback: let the kernel complete a fault without stopping the CPU."""
    fastpath: FastPath = ffi.from_handle(handle)
    if fastpath.on_fault is None or fastpath.callback_error is not None:
        return FAULT_STOP
    try:
        return fastpath.on_fault(vaddr, access)
    except BaseException as exc:
        fastpath.fail(exc)
        return FAULT_STOP


def _symbol(libunicorn: ctypes.CDLL, name: str) -> int:
    """Address of an exported libunicorn symbol, or 0."""
    try:
        return ctypes.cast(getattr(libunicorn, name), ctypes.c_void_p).value or 0
    except AttributeError:
        return 0


def _got_offset(path: str, name: str) -> int | None:
    """The link-time address of the GOT slot through which the shared object at `path` calls
    `name` (its .rela.plt relocation), read from the raw tables: pyelftools only finds the
    sections (parsing thousands of relocations with it takes a second)."""
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        elf = ELFFile(f)
        sections = {sec.name: sec for sec in elf.iter_sections()}
        plt, dynsym, dynstr = (sections.get(n) for n in (".rela.plt", ".dynsym", ".dynstr"))
        if plt is None or dynsym is None or dynstr is None or not elf.elfclass == 64:
            return None
        strings = dynstr.data()
        at = strings.find(b"\0" + name.encode() + b"\0")
        if at < 0:
            return None
        name_offset = at + 1
        symbol = next((i for i, (st_name,) in enumerate(struct.iter_unpack("<I20x", dynsym.data()))
                       if st_name == name_offset), None)
        if symbol is None:
            return None
        for r_offset, r_info, _ in struct.iter_unpack("<QQq", plt.data()):
            if r_info >> 32 == symbol:
                return r_offset
    return None


def _patch_unicorn_clock(libunicorn: ctypes.CDLL) -> bool:
    """Point libunicorn's gettimeofday() at the simulated clock (once per process); False
    when its relocation cannot be found (then TLB fills may vary with host speed)."""
    path = getattr(libunicorn, "_name", "")
    if path in _clock_patched:
        return _clock_patched[path]
    try:
        offset = _got_offset(path, "gettimeofday")
    except (OSError, ValueError, struct.error):
        offset = None
    base = lib.fp_object_base(ffi.cast("void *", _symbol(libunicorn, "uc_hook_add")))
    ok = offset is not None and base != 0 and \
        lib.fp_patch_clock(ffi.cast("void *", base + offset)) == 0
    _clock_patched[path] = ok
    return ok


@dataclass(frozen=True)
class StuckValue:
    """A stuck-at value the block hook asserts: a register (Unicorn id `reg`, at most 64
    bits), physical memory (`paddr`), or memory at `vaddr` of the page table `table` (a
    PageTable handle) whenever a page is there; `width` bytes; (value & and_mask) | or_mask
    until the clock reaches `until`."""

    reg: int = -1
    paddr: int = 0
    vaddr: int = 0
    table: Any = None
    width: int = 8
    and_mask: int = 0
    or_mask: int = 0
    until: int = 0


class FastPath:
    """One engine's fast-path state: hooks, counters, stop points and Unicorn entry points."""

    def __init__(self, cost_block: BlockCoster) -> None:
        """A detached state; `cost_block` prices blocks seen for the first time."""
        self.state = ffi.new("fp_state *")
        self.cost_block = cost_block
        self.callback_error: BaseException | None = None
        self.on_fault: FaultOffer | None = None
        self.on_syscall: InlineSyscall | None = None
        self.clock_is_simulated = False
        self._handle = ffi.new_handle(self)
        self._fns = ffi.new("void *[]", len(_FN_NAMES))

    def attach(self, uc_handle: int, libunicorn: ctypes.CDLL, arch: str, *, pc_reg: int,
               syscall_regs: tuple[int, ...], result_reg: int, syscall_insn: int,
               syscall_intno: int) -> None:
        """Install the C hooks on a Unicorn engine (its uc_engine* as an int). `syscall_regs`
        are the number register and the six argument registers; `syscall_insn` the x86
        syscall instruction id for UC_HOOK_INSN (0 on AArch64), `syscall_intno` the
        interrupt number of a system call (-1 on x86-64)."""
        st = self.state
        for i, name in enumerate(_FN_NAMES):
            self._fns[i] = ffi.cast("void *", _symbol(libunicorn, name.format(arch=arch)))
        for required in range(6):
            if self._fns[required] == ffi.NULL:
                raise RuntimeError(f"libunicorn lacks {_FN_NAMES[required]}")
        st.pc_reg = pc_reg
        st.sc_regs = list(syscall_regs)
        st.sc_ret_reg = result_reg
        st.sc_intno = syscall_intno
        err = lib.fp_attach(st, ffi.cast("void *", uc_handle), self._fns, self._handle,
                            syscall_insn)
        if err:
            raise RuntimeError(f"uc_hook_add failed for the fast path (uc_err {err})")
        self.clock_is_simulated = _patch_unicorn_clock(libunicorn)

    def locate_cpu(self) -> bool:
        """Find the engine's CPUState for page-granular TLB flushes (after the engine's first
        use); False if not found (every flush then drops the whole TLB)."""
        st = self.state
        if st.cpu == ffi.NULL and self._fns[6] != ffi.NULL:
            st.cpu = lib.fp_find_cpu(st.uc, self._fns[6])
        return st.cpu != ffi.NULL

    def fail(self, exc: BaseException) -> None:
        """Remember the first exception a callback raised (re-raised after the run)."""
        if self.callback_error is None:
            self.callback_error = exc

    def run(self, begin: int, until: int = 0) -> int:
        """Execute from `begin` until a hook stops the CPU (or `until` is reached); uc_err."""
        return lib.fp_run(self.state, begin, until)

    def set_page_table(self, table_handle) -> None:  # type: ignore[no-untyped-def]
        """Make the fill hook walk `table_handle` (an fp_pagetable*), or nothing with None."""
        lib.fp_set_page_table(self.state, table_handle if table_handle is not None else ffi.NULL)

    def flush_tlb(self) -> None:
        """Drop every translation Unicorn caches."""
        lib.fp_tlb_flush(self.state)

    def flush_tlb_range(self, start: int, end: int) -> None:
        """Drop the cached translations of [start, end)."""
        lib.fp_tlb_flush_range(self.state, start, end)

    def invalidate_code(self, first_frame: int, count: int = 1) -> None:
        """Drop translated code and block costs of frames [first_frame, first_frame+count)."""
        lib.fp_code_invalidate(self.state, first_frame, count)

    def set_breakpoints(self, addresses: list[int]) -> None:
        """Stop before executing any of `addresses` (at most FP_MAX_BREAKPOINTS)."""
        addresses = sorted(set(addresses))
        if len(addresses) > lib.FP_MAX_BREAKPOINTS:
            raise ValueError(f"at most {lib.FP_MAX_BREAKPOINTS} breakpoints")
        st = self.state
        for i, address in enumerate(addresses):
            st.breakpoints[i] = address
        st.n_breakpoints = len(addresses)

    def set_stuck(self, stuck: list[StuckValue]) -> None:
        """Stuck-at values asserted before every block while the clock is below their
        `until`."""
        if len(stuck) > lib.FP_MAX_STUCK:
            raise ValueError(f"at most {lib.FP_MAX_STUCK} stuck-at values at once")
        st = self.state
        self._stuck_tables = [v.table for v in stuck]       # kept alive while used
        for i, v in enumerate(stuck):
            k = st.stuck[i]
            k.reg, k.paddr, k.vaddr, k.width = v.reg, v.paddr, v.vaddr, v.width
            k.pt = v.table if v.table is not None else ffi.NULL
            k.and_mask, k.or_mask, k.until = v.and_mask, v.or_mask, v.until
        st.n_stuck = len(stuck)

    def set_inline_syscalls(self, numbers: list[int]) -> None:
        """Mark the system calls handled inside the hook (by `on_syscall`)."""
        st = self.state
        ffi.memmove(st.inline_ok, bytes(lib.FP_MAX_SYSCALL), lib.FP_MAX_SYSCALL)
        for nr in numbers:
            if 0 <= nr < lib.FP_MAX_SYSCALL:
                st.inline_ok[nr] = 1

    def complete_faults_with(self, offer: FaultOffer | None) -> None:
        """Offer every refused fill to `offer` before stopping the CPU (None: always stop)."""
        self.on_fault = offer
        self.state.inline_faults = 1 if offer is not None else 0

    def syscall_counts(self) -> dict[int, int]:
        """Calls made so far, by number (those below FP_MAX_SYSCALL)."""
        counts = self.state.sc_counts
        return {nr: counts[nr] for nr in range(lib.FP_MAX_SYSCALL) if counts[nr]}

    def forget_blocks(self) -> None:
        """Drop every cached block cost."""
        lib.fp_blocks_clear(self.state)

    def release(self) -> None:
        """Free the C-side caches (the engine must no longer run); idempotent."""
        lib.fp_state_release(self.state)

    def __del__(self) -> None:
        """Never leave Unicorn's clock pointing at a freed state."""
        lib.fp_state_release(self.state)


if sys.byteorder != "little":  # pragma: no cover
    raise ImportError("emu's fast path assumes a little-endian host")
