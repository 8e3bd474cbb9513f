"""Python side of the C fast path: its state block and its callbacks (block costing, faults).

The C module (built by fastpath_build.py) holds the TLB-fill and block hooks;
here we create its per-engine state, attach the hooks to a Unicorn engine
through the engine's own libunicorn entry points, and cost blocks the first
time they execute (capstone: instruction count and cycles).
"""
from __future__ import annotations

import ctypes
from typing import Callable

try:
    from emu.cpu._fastpath import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "emu's C fast path is not built: run `pip install -e .` "
        "(or `python emu/cpu/fastpath_build.py`)") from exc

BlockCoster = Callable[[int, int], tuple[int, int]]
"""(pc, size) -> (instructions, cycles) for a block seen for the first time."""


@ffi.def_extern()
def fp_cost_block(handle, pc, size, icount, cycles):  # type: ignore[no-untyped-def]
    """C callback: cost a new block through the FastPath that owns `handle`."""
    fastpath: FastPath = ffi.from_handle(handle)
    try:
        n, c = fastpath.cost_block(pc, size)
    except Exception as exc:  # never let an exception cross the C boundary
        fastpath.callback_error = exc
        n, c = 1, 1
    icount[0] = n
    cycles[0] = c
    return 0


@ffi.def_extern()
def fp_fault(handle, vaddr, access):  # type: ignore[no-untyped-def]
    """C callback: let the kernel complete a fault in place (1) or have the CPU stop (0)."""
    fastpath: FastPath = ffi.from_handle(handle)
    if fastpath.on_fault is None or fastpath.callback_error is not None:
        return 0
    try:
        return 1 if fastpath.on_fault(vaddr, access) else 0
    except Exception as exc:  # never let an exception cross the C boundary
        fastpath.callback_error = exc
        return 0


FaultCompleter = Callable[[int, int], bool]
"""(vaddr, access) -> True when the fault was completed without stopping the CPU."""


class FastPath:
    """One engine's fast-path state: TLB fills, faults, instruction and cycle counters."""

    def __init__(self, cost_block: BlockCoster) -> None:
        """A detached state; `cost_block` prices blocks seen for the first time."""
        self.state = ffi.new("fp_state *")
        self.cost_block = cost_block
        self.callback_error: Exception | None = None
        self.on_fault: FaultCompleter | None = None
        self._handle = ffi.new_handle(self)

    def attach(self, uc_handle: int, libunicorn: ctypes.CDLL) -> None:
        """Install the C hooks on a Unicorn engine (its uc_engine* as an int)."""
        hook_add = ctypes.cast(libunicorn.uc_hook_add, ctypes.c_void_p).value
        emu_stop = ctypes.cast(libunicorn.uc_emu_stop, ctypes.c_void_p).value
        err = lib.fp_attach(ffi.cast("void *", uc_handle), ffi.cast("void *", hook_add),
                            ffi.cast("void *", emu_stop), self.state, self._handle)
        if err:
            raise RuntimeError(f"uc_hook_add failed for the fast path (uc_err {err})")

    def set_page_table(self, table_handle) -> None:  # type: ignore[no-untyped-def]
        """Make the fill hook walk `table_handle` (an fp_pagetable*), or nothing with None."""
        self.state.pt = table_handle if table_handle is not None else ffi.NULL

    def complete_faults_with(self, completer: FaultCompleter | None) -> None:
        """Offer every miss to `completer` before stopping the CPU (None: always stop)."""
        self.on_fault = completer
        self.state.inline_faults = 1 if completer is not None else 0

    def forget_blocks(self) -> None:
        """Drop every cached block cost (after code was unmapped or changed)."""
        lib.fp_blocks_clear(self.state)

    def release(self) -> None:
        """Free the C-side caches (the engine must no longer run)."""
        lib.fp_state_release(self.state)
