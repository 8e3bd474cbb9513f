"""Signal system calls: dispositions, masks, the alternate stack, waiting for and sending signals.

The mechanism is in emu/kernel/signals.py (state and rules) and
emu/kernel/sigdeliver.py (sending, delivery, rt_sigreturn).
"""
from __future__ import annotations

import errno
import signal
import struct

from emu.kernel.process import Process, Thread, ThreadState
from emu.kernel.resources import RLIMIT_SIGPENDING, capable
from emu.kernel.signals import (SI_TKILL, SI_USER, SIG_BLOCK, SIG_SETMASK, SIG_UNBLOCK,
                                SIGSET_SIZE, UNBLOCKABLE, AltStack, Overflow, Restart, SigAction,
                                SigInfo, deliverable, dequeue, queue_overflow, valid_signal)
from emu.kernel.syscalls import SyscallContext, syscall, to_int32
from emu.kernel.syscalls.threads import read_timespec
from emu.kernel.timers import Timer
from emu.mm.uaccess import BadAddress


def _read_sigset(ctx: SyscallContext, addr: int) -> int:
    return ctx.mem.read_u64(addr) & ~UNBLOCKABLE


# ---- dispositions and masks ----

@syscall("rt_sigaction")
def sys_rt_sigaction(ctx: SyscallContext, sig: int, act: int, oldact: int, sigsetsize: int,
                     *_: int) -> int:
    """Read and/or set the disposition of a signal (the kernel's struct sigaction)."""
    signo = to_int32(sig)
    if sigsetsize != SIGSET_SIZE or not valid_signal(signo):
        return -errno.EINVAL
    if act and signo in (signal.SIGKILL, signal.SIGSTOP):
        return -errno.EINVAL
    old = ctx.proc.sig.action(signo)
    if act:
        ctx.signals.set_action(ctx.proc, signo,
                                      SigAction.unpack(ctx.mem.read(act, SigAction.SIZE)))
    if oldact:
        ctx.mem.write(oldact, old.pack())
    return 0


@syscall("rt_sigprocmask")
def sys_rt_sigprocmask(ctx: SyscallContext, how: int, new: int, old: int, sigsetsize: int,
                       *_: int) -> int:
    """Block, unblock or set the calling thread's signal mask; report the previous one."""
    if sigsetsize != SIGSET_SIZE:
        return -errno.EINVAL
    previous = ctx.thread.sig.mask
    if new:
        value = _read_sigset(ctx, new)
        how = to_int32(how)
        if how == SIG_BLOCK:
            mask = previous | value
        elif how == SIG_UNBLOCK:
            mask = previous & ~value
        elif how == SIG_SETMASK:
            mask = value
        else:
            return -errno.EINVAL
        ctx.signals.set_mask(ctx.thread, mask)
    if old:
        ctx.mem.write_u64(old, previous)
    return 0


@syscall("rt_sigpending")
def sys_rt_sigpending(ctx: SyscallContext, out: int, sigsetsize: int, *_: int) -> int:
    """The signals pending for the thread or its process that its mask blocks."""
    if sigsetsize > SIGSET_SIZE:
        return -errno.EINVAL
    sig = ctx.thread.sig
    pending = (sig.pending.mask | ctx.proc.sig.shared.mask) & sig.mask
    ctx.mem.write(out, struct.pack("<Q", pending)[:sigsetsize])
    return 0


@syscall("sigaltstack")
def sys_sigaltstack(ctx: SyscallContext, new: int, old: int, *_: int) -> int:
    """Set and/or report the calling thread's alternate signal stack."""
    signals = ctx.signals
    sp = signals.user_sp()
    alt = ctx.thread.sig.altstack
    previous = alt.pack(signals.altstack_flags(alt, sp))
    if new:
        error = signals.change_altstack(ctx.thread, AltStack.unpack(ctx.mem.read(new, 24)), sp)
        if error:
            return error
    if old:
        ctx.mem.write(old, previous)
    return 0


@syscall("rt_sigreturn")
def sys_rt_sigreturn(ctx: SyscallContext, *_: int) -> None:
    """Return from a signal handler: every register comes back from the signal frame."""
    ctx.signals.sigreturn(ctx.thread)


# ---- waiting for signals ----

@syscall("rt_sigsuspend")
def sys_rt_sigsuspend(ctx: SyscallContext, mask: int, sigsetsize: int, *_: int) -> int | None:
    """Wait with a temporary mask until a signal handler runs; always fails with EINTR."""
    if sigsetsize != SIGSET_SIZE:
        return -errno.EINVAL
    thread, sched = ctx.thread, ctx.threads.sched
    sig = thread.sig
    temporary = _read_sigset(ctx, mask)
    sig.saved_mask = sig.mask           # the handler's frame saves this; restored after it
    ctx.signals.set_mask(thread, temporary)
    if deliverable(sig, ctx.proc.sig.shared):
        sig.restart = Restart.RESTARTNOHAND
        return -errno.EINTR
    token = sched.block(thread, ThreadState.SIGSUSPEND)

    def interrupted() -> Restart:
        sched.wake(thread, token, -errno.EINTR)
        return Restart.RESTARTNOHAND
    ctx.signals.waiting(thread, token, interrupted)
    return None


def _accept(thread: Thread, wanted: int) -> SigInfo | None:
    """Take a pending signal of `wanted` whether the mask blocks it or not."""
    return dequeue(thread.sig, thread.process.sig.shared, ~wanted)


def _report(proc: Process, info_addr: int, info: SigInfo) -> int:
    """rt_sigtimedwait's result: the signal number, its siginfo stored at `info_addr`."""
    if info_addr:
        try:
            proc.mem.write(info_addr, info.pack())
        except BadAddress:
            return -errno.EFAULT
    return info.signo


@syscall("rt_sigtimedwait")
def sys_rt_sigtimedwait(ctx: SyscallContext, wanted_addr: int, info_addr: int, timeout: int,
                        sigsetsize: int, *_: int) -> int | None:
    """Accept one of a set of (normally blocked) signals, waiting for it up to a timeout on the
    simulated clock (EAGAIN when it passes; EINTR if another signal's handler must run)."""
    if sigsetsize != SIGSET_SIZE:
        return -errno.EINVAL
    thread, sched, clock = ctx.thread, ctx.threads.sched, ctx.clock
    wanted = _read_sigset(ctx, wanted_addr)
    ns = read_timespec(ctx, timeout) if timeout else None
    got = _accept(thread, wanted)
    if got is not None:
        return _report(ctx.proc, info_addr, got)
    if ns == 0:
        return -errno.EAGAIN
    sig = thread.sig
    sig.real_mask = sig.mask
    sig.mask &= ~wanted                 # wanted signals now wake the thread
    token = sched.block(thread, ThreadState.SIGWAITINFO)
    timer: list[Timer] = []

    def finish(otherwise: int) -> Restart | None:
        assert sig.real_mask is not None
        sig.mask, sig.real_mask = sig.real_mask, None
        for t in timer:
            t.cancel()
        accepted = _accept(thread, wanted)
        result = otherwise if accepted is None else _report(thread.process, info_addr, accepted)
        sched.wake(thread, token, result)
        return Restart.EINTR if accepted is None else None

    def expired() -> None:
        if sched.is_waiting_on(thread, token):
            sig.wait = None
            finish(-errno.EAGAIN)
    if ns is not None:
        timer.append(ctx.threads.timers.at(clock.cycles(clock.now_ns() + ns), expired))
    ctx.signals.waiting(thread, token, lambda: finish(-errno.EINTR))
    return None


# ---- sending ----
#
# As Linux's kernel/signal.c: a pid names any thread, and kill() and sigqueue() signal the
# whole process of the thread it names; a sender without CAP_KILL whose real or effective
# uid is neither the target's real nor its saved uid may not signal it (EPERM), except
# SIGCONT within its session; beyond the target user's RLIMIT_SIGPENDING a real-time signal
# sent other than by kill() fails with EAGAIN, and others lose their siginfo.

CAP_KILL = 5


def _process_of(ctx: SyscallContext, pid: int) -> Process | None:
    """The live guest process with a thread `pid` (procnto is not one)."""
    thread = ctx.threads.find_thread(pid) if pid > 0 else None
    if thread is None or thread.process is ctx.signals.procnto or not thread.process.alive:
        return None
    return thread.process


def _may_signal(ctx: SyscallContext, target: Process, signo: int) -> bool:
    """Linux's check_kill_permission for a signal a user sends."""
    me, them = ctx.proc.creds, target.creds
    if target is ctx.proc or capable(me, CAP_KILL):
        return True
    if {me.uid, me.euid} & {them.uid, them.suid}:
        return True
    return signo == signal.SIGCONT and target.sid == ctx.proc.sid


def _queued_by_user(ctx: SyscallContext, uid: int) -> int:
    """How many signals are queued for the processes of real user `uid`."""
    return sum(p.sig.shared.count + sum(t.sig.pending.count for t in p.live_threads())
               for p in ctx.signals.processes if p.alive and p.creds.uid == uid)


def _overflow(ctx: SyscallContext, proc: Process, thread: Thread | None,
              info: SigInfo) -> Overflow:
    """What RLIMIT_SIGPENDING does to `info` sent to `proc` (or its `thread`)."""
    live = proc.live_threads()
    target = thread or (live[0] if live else None)
    if target is None or (proc.sig.action(info.signo).ignores(info.signo)
                          and not target.sig.really_blocks(info.signo)):
        return Overflow.QUEUED              # discarded, never queued
    limit = proc.res.limits[RLIMIT_SIGPENDING][0]
    return queue_overflow(info, _queued_by_user(ctx, proc.creds.uid), limit)


def _send(ctx: SyscallContext, proc: Process, info: SigInfo, thread: Thread | None = None) -> int:
    """Send `info` (signal 0: only check) to `proc`, or to its `thread`: 0 or -errno."""
    signo = info.signo
    if signo and not valid_signal(signo):
        return -errno.EINVAL
    if not _may_signal(ctx, proc, signo):
        return -errno.EPERM
    if signo:
        overflow = _overflow(ctx, proc, thread, info)
        if overflow is Overflow.REFUSED:
            return -errno.EAGAIN
        if overflow is Overflow.LOST:
            info = SigInfo(signo, SI_USER, lost=True)
        ctx.signals.send(proc, info, thread)
    return 0


@syscall("kill")
def sys_kill(ctx: SyscallContext, pid: int, sig: int, *_: int) -> int:
    """Send a signal to a process (pid > 0: the process of that thread), the caller's process
    group (0), a process group (-pgid) or every other guest process (-1)."""
    pid, signo = to_int32(pid), to_int32(sig)
    if pid == -(1 << 31):
        return -errno.ESRCH
    signals = ctx.signals
    info = SigInfo(signo, SI_USER, pid=ctx.proc.pid, uid=ctx.proc.uid)
    if pid == signals.procnto.pid:
        return -errno.EPERM
    if pid > 0:
        target = _process_of(ctx, pid)
        return -errno.ESRCH if target is None else _send(ctx, target, info)
    if pid == -1:                           # every process but init and the caller
        result, found = 0, False
        for proc in [p for p in signals.processes
                     if p.alive and p is not ctx.proc and p is not signals.procnto]:
            found = True
            error = _send(ctx, proc, info)
            if error != -errno.EPERM:
                result = error
        return result if found else -errno.ESRCH
    result, success = -errno.ESRCH, False   # a process group: success if any took it
    for proc in ctx.family.group_members(ctx.proc.pgid if pid == 0 else -pid):
        result = _send(ctx, proc, info)
        success = success or result == 0
    return 0 if success else result


def _send_to_thread(ctx: SyscallContext, thread: Thread | None, info: SigInfo) -> int:
    """tkill, tgkill, rt_tgsigqueueinfo: `info` for one thread."""
    if thread is None or not thread.process.alive:
        return -errno.ESRCH
    if thread.process is ctx.signals.procnto:
        return -errno.EPERM
    return _send(ctx, thread.process, info, thread)


def _tkill_info(ctx: SyscallContext, sig: int) -> SigInfo:
    return SigInfo(to_int32(sig), SI_TKILL, pid=ctx.proc.pid, uid=ctx.proc.uid)


@syscall("tgkill")
def sys_tgkill(ctx: SyscallContext, tgid: int, tid: int, sig: int, *_: int) -> int:
    """Send a signal to one thread of process `tgid`."""
    tgid, tid = to_int32(tgid), to_int32(tid)
    if tgid <= 0 or tid <= 0:
        return -errno.EINVAL
    thread = ctx.threads.find_thread(tid)
    if thread is not None and thread.process.pid != tgid:
        thread = None
    return _send_to_thread(ctx, thread, _tkill_info(ctx, sig))


@syscall("tkill")
def sys_tkill(ctx: SyscallContext, tid: int, sig: int, *_: int) -> int:
    """Send a signal to one thread."""
    tid = to_int32(tid)
    if tid <= 0:
        return -errno.EINVAL
    return _send_to_thread(ctx, ctx.threads.find_thread(tid), _tkill_info(ctx, sig))


# ---- queueing a signal with its siginfo ----

def _user_siginfo(ctx: SyscallContext, signo: int, addr: int, target_tid: int) -> SigInfo:
    """The siginfo a caller queues: its code and union as given, the signal number ours. A
    code the kernel or kill/tkill would set (>= 0, or SI_TKILL) may only go to oneself."""
    _, err, code, body_pid, body_uid, value = struct.unpack("<iii4xiIQ", ctx.mem.read(addr, 32))
    if (code >= 0 or code == SI_TKILL) and target_tid != ctx.thread.tid:
        raise OSError(errno.EPERM, "cannot impersonate the kernel")
    return SigInfo(signo, code, errno=err, pid=body_pid, uid=body_uid, value=value,
                   addr=body_pid & 0xFFFFFFFF | body_uid << 32)


@syscall("rt_sigqueueinfo")
def sys_rt_sigqueueinfo(ctx: SyscallContext, tgid: int, sig: int, uinfo: int, *_: int) -> int:
    """Queue a signal with a caller-made siginfo (sigqueue) to the process of thread `tgid`."""
    pid, signo = to_int32(tgid), to_int32(sig)
    info = _user_siginfo(ctx, signo, uinfo, pid)
    if pid == ctx.signals.procnto.pid:
        return -errno.EPERM
    target = _process_of(ctx, pid)
    return -errno.ESRCH if target is None else _send(ctx, target, info)


@syscall("rt_tgsigqueueinfo")
def sys_rt_tgsigqueueinfo(ctx: SyscallContext, tgid: int, tid: int, sig: int, uinfo: int,
                          *_: int) -> int:
    """Queue a signal with a caller-made siginfo to thread `tid` of process `tgid`."""
    tgid, tid, signo = to_int32(tgid), to_int32(tid), to_int32(sig)
    if tgid <= 0 or tid <= 0:
        return -errno.EINVAL
    info = _user_siginfo(ctx, signo, uinfo, tid)
    thread = ctx.threads.find_thread(tid)
    if thread is not None and thread.process.pid != tgid:
        thread = None
    return _send_to_thread(ctx, thread, info)
