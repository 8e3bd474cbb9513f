"""Signals, the mechanism (no CPU): dispositions, masks, pending sets, choosing a thread,
default actions, and the signal frame layouts checked against Linux's own structs."""
from __future__ import annotations

import shutil
import signal
import struct
import subprocess
from pathlib import Path

import pytest

from emu.kernel.process import Process, Thread
from emu.kernel.sigframe import (
    A64_FRAME_SIZE,
    A64_MCONTEXT,
    A64_RESERVED,
    A64_SIGMASK,
    A64_UC,
    FPSIMD_MAGIC,
    FPSIMD_SIZE,
    FXSAVE_SIZE,
    X86_FPSTATE_PTR,
    X86_FRAME_SIZE,
    X86_INFO,
    X86_MCONTEXT,
    X86_SIGMASK,
    X86_UC,
    Aarch64Frames,
    BadFrame,
    Delivery,
    X86_64Frames,
    fxrstor,
    fxsave,
)
from emu.kernel.signals import (
    SA_NODEFER,
    SA_RESETHAND,
    SA_SIGINFO,
    SI_TKILL,
    SIG_DFL,
    SIG_IGN,
    SS_AUTODISARM,
    SS_DISABLE,
    SYNCHRONOUS,
    UNBLOCKABLE,
    AltStack,
    Default,
    PendingSet,
    ProcessSignals,
    SigAction,
    SigInfo,
    ThreadSignals,
    after_handler,
    choose_thread,
    default_action,
    deliverable,
    dequeue,
    handler_mask,
    next_signal,
    sigbit,
)

USR1, USR2, SEGV = signal.SIGUSR1, signal.SIGUSR2, signal.SIGSEGV


# ---- dispositions and default actions ----

@pytest.mark.parametrize("signo,action", [
    (signal.SIGTERM, Default.TERMINATE), (signal.SIGKILL, Default.TERMINATE),
    (USR1, Default.TERMINATE), (40, Default.TERMINATE), (signal.SIGSEGV, Default.CORE),
    (signal.SIGABRT, Default.CORE), (signal.SIGXCPU, Default.CORE),
    (signal.SIGCHLD, Default.IGNORE), (signal.SIGWINCH, Default.IGNORE),
    (signal.SIGCONT, Default.IGNORE), (signal.SIGTSTP, Default.STOP),
    (signal.SIGSTOP, Default.STOP),
])
def test_default_actions(signo: int, action: Default) -> None:
    assert default_action(signo) is action


def test_sigaction_is_the_kernel_struct_and_drops_unblockable_signals() -> None:
    act = SigAction(handler=0x401000, flags=0x04000004, restorer=0x402000,
                    mask=sigbit(USR2) | UNBLOCKABLE)
    data = act.pack()
    assert len(data) == SigAction.SIZE == 32
    assert struct.unpack("<QQQQ", data) == (0x401000, 0x04000004, 0x402000, act.mask)
    assert SigAction.unpack(data) == SigAction(0x401000, 0x04000004, 0x402000, sigbit(USR2))


def test_what_a_disposition_ignores() -> None:
    assert SigAction(SIG_IGN).ignores(USR1)
    assert SigAction(SIG_DFL).ignores(signal.SIGCHLD)
    assert SigAction(SIG_DFL).ignores(signal.SIGTSTP)        # stop: treated as ignore
    assert not SigAction(SIG_DFL).ignores(USR1)
    assert not SigAction(0x401000).ignores(signal.SIGCHLD)
    assert SigAction(0x401000).is_handler and not SigAction(SIG_IGN).is_handler


def test_handler_mask_and_resethand() -> None:
    act = SigAction(0x401000, mask=sigbit(USR2))
    assert handler_mask(0, act, USR1) == sigbit(USR1) | sigbit(USR2)
    nodefer = SigAction(0x401000, flags=SA_NODEFER)
    assert handler_mask(sigbit(SEGV), nodefer, USR1) == sigbit(SEGV)
    assert handler_mask(0, SigAction(0x1, mask=UNBLOCKABLE), USR1) == sigbit(USR1)
    oneshot = SigAction(0x401000, flags=SA_RESETHAND | SA_SIGINFO, mask=sigbit(USR2))
    assert after_handler(oneshot, USR1) == SigAction(0, flags=SA_RESETHAND | SA_SIGINFO,
                                                     mask=sigbit(USR2))   # flags stay
    assert after_handler(act, USR1) is act


