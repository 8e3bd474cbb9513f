"""Process families: fork (copy-on-write), vfork, execve, wait4/waitid and reaping.

A forked child gets a copy of its parent's address space whose private pages
are shared copy-on-write (emu/mm/vmspace.py `fork_into`), a copy of the
descriptor table, and one thread continuing from the same system call with
result 0. An exited child stays a zombie until its parent collects its status;
a parent blocked in wait4/waitid waits REPLY-blocked (as on procnto in QNX) on
its `child_events` queue, and runs its call again when a child exits; a signal
interrupts the wait. A child's exit sends SIGCHLD to its parent (CLD_EXITED,
CLD_KILLED or CLD_DUMPED, with the status), unless the parent ignores SIGCHLD or set
SA_NOCLDWAIT: then the child is reaped at once, as on Linux.

vfork and clone(CLONE_VM) children (posix_spawn, system, popen) run in their
parent's memory, on the stack they were given, until they exec or exit.
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
from emu.kernel.signals import SA_NOCLDWAIT, SI_USER, SIG_IGN, AltStack, SigInfo
from emu.kernel.locks import LockTable
from emu.kernel.waitq import Blocking, WaitQueue
from emu.loader.elf import read_elf

if TYPE_CHECKING:
    from emu.kernel.kernel import Kernel

WNOHANG, WUNTRACED, WEXITED, WCONTINUED, WNOWAIT = 1, 2, 4, 8, 0x01000000
P_ALL, P_PID, P_PGID = 0, 1, 2
CLD_EXITED, CLD_KILLED, CLD_DUMPED = 1, 2, 3


@dataclass(frozen=True)
class ChildFilter:
    """Which children a wait4/waitid accepts: any (-1), a pid, or a process group."""

    pid: int = -1
    pgid: int | None = None

    def accepts(self, child: Process) -> bool:
        """Whether `child` matches."""
        if self.pgid is not None:
            return child.pgid == self.pgid
        return self.pid in (-1, child.pid)


def wait_status(proc: Process) -> int:
    """The wait4 status word of an exited process."""
    assert proc.exit is not None
    return proc.exit.signal if proc.exit.signal else (proc.exit.code & 0xFF) << 8


class Family:
    """Parents, children and the calls that relate them."""

    def __init__(self, kernel: Kernel, blocking: Blocking, locks: LockTable) -> None:
        """Family bookkeeping for `kernel`; waits block through `blocking`; an exiting
        process's record locks in `locks` go with it."""
        self.kernel = kernel
        self.blocking = blocking
        self.locks = locks

    # ---- fork and vfork ----

    def fork(self, parent: Thread, vfork: bool = False, share_memory: bool = False,
             stack: int = 0) -> Thread:
        """A child process of `parent`'s process; returns its thread.

        Its memory is a copy-on-write copy, or with `share_memory` (CLONE_VM, as vfork and
        posix_spawn use) the parent's own memory until the child execs or exits. With `vfork`
        the parent thread blocks until then. `stack`, if given, is the child's stack pointer."""
        k = self.kernel
        pp = parent.process
        child = k.new_process(pp.arch, pp.exe_path, pp.uid, parent=pp)
        child.cwd, child.umask, child.root = pp.cwd, pp.umask, pp.root
        child.fds = pp.fds.clone()
        child.sig = pp.sig.copy_for_fork()          # same dispositions, nothing pending
        child.parent = pp
        pp.children.append(child)
        if share_memory:
            child.space, child.mem, child.borrows_space = pp.space, pp.mem, True
        else:
            pp.space.fork_into(child.space)
        engine = k.engine
        changes = {engine.spec.syscall_ret: 0}
        if stack:
            changes[engine.spec.sp] = stack
        context = engine.derived_context(changes)
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
        if proc.borrows_space:              # the parent keeps its memory; the child gets its own
            proc.space, proc.mem = k.new_space()
            proc.space.owner = proc.pid
            proc.borrows_space = False
            k.load_space(proc.space)
        else:
            proc.space.release_all()
        proc.fds.close_on_exec()
        proc.lock_future = proc.superlocked = False      # exec releases locks
        proc.sig.reset_for_exec()                         # caught signals back to SIG_DFL
        thread.sig.altstack = AltStack()
        proc.exe_path = guest_path
        thread.clear_child_tid = 0
        sp = k.load_image(proc, image, argv or [""], envp)     # Linux: argc >= 1 always
        if sp is None:              # past the point of no return: Linux kills it (SIGKILL)
            k.diagnose(thread, f"pid {proc.pid}: not enough RAM to exec {guest_path}")
            k.kill(proc, signal.SIGKILL)
            return None
        k.note_exec(proc)
        k.engine.restore_context(k.fresh_context(sp))
        thread.pc = image.entry
        self._release_vfork_parent(proc)
        return None

    def open_for_writing(self, st: os.stat_result) -> bool:
        """Whether any live process holds the file of status `st` open for writing (exec of
        it is then ETXTBSY)."""
        for proc in self._guests():
            if not proc.alive:
                continue
            for fd in proc.fds.numbers():
                file = proc.fds.get(fd)
                if file.kernel_object is None and not file.is_std and file.guest_flags & 0o3:
                    other = os.fstat(file.host_fd)
                    if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                        return True
        return False

    # ---- process groups and sessions ----

    def set_pgid(self, caller: Process, pid: int, pgid: int) -> int:
        """setpgid: 0 or -errno, by Linux's rules: the caller or one of its children (ESRCH
        otherwise; EINVAL for a thread that is not a process; a child in another session:
        EPERM; one that has exec'd: EACCES), not a session leader, into its own group or an
        existing one of the caller's session (EPERM)."""
        pid = pid or caller.pid
        pgid = pgid or pid
        if pgid < 0:
            return -errno.EINVAL
        target: Process | None = caller if pid == caller.pid else None
        if target is None:
            thread = self.kernel.find_thread(pid) if pid > 0 else None
            if thread is None or thread.process is self.kernel.procnto:
                return -errno.ESRCH
            target = thread.process
            if thread.tid != target.pid:
                return -errno.EINVAL            # not a thread-group leader
        if target.parent is caller and target is not caller:
            if target.sid != caller.sid:
                return -errno.EPERM
            if target.sig.execed:
                return -errno.EACCES
        elif target is not caller:
            return -errno.ESRCH
        if target.sid == target.pid:
            return -errno.EPERM                 # a session leader
        if pgid != pid and not any(p.pgid == pgid and p.sid == caller.sid and p.alive
                                   for p in self._guests()):
            return -errno.EPERM
        target.pgid = pgid
        return 0

    def set_sid(self, caller: Process) -> int:
        """setsid: a new session and group led by the caller (EPERM for a group leader)."""
        if any(p.pgid == caller.pid and p.alive for p in self._guests()):
            return -errno.EPERM
        caller.sid = caller.pgid = caller.pid
        return caller.pid

    def group_members(self, pgid: int) -> list[Process]:
        """The live processes of process group `pgid`."""
        return [p for p in self._guests() if p.pgid == pgid and p.alive]

    def _guests(self) -> list[Process]:
        return [p for p in self.kernel.processes if p is not self.kernel.procnto]

    # ---- waiting ----

    def wait(self, thread: Thread, which: ChildFilter, out: int, options: int,
             siginfo: bool) -> int | None:
        """wait4/waitid: reap an exited child `which` accepts; 0 with WNOHANG when none has
        exited; -ECHILD without such children; None while the caller blocks (it runs the call
        again when a child changes; a signal interrupts it)."""
        proc = thread.process
        children = [c for c in proc.children if not c.reaped and which.accepts(c)]
        if not children:
            return -errno.ECHILD
        for child in children:
            if child.exit is not None:
                return self._reap(proc, child, out, siginfo, keep=bool(options & WNOWAIT))
        if options & WNOHANG:
            if siginfo and out:
                proc.mem.write(out, bytes(128))
            return 0
        if proc.child_events is None:
            proc.child_events = WaitQueue()
        self.blocking.wait(thread, [proc.child_events], ThreadState.REPLY)
        return None

    def _reap(self, parent: Process, child: Process, out: int, siginfo: bool,
              keep: bool = False) -> int:
        """Collect `child`'s status into the parent's memory (`keep`: WNOWAIT, leave it a
        zombie); the call's result (waitid: 0, wait4: the child's pid)."""
        assert child.exit is not None
        if out and siginfo:
            code, status = self.exit_code(child)
            parent.mem.write(out, struct.pack("<iii4xiIi", signal.SIGCHLD, 0, code, child.pid,
                                              child.uid, status).ljust(128, b"\0"))
        elif out:
            parent.mem.write(out, struct.pack("<i", wait_status(child)))
        if not keep:
            child.reaped = True
            parent.children.remove(child)
        return 0 if siginfo else child.pid

    @staticmethod
    def exit_code(child: Process) -> tuple[int, int]:
        """(si_code, si_status) of an exited child's SIGCHLD and waitid."""
        assert child.exit is not None
        if child.exit.signal:
            core = child.exit.signal in (signal.SIGQUIT, signal.SIGILL, signal.SIGABRT,
                                         signal.SIGFPE, signal.SIGSEGV, signal.SIGBUS,
                                         signal.SIGTRAP, signal.SIGSYS, signal.SIGXCPU,
                                         signal.SIGXFSZ)
            return (CLD_DUMPED if core else CLD_KILLED), child.exit.signal
        return CLD_EXITED, child.exit.code & 0xFF

    def on_exit(self, proc: Process) -> None:
        """`proc` has exited: release a vfork parent; tell its parent (SIGCHLD, unless the
        parent ignores it or set SA_NOCLDWAIT, which reap it at once); orphan its children."""
        self._release_vfork_parent(proc)
        for queue in self.locks.drop_process(proc):
            self.blocking.wake(queue)
        for child in proc.children:
            child.parent = None
            if child.exit is not None:
                child.reaped = True         # init reaps orphaned zombies
            elif child.pdeath_signal:       # prctl(PR_SET_PDEATHSIG)
                self.kernel.signals.send(child, SigInfo(child.pdeath_signal, SI_USER,
                                                        pid=proc.pid, uid=proc.uid))
        proc.children = [c for c in proc.children if not c.reaped]
        parent = proc.parent
        if parent is None or not parent.alive:
            proc.reaped = True
            return
        action = parent.sig.action(signal.SIGCHLD)
        if action.handler == SIG_IGN or action.flags & SA_NOCLDWAIT:
            proc.reaped = True              # auto-reaped: a waiting parent may get ECHILD
            parent.children.remove(proc)
        if action.handler != SIG_IGN:
            code, status = self.exit_code(proc)
            self.kernel.signals.send(parent, SigInfo(signal.SIGCHLD, code, pid=proc.pid,
                                                     uid=proc.uid, value=status))
        if parent.child_events is not None:
            self.blocking.wake(parent.child_events)
