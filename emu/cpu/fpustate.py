"""Where Unicorn keeps the x86 floating-point state, for the fast path's flag merge.

Unicorn 2.1 (QEMU 5.0) lets softfloat accrue exception flags in `env->sse_status` and
`env->fp_status` and never copies them into MXCSR or the x87 status word, so a guest's
`fetestexcept` sees none. The fast path copies them at every block start and every stop
(`fpu_merge` in csrc/fastpath.c). This module finds the fields in the engine's
CPUX86State: `env` by the general registers (its first field), `mxcsr` and `fpuc` by
values written through Unicorn's API, and the two float_status structs by their place in
QEMU 5.0's layout, each checked by the rounding mode and precision Unicorn derives from
the control registers. Anything unexpected leaves the merge off.
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass

import unicorn
from unicorn import x86_const as x86

from emu.cpu.fastpath import ffi

_GPRS = (x86.UC_X86_REG_RAX, x86.UC_X86_REG_RCX, x86.UC_X86_REG_RDX, x86.UC_X86_REG_RBX)
_MARK = 0x5EED_F00D_0000_0000
_SEARCH = 1 << 20               # env lies within this distance of the CPUState
_ENV_SPAN = 4096                # mxcsr and fpuc lie within this distance of env
_FLAGS = 2                      # float_status.float_exception_flags
_ROUNDING, _PRECISION = 1, 3    # float_status.float_rounding_mode, floatx80_rounding_precision
_SSE_STATUS = -8                # sse_status immediately precedes mxcsr
_FP_STATUS = -40                # fp_status, ft0 (16), mmx_status (8), sse_status (8), mxcsr


@dataclass(frozen=True, slots=True)
class FpuFields:
    """Host addresses of the fields the flag merge touches."""

    mxcsr: int
    sse_flags: int
    fsw: int
    fcw: int
    x87_flags: int


def locate(uc: unicorn.Uc, cpu: int) -> FpuFields | None:
    """The fields of the engine whose CPUState is at host address `cpu`, or None; the
    registers are unchanged afterwards."""
    saved = uc.context_save()
    try:
        return _locate(uc, cpu)
    finally:
        uc.context_restore(saved)


def _read(address: int, size: int) -> bytes:
    return bytes(ffi.buffer(ffi.cast("char *", address), size))


def _find_env(uc: unicorn.Uc, cpu: int) -> int | None:
    """The address of env->regs, found page by page (never reading past the object)."""
    for i, reg in enumerate(_GPRS):
        uc.reg_write(reg, _MARK + i)
    pattern = struct.pack("<4Q", *(_MARK + i for i in range(4)))
    page = mmap.PAGESIZE
    tail, start = b"", cpu
    while start < cpu + _SEARCH:            # a page at a time, keeping the last bytes
        end = (start // page + 1) * page
        data = tail + _read(start, end - start)
        base = start - len(tail)
        at = data.find(pattern)
        while at >= 0 and (base + at) % 8:
            at = data.find(pattern, at + 1)
        if at >= 0:
            return base + at
        tail, start = data[-(len(pattern) - 1):], end
    return None


def _offset_of(uc: unicorn.Uc, env: int, reg: int, values: tuple[int, int], fmt: str) -> int | None:
    """The one offset in env where writing `reg` stores each of `values` verbatim."""
    found: set[int] | None = None
    width = struct.calcsize(fmt)
    for value in values:
        uc.reg_write(reg, value)
        data = _read(env, _ENV_SPAN)
        hits = {off for off in range(0, _ENV_SPAN - width + 1, width)
                if struct.unpack_from(fmt, data, off)[0] == value}
        found = hits if found is None else found & hits
    return next(iter(found)) if found and len(found) == 1 else None


def _locate(uc: unicorn.Uc, cpu: int) -> FpuFields | None:
    env = _find_env(uc, cpu)
    if env is None:
        return None
    mxcsr = _offset_of(uc, env, x86.UC_X86_REG_MXCSR, (0xA5C3_1F80, 0x3C5A_1F80), "<I")
    fcw = _offset_of(uc, env, x86.UC_X86_REG_FPCW, (0x0A7F, 0x067F), "<H")
    if mxcsr is None or fcw is None:
        return None
    sse, fp = env + mxcsr + _SSE_STATUS, env + mxcsr + _FP_STATUS
    for value, rounding in ((0x7F80, 3), (0x3F80, 1), (0x1F80, 0)):     # MXCSR.RC
        uc.reg_write(x86.UC_X86_REG_MXCSR, value)
        if _read(sse + _ROUNDING, 1)[0] != rounding:
            return None
    for value, rounding, precision in ((0x0F7F, 3, 80), (0x027F, 0, 64), (0x037F, 0, 80)):
        uc.reg_write(x86.UC_X86_REG_FPCW, value)                        # FCW.RC, FCW.PC
        if tuple(_read(fp + _ROUNDING, 3)[::2]) != (rounding, precision):
            return None
    fsw = env + fcw - 2                 # uint16_t fpus; uint16_t fpuc;
    uc.reg_write(x86.UC_X86_REG_FPSW, 0x0041)
    if struct.unpack("<H", _read(fsw, 2))[0] != 0x0041:
        return None
    return FpuFields(env + mxcsr, sse + _FLAGS, fsw, env + fcw, fp + _FLAGS)


def install(state, fields: FpuFields | None) -> None:  # type: ignore[no-untyped-def]
    """Point the fast path's flag merge at `fields` (None: no merge)."""
    if fields is None:
        state.fpu_mxcsr = ffi.NULL
        return
    state.fpu_sse_flags = ffi.cast("uint8_t *", fields.sse_flags)
    state.fpu_fsw = ffi.cast("uint16_t *", fields.fsw)
    state.fpu_fcw = ffi.cast("uint16_t *", fields.fcw)
    state.fpu_x87_flags = ffi.cast("uint8_t *", fields.x87_flags)
    state.fpu_mxcsr = ffi.cast("uint32_t *", fields.mxcsr)