def test_fork_keeps_handlers_and_exec_resets_them() -> None:
    sigs = ProcessSignals()
    sigs.actions[USR1] = SigAction(0x401000)
    sigs.actions[USR2] = SigAction(SIG_IGN)
    sigs.shared.add(SigInfo(USR1))
    child = sigs.copy_for_fork()
    assert child.actions[USR1] == SigAction(0x401000) and child.shared.mask == 0
    sigs.reset_for_exec()
    assert sigs.actions[USR1] == SigAction() and sigs.actions[USR2] == SigAction(SIG_IGN)


# ---- pending sets and choosing ----

def test_standard_signals_coalesce_and_realtime_ones_queue() -> None:
    pending = PendingSet()
    assert pending.add(SigInfo(USR1, pid=1)) and not pending.add(SigInfo(USR1, pid=2))
    assert pending.add(SigInfo(40, value=1)) and pending.add(SigInfo(40, value=2))
    assert pending.mask == sigbit(USR1) | sigbit(40)
    assert [pending.take(40).value, pending.take(40).value] == [1, 2]
    assert pending.take(USR1).pid == 1 and pending.take(USR1) is None
    assert pending.mask == 0


def test_next_signal_takes_synchronous_ones_first_then_the_lowest() -> None:
    both = sigbit(USR1) | sigbit(SEGV) | sigbit(signal.SIGHUP)
    assert next_signal(both, 0) == SEGV
    assert next_signal(both, sigbit(SEGV)) == signal.SIGHUP
    assert next_signal(both, both) == 0
    assert SYNCHRONOUS & sigbit(signal.SIGBUS)


def test_dequeue_prefers_the_thread_and_respects_the_mask() -> None:
    sig, shared = ThreadSignals(), PendingSet()
    shared.add(SigInfo(signal.SIGHUP))
    sig.pending.add(SigInfo(USR2))
    assert deliverable(sig, shared)
    assert dequeue(sig, shared, 0).signo == USR2
    assert dequeue(sig, shared, sigbit(signal.SIGHUP)) is None
    assert not deliverable(ThreadSignals(mask=sigbit(signal.SIGHUP)), shared)
    assert dequeue(sig, shared, 0).signo == signal.SIGHUP


def test_choose_thread_takes_the_first_that_does_not_block() -> None:
    proc = Process(pid=5, arch="x86_64", space=None, mem=None, root=None, exe_path="t")
    main = Thread(tid=5, process=proc, sig=ThreadSignals(mask=sigbit(USR1)))
    other = Thread(tid=6, process=proc)
    assert choose_thread([main, other], USR1) is other
    assert choose_thread([main, other], USR2) is main
    other.sig.mask = sigbit(USR1)
    assert choose_thread([main, other], USR1) is None


def test_new_threads_inherit_the_mask_only() -> None:
    sig = ThreadSignals(mask=sigbit(USR1), altstack=AltStack(0x1000, 0x4000, 0))
    sig.pending.add(SigInfo(USR2))
    child = sig.for_new_thread()
    assert child.mask == sigbit(USR1) and child.pending.mask == 0
    assert child.altstack.flags & SS_DISABLE
    forked = sig.for_fork()
    assert forked.mask == sig.mask and forked.altstack == sig.altstack
    assert forked.altstack is not sig.altstack and forked.pending.mask == 0


def test_altstack_contains_and_stack_t() -> None:
    alt = AltStack(0x10000, 0x2000, 0)
    assert alt.contains(0x12000) and alt.contains(0x10001) and not alt.contains(0x10000)
    assert not AltStack(0x10000, 0x2000, SS_DISABLE).contains(0x11000)
    assert not AltStack(0x10000, 0x2000, SS_AUTODISARM).contains(0x11000)
    assert AltStack.unpack(alt.pack()) == alt
    assert struct.unpack("<Qi4xQ", alt.pack(flags=1)) == (0x10000, 1, 0x2000)


def test_siginfo_layouts() -> None:
    fault = SigInfo(SEGV, 2, addr=0xdead000).pack()
    assert len(fault) == 128
    assert struct.unpack_from("<iiiiQ", fault) == (SEGV, 0, 2, 0, 0xdead000)
    kill = SigInfo(USR1, SI_TKILL, pid=42, uid=1000).pack()
    assert struct.unpack_from("<iiiiiI", kill) == (USR1, 0, SI_TKILL, 0, 42, 1000)


# ---- frames: Linux's struct layouts ----

