"""Process families: fork (copy-on-write), vfork, execve, wait4/waitid and reaping.

A forked child gets a copy of its parent's address space whose private pages
are shared copy-on-write (emu/mm/vmspace.py `fork_into`), a copy of the
descriptor table, and one thread continuing from the same system call with
result 0. An exited child stays a zombie until its parent collects its status;
a parent blocked in wait4/waitid waits REPLY-blocked (as on procnto in QNX)
and is woken exactly once with the child's pid.
"""
from __future__ import annotations

import errno
import os
import signal
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from emu.errors import EmuError
from emu.kernel.process import Process, Thread, ThreadState
from emu.kernel.signals import AltStack
from emu.loader.elf import read_elf

if TYPE_CHECKING:
    from emu.kernel.kernel import Kernel

WNOHANG = 1
WEXITED = 4
P_ALL, P_PID = 0, 1
CLD_EXITED, CLD_KILLED = 1, 2


@dataclass(eq=False)
class Waiter:
    """A thread blocked in wait4 or waitid."""

    thread: Thread
    token: object
    pid: int                 # -1: any child
    out: int                 # status (wait4) or siginfo (waitid) address, 0 for none
    siginfo: bool            # waitid's siginfo_t instead of wait4's status word


def wait_status(proc: Process) -> int:
    """The wait4 status word of an exited process."""
    assert proc.exit is not None
    return proc.exit.signal if proc.exit.signal else (proc.exit.code & 0xFF) << 8


class Family:
    """Parents, children and the calls that relate them."""

    def __init__(self, kernel: Kernel) -> None:
        """Family bookkeeping for `kernel`."""
        self.kernel = kernel
        self._waiters: list[Waiter] = []

    # ---- fork and vfork ----

    def fork(self, parent: Thread, vfork: bool = False) -> Thread:
        """A child process copying `parent`'s process (copy-on-write); returns its thread.

        With `vfork`, the parent thread blocks until the child execs or exits (the
        child still gets its own copy of the memory, which POSIX allows)."""
        k = self.kernel
        pp = parent.process
        child = k.new_process(pp.arch, pp.exe_path, pp.uid, parent=pp)
        child.cwd, child.umask, child.root = pp.cwd, pp.umask, pp.root
        child.fds = pp.fds.clone()
        child.sig = pp.sig.copy_for_fork()          # same dispositions, nothing pending
        child.parent = pp
        pp.children.append(child)
        pp.space.fork_into(child.space)
        engine = k.engine
        context = engine.derived_context({engine.spec.syscall_ret: 0})
        thread = Thread(tid=child.pid, process=child, pc=engine.pc, context=context,
                        priority=parent.base_priority, base_priority=parent.base_priority,
                        policy=parent.policy, name="main", sig=parent.sig.for_fork())
        k.add_thread(thread)
        if vfork:
            token = k.sched.block(parent, ThreadState.REPLY)
            child.vfork_parent = (parent, token)
            parent.pending_result = child.pid
        return thread

    def _release_vfork_parent(self, proc: Process) -> None:
        if proc.vfork_parent is not None:
            thread, token = proc.vfork_parent
            proc.vfork_parent = None
            if self.kernel.sched.is_waiting_on(thread, token):
                self.kernel.sched.wake(thread, token)

    # ---- execve ----

    def exec(self, thread: Thread, guest_path: str, host_path: str, argv: list[str],
             envp: list[str]) -> int | None:
        """Replace `thread`'s process image; a negative errno if the file cannot run (the
        process is untouched then), None once the new image is in place."""
        k = self.kernel
        proc = thread.process
        if not os.path.exists(host_path):
            return -errno.ENOENT
        if not os.access(host_path, os.X_OK) or os.path.isdir(host_path):
            return -errno.EACCES
        try:
            image = read_elf(host_path)
        except EmuError:
            return -errno.ENOEXEC
        if image.arch != proc.arch:
            return -errno.ENOEXEC
        for other in proc.threads:
            if other is not thread:
                k.sched.kill(other)
        proc.space.release_all()
        proc.fds.close_on_exec()
        proc.lock_future = proc.superlocked = False      # exec releases locks
        proc.sig.reset_for_exec()                         # caught signals back to SIG_DFL
        thread.sig.altstack = AltStack()
        proc.exe_path = guest_path
        thread.clear_child_tid = 0
        sp = k.load_image(proc, image, argv, envp)
        assert sp is not None, "an unlocked image always fits"
        k.note_exec(proc)
        k.engine.restore_context(k.fresh_context(sp))
        thread.pc = image.entry
        self._release_vfork_parent(proc)
        return None

    # ---- waiting ----

    def wait(self, thread: Thread, pid: int, out: int, options: int, siginfo: bool) -> int | None:
        """wait4/waitid: reap an exited child matching `pid` (-1: any); 0 with WNOHANG when
        none has exited; -ECHILD without such children; None while the caller blocks."""
        proc = thread.process
        children = [c for c in proc.children if not c.reaped and pid in (-1, c.pid)]
        if not children:
            return -errno.ECHILD
        for child in children:
            if child.exit is not None:
                return self._reap(proc, child, out, siginfo)
        if options & WNOHANG:
            if siginfo and out:
                proc.mem.write(out, bytes(128))
            return 0
        token = self.kernel.sched.block(thread, ThreadState.REPLY)
        self._waiters.append(Waiter(thread, token, pid, out, siginfo))
        return None

    def _reap(self, parent: Process, child: Process, out: int, siginfo: bool) -> int:
        """Collect `child`'s status into the parent's memory; the call's result (waitid: 0,
        wait4: the child's pid)."""
        child.reaped = True
        if out and siginfo:
            assert child.exit is not None
            code = CLD_KILLED if child.exit.signal else CLD_EXITED
            status = child.exit.signal or child.exit.code
            parent.mem.write(out, struct.pack("<iii4xiii", signal.SIGCHLD, 0, code, child.pid,
                                              child.uid, status).ljust(128, b"\0"))
            return 0
        if out:
            parent.mem.write(out, struct.pack("<i", wait_status(child)))
        return child.pid

    def on_exit(self, proc: Process) -> None:
        """`proc` has exited: release a vfork parent; hand the status to a waiting parent
        thread (woken once); orphan its children."""
        self._release_vfork_parent(proc)
        for child in proc.children:
            child.parent = None
        parent = proc.parent
        if parent is None:
            proc.reaped = True
            return
        sched = self.kernel.sched
        for waiter in list(self._waiters):
            if not sched.is_waiting_on(waiter.thread, waiter.token):
                self._waiters.remove(waiter)           # its process died meanwhile
            elif waiter.thread.process is parent and waiter.pid in (-1, proc.pid):
                self._waiters.remove(waiter)
                sched.wake(waiter.thread, waiter.token,
                           self._reap(parent, proc, waiter.out, waiter.siginfo))
                return
