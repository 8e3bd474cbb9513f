"""Processes and threads: the kernel's records of who runs in which address space."""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Callable

from emu.kernel.files import FdTable
from emu.kernel.guestfs import GuestRoot
from emu.kernel.resources import CAP_FULL, ProcessResources, ThreadResources, full_caps_for
from emu.kernel.signals import ProcessSignals, ThreadSignals
from emu.mm.uaccess import UserMemory
from emu.mm.vmspace import AddressSpace


class ThreadState(str, enum.Enum):
    """Thread states, named as QNX names them (each is also its name as a string)."""

    RUNNING = "RUNNING"
    READY = "READY"
    WAITPAGE = "WAITPAGE"       # a page fault is being handled by the memory manager
    RECEIVE = "RECEIVE"         # a server waiting for a message or pulse
    REPLY = "REPLY"             # waiting for a reply (procnto waiting for the block device)
    NANOSLEEP = "NANOSLEEP"
    JOIN = "JOIN"               # futex wait on another thread's exit (pthread_join)
    MUTEX = "MUTEX"             # any other futex wait (QNX would say MUTEX or CONDVAR)
    SIGSUSPEND = "SIGSUSPEND"   # rt_sigsuspend: waiting for a signal handler to run
    SIGWAITINFO = "SIGWAITINFO"  # rt_sigtimedwait: waiting to accept a signal
    DEAD = "DEAD"


BLOCKED_STATES = frozenset({ThreadState.WAITPAGE, ThreadState.RECEIVE, ThreadState.REPLY,
                            ThreadState.NANOSLEEP, ThreadState.JOIN, ThreadState.MUTEX,
                            ThreadState.SIGSUSPEND, ThreadState.SIGWAITINFO})


class SchedPolicy(enum.IntEnum):
    """Scheduling policies (Linux numbering); SCHED_OTHER is scheduled round-robin, as in QNX."""

    OTHER = 0
    FIFO = 1
    RR = 2
    BATCH = 3                   # scheduled as OTHER (QNX has no such class)
    IDLE = 5                    # scheduled as OTHER


@dataclass(eq=False)
class Thread:
    """A thread: guest code with saved registers, or a kernel server thread with a `body`."""

    tid: int
    process: Process
    pc: int = 0
    context: Any = None             # the CPU engine's saved registers while not running
    state: ThreadState = ThreadState.READY
    priority: int = 10              # current (possibly inherited) priority
    base_priority: int = 10
    policy: SchedPolicy = SchedPolicy.RR
    slice_left: int = 0             # cycles left of the round-robin time slice
    wait_token: object | None = None    # set while blocked: woken exactly once
    pending_result: int | None = None   # syscall result to load when it next runs
    resume: Any = None              # what a blocked, retried system call did so far (waitq.py)
    clear_child_tid: int = 0        # set_tid_address / CLONE_CHILD_CLEARTID
    robust_list: int = 0
    body: Callable[[Thread], None] | None = None    # kernel thread: runs instead of guest code
    job: Any = None                 # a server thread's work in progress
    name: str = ""
    step_over: int | None = None    # a breakpoint address its next run starts at (not hit)
    cpu_cycles: int = 0             # cycles spent RUNNING, up to `running_since`
    running_since: int = 0          # when it last became RUNNING
    sig: ThreadSignals = field(default_factory=ThreadSignals)  # mask, pending, sigaltstack
    res: ThreadResources = field(default_factory=ThreadResources)  # comm, nice, timer slack

    @property
    def is_kernel_thread(self) -> bool:
        """Whether this thread runs Python (a server) rather than guest code."""
        return self.body is not None


@dataclass
class ExitStatus:
    """How a process ended: an exit code, or the signal that killed it."""

    code: int = 0
    signal: int = 0

    @property
    def shell_code(self) -> int:
        """The status as a shell reports it: the code, or 128 + signal."""
        return 128 + self.signal if self.signal else self.code & 0xFF


@dataclass
class Credentials:
    """A process's user and group ids (real, effective, saved, file-system) and groups."""

    uid: int = 0
    euid: int = 0
    suid: int = 0
    fsuid: int = 0
    gid: int = 0
    egid: int = 0
    sgid: int = 0
    fsgid: int = 0
    groups: tuple[int, ...] = ()
    cap_effective: int = CAP_FULL       # capability sets (emu/kernel/resources.py)
    cap_permitted: int = CAP_FULL
    cap_inheritable: int = 0

    @classmethod
    def of(cls, uid: int, gid: int | None = None) -> Credentials:
        """Every user id `uid` and every group id `gid` (default: `uid`), no extra groups;
        every capability for root, none for anyone else."""
        gid = uid if gid is None else gid
        caps = full_caps_for(uid)
        return cls(uid, uid, uid, uid, gid, gid, gid, gid, (), caps, caps, 0)

    def copy(self) -> Credentials:
        """An independent copy (fork)."""
        return dataclasses.replace(self)


@dataclass(eq=False)
class Process:
    """A process: address space, descriptors, identity and threads."""

    pid: int
    arch: str
    space: AddressSpace
    mem: UserMemory
    root: GuestRoot
    exe_path: str                   # guest path of the program
    argv: list[str] = field(default_factory=list)     # its arguments (/proc/PID/cmdline)
    creds: Credentials = field(default_factory=Credentials)
    pgid: int = 0                   # process group (0 until the kernel sets it: its pid)
    sid: int = 0                    # session
    cwd: str = "/"
    umask: int = 0o022
    fds: FdTable = field(default_factory=FdTable)
    threads: list[Thread] = field(default_factory=list)
    exit: ExitStatus | None = None
    lock_future: bool = False       # mlockall(MCL_FUTURE): new mappings are locked
    superlocked: bool = False       # ThreadCtl(_NTO_TCTL_IO): everything set up, no faults
    sig: ProcessSignals = field(default_factory=ProcessSignals)  # dispositions, shared pending
    parent: Process | None = None
    children: list[Process] = field(default_factory=list)
    reaped: bool = False            # its exit status was collected by wait4/waitid
    vfork_parent: Any = None        # (thread, token) of a vfork parent waiting for exec/exit
    res: ProcessResources = field(default_factory=ProcessResources)  # limits, prctl, usage
    pdeath_signal: int = 0          # PR_SET_PDEATHSIG: sent to it when its parent dies
    borrows_space: bool = False     # CLONE_VM child: runs in its parent's memory until exec
    child_events: Any = None        # WaitQueue of threads in wait4/waitid (family.py)
    stopped: bool = False           # SIGSTOP'd (job control)

    @property
    def uid(self) -> int:
        """The real user id."""
        return self.creds.uid

    @property
    def gid(self) -> int:
        """The real group id."""
        return self.creds.gid

    @property
    def alive(self) -> bool:
        """Whether the process has not exited."""
        return self.exit is None

    def live_threads(self) -> list[Thread]:
        """Threads that have not exited."""
        return [t for t in self.threads if t.state is not ThreadState.DEAD]