X86_REGS = {**{n: 0x1000 + i for i, n in enumerate(
    ("r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rdi", "rsi", "rbp", "rbx", "rdx",
     "rax", "rcx"))}, "rsp": 0x7ffff000_0123, "rip": 0x401234, "eflags": 0x446,
    "fcw": 0x37f, "fsw": 3 << 11, "fptag": 0xFFFF & ~(3 << 6), "fop": 0, "fip": 0x401000,
    "fdp": 0x602000, "mxcsr": 0x1f80, **{f"fp{i}": (0x3fff << 64) | (i + 1) << 60 for i in range(8)},
    **{f"xmm{i}": (0x0123456789abcdef << 64) | i for i in range(16)}}
A64_REGS = {**{f"x{i}": 0x100 + i for i in range(31)}, "sp": 0x7ffff000_0120, "pc": 0x400800,
            "nzcv": 0x6000_0000, "fpsr": 0x10, "fpcr": 0x0300_0000,
            **{f"v{i}": (i << 100) | 0xabc for i in range(32)}}


def _delivery(regs: dict[str, int], siginfo: bool = True) -> Delivery:
    return Delivery(SigInfo(USR1, SI_TKILL, pid=2), siginfo, handler=0x405000, restorer=0x406000,
                    mask=sigbit(USR2), stack=AltStack().pack(), regs=regs)


def _memory(built) -> callable:  # type: ignore[no-untyped-def]
    def read(addr: int, n: int) -> bytes:
        off = addr - built.start
        assert 0 <= off and off + n <= len(built.data)
        return built.data[off:off + n]
    return read


def test_x86_frame_layout_and_handler_entry() -> None:
    built = X86_64Frames().build(X86_REGS["rsp"], None, _delivery(X86_REGS))
    frame = built.start
    assert (frame + 8) % 16 == 0                      # as if called: rsp + 8 is 16-aligned
    assert frame + X86_FRAME_SIZE <= X86_REGS["rsp"] - 128      # below the red zone
    data = built.data
    assert struct.unpack_from("<Q", data, 0)[0] == 0x406000     # pretcode = restorer
    fpstate = struct.unpack_from("<Q", data, X86_FPSTATE_PTR)[0]
    assert fpstate % 64 == 0 and fpstate + FXSAVE_SIZE == frame + len(data)
    assert struct.unpack_from("<Q", data, X86_MCONTEXT + 128)[0] == 0x401234       # rip
    assert struct.unpack_from("<Q", data, X86_SIGMASK)[0] == sigbit(USR2)
    assert struct.unpack_from("<i", data, X86_INFO)[0] == USR1
    assert built.regs == {"rdi": USR1, "rsi": frame + X86_INFO, "rdx": frame + X86_UC, "rax": 0,
                          "rsp": frame, "rip": 0x405000, "eflags": 0x46}      # DF cleared


def test_x86_sigreturn_restores_what_the_frame_saved() -> None:
    frames = X86_64Frames()
    built = frames.build(X86_REGS["rsp"], None, _delivery(X86_REGS))
    restored = frames.parse(frames.frame_for_sigreturn(built.start + 8), _memory(built))
    assert restored.regs == X86_REGS
    assert restored.mask == sigbit(USR2) and restored.stack == AltStack()


def test_fxsave_stores_st_in_stack_order() -> None:
    image = fxsave(X86_REGS)
    top = 3
    assert int.from_bytes(image[32:42], "little") == X86_REGS[f"fp{top}"]      # ST(0)
    assert image[4] == 1 << 3                        # abridged tags: only register 3 in use
    assert fxrstor(image) == {k: v for k, v in X86_REGS.items()
                              if k[:2] in ("fc", "fs", "fp", "fo", "fi", "fd", "mx", "xm")}


def test_x86_frame_on_the_alternate_stack() -> None:
    alt = AltStack(0x20000, 0x8000, 0)
    built = X86_64Frames().build(X86_REGS["rsp"], alt, _delivery(X86_REGS))
    assert alt.contains(built.start) and built.start + len(built.data) <= 0x28000


def test_aarch64_frame_layout_and_handler_entry() -> None:
    built = Aarch64Frames().build(A64_REGS["sp"], None, _delivery(A64_REGS))
    frame, data = built.start, built.data
    assert frame % 16 == 0
    record = frame + A64_FRAME_SIZE
    assert record + 16 <= A64_REGS["sp"] and len(data) == A64_FRAME_SIZE + 16
    assert struct.unpack_from("<QQ", data, A64_FRAME_SIZE) == (A64_REGS["x29"], A64_REGS["x30"])
    assert struct.unpack_from("<II", data, A64_RESERVED) == (FPSIMD_MAGIC, FPSIMD_SIZE)
    assert struct.unpack_from("<II", data, A64_RESERVED + FPSIMD_SIZE) == (0, 0)   # end record
    assert struct.unpack_from("<Q", data, A64_MCONTEXT + 8 + 8 * 30)[0] == A64_REGS["x30"]
    assert struct.unpack_from("<Q", data, A64_SIGMASK)[0] == sigbit(USR2)
    assert built.regs == {"x0": USR1, "x1": frame, "x2": frame + A64_UC, "sp": frame,
                          "x29": record, "x30": 0x406000, "pc": 0x405000}
    plain = Aarch64Frames().build(A64_REGS["sp"], None, _delivery(A64_REGS, siginfo=False))
    assert "x1" not in plain.regs and "x2" not in plain.regs


def test_aarch64_sigreturn_restores_and_rejects_bad_frames() -> None:
    frames = Aarch64Frames()
    built = frames.build(A64_REGS["sp"], None, _delivery(A64_REGS))
    restored = frames.parse(frames.frame_for_sigreturn(built.start), _memory(built))
    assert restored.regs == A64_REGS and restored.mask == sigbit(USR2)
    for offset, value in ((A64_RESERVED, 0x12345678),                   # unknown record
                          (A64_MCONTEXT + 272, 0x3c5)):                  # pstate: EL1h
        bad = bytearray(built.data)
        struct.pack_into("<I", bad, offset, value)
        with pytest.raises(BadFrame):
            frames.parse(built.start, lambda a, n, d=bytes(bad): d[a - built.start:a - built.start + n])
    with pytest.raises(BadFrame):
        frames.parse(built.start + 8, _memory(built))                  # misaligned


_X86_STRUCTS = """
#include <stddef.h>
#include <asm/signal.h>
#include <asm/sigcontext.h>
#include <asm/ucontext.h>
#include <asm/siginfo.h>
struct rt_sigframe {{ char *pretcode; struct ucontext uc; struct siginfo info; }};
_Static_assert(sizeof(struct rt_sigframe) == {size}, "size");
_Static_assert(offsetof(struct rt_sigframe, uc) == {uc}, "uc");
_Static_assert(offsetof(struct rt_sigframe, uc.uc_mcontext) == {mc}, "mcontext");
_Static_assert(offsetof(struct rt_sigframe, uc.uc_mcontext.fpstate) == {fp}, "fpstate");
_Static_assert(offsetof(struct rt_sigframe, uc.uc_sigmask) == {mask}, "sigmask");
_Static_assert(offsetof(struct rt_sigframe, info) == {info}, "info");
_Static_assert(sizeof(struct _fpstate_64) == {fx}, "fxsave");
"""
_A64_STRUCTS = """
#include <stddef.h>
#include <asm/signal.h>
#include <asm/sigcontext.h>
#include <asm/ucontext.h>
#include <asm/siginfo.h>
struct rt_sigframe {{ struct siginfo info; struct ucontext uc; }};
_Static_assert(sizeof(struct rt_sigframe) == {size}, "size");
_Static_assert(offsetof(struct rt_sigframe, uc) == {uc}, "uc");
_Static_assert(offsetof(struct rt_sigframe, uc.uc_sigmask) == {mask}, "sigmask");
_Static_assert(offsetof(struct rt_sigframe, uc.uc_mcontext) == {mc}, "mcontext");
_Static_assert(offsetof(struct rt_sigframe, uc.uc_mcontext.__reserved) == {res}, "reserved");
_Static_assert(sizeof(struct fpsimd_context) == {fpsimd}, "fpsimd_context");
_Static_assert(FPSIMD_MAGIC == {magic}, "magic");
"""


@pytest.mark.parametrize("compiler,source", [
    ("gcc", _X86_STRUCTS.format(size=X86_FRAME_SIZE, uc=X86_UC, mc=X86_MCONTEXT,
                                fp=X86_FPSTATE_PTR, mask=X86_SIGMASK, info=X86_INFO,
                                fx=FXSAVE_SIZE)),
    ("aarch64-linux-gnu-gcc", _A64_STRUCTS.format(size=A64_FRAME_SIZE, uc=A64_UC, mask=A64_SIGMASK,
                                                  mc=A64_MCONTEXT, res=A64_RESERVED,
                                                  fpsimd=FPSIMD_SIZE, magic=FPSIMD_MAGIC)),
], ids=["x86_64", "aarch64"])
def test_frame_offsets_match_the_linux_uapi_structs(tmp_path: Path, compiler: str,
                                                    source: str) -> None:
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} is not installed")
    path = tmp_path / "frame.c"
    path.write_text(source)
    result = subprocess.run([compiler, "-fsyntax-only", str(path)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr
