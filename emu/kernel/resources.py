"""Per-process and per-thread resources: limits, personality, nice, prctl state, capabilities.

Linux keeps these in the task and its signal struct; emu keeps them in `Process.res`
(`ProcessResources`) and `Thread.res` (`ThreadResources`), capabilities in the
credentials (`Credentials.cap_*`, copied with them at fork). `ResourceHooks` applies
Linux's rules at fork, thread creation, exec and exit; the machine calls it from the
kernel's ProcessCreate, ThreadCreate, ProcessExec and ProcessExit events.
"""
from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emu.kernel.clock import Clock
    from emu.kernel.process import Credentials, Process, Thread
    from emu.mm.frames import FrameAllocator

RLIM_INFINITY = 0xFFFFFFFFFFFFFFFF
(RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_DATA, RLIMIT_STACK, RLIMIT_CORE, RLIMIT_RSS, RLIMIT_NPROC,
 RLIMIT_NOFILE, RLIMIT_MEMLOCK, RLIMIT_AS, RLIMIT_LOCKS, RLIMIT_SIGPENDING, RLIMIT_MSGQUEUE,
 RLIMIT_NICE, RLIMIT_RTPRIO, RLIMIT_RTTIME) = range(16)
RLIM_NLIMITS = 16
NR_OPEN = 1 << 20                       # fs.nr_open: the highest RLIMIT_NOFILE allowed
_INF = (RLIM_INFINITY, RLIM_INFINITY)
DEFAULT_LIMITS: tuple[tuple[int, int], ...] = (
    _INF, _INF, _INF, (8 << 20, RLIM_INFINITY), (0, RLIM_INFINITY), _INF, (4096, 4096),
    (1024, 4096), (8 << 20, 8 << 20), _INF, _INF, (4096, 4096), (819200, 819200), (0, 0),
    (0, 0), _INF)

# capabilities (include/uapi/linux/capability.h of Linux 6.1: the last is 40)
CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID = 0, 1, 2, 3, 4
CAP_SETGID, CAP_SETUID, CAP_SETPCAP, CAP_LINUX_IMMUTABLE = 6, 7, 8, 9
CAP_SYS_NICE, CAP_SYS_RESOURCE, CAP_MAC_OVERRIDE, CAP_WAKE_ALARM = 23, 24, 32, 35
CAP_LAST_CAP = 40
CAP_FULL = (1 << (CAP_LAST_CAP + 1)) - 1
CAP_FS_MASK = (sum(1 << c for c in (CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH,
                                    CAP_FOWNER, CAP_FSETID, CAP_LINUX_IMMUTABLE))
               | 1 << CAP_MAC_OVERRIDE)

SUID_DUMP_DISABLE, SUID_DUMP_USER = 0, 1
DEFAULT_TIMER_SLACK_NS = 50_000
COMM_LEN = 16                           # TASK_COMM_LEN, with the terminating NUL


def capable(creds: Credentials, cap: int) -> bool:
    """Whether credentials hold capability `cap` in their effective set."""
    return bool(creds.cap_effective >> cap & 1)


def full_caps_for(uid: int) -> int:
    """The capability sets a process of user `uid` starts with: all for root, none else."""
    return CAP_FULL if uid == 0 else 0


@dataclass
class ProcessResources:
    """What Linux keeps per process (signal struct and mm): limits, personality, prctl flags,
    and the resource usage of waited-for children."""

    limits: list[tuple[int, int]] = field(default_factory=lambda: list(DEFAULT_LIMITS))
    personality: int = 0                # PER_LINUX
    dumpable: int = SUID_DUMP_USER
    no_new_privs: bool = False
    child_subreaper: bool = False
    maxrss_pages: int = 0               # the largest resident set seen so far
    minflt: int = 0                     # faults resolved without I/O
    majflt: int = 0                     # faults that read a page from the backing store
    child_cpu_cycles: int = 0           # the same of ended children (and their children)
    child_maxrss_pages: int = 0
    child_minflt: int = 0
    child_majflt: int = 0

    def for_fork(self, resident: int) -> ProcessResources:
        """A forked child's (`resident` pages at once): the same limits, personality and
        flags; not a subreaper; no usage yet."""
        return ProcessResources(limits=list(self.limits), personality=self.personality,
                                dumpable=self.dumpable, no_new_privs=self.no_new_privs,
                                maxrss_pages=resident)


@dataclass
class ThreadResources:
    """What Linux keeps per task: its name (comm), nice value and timer slack."""

    comm: str | None = None             # None: the program's name (as exec sets it)
    nice: int = 0
    timer_slack_ns: int = DEFAULT_TIMER_SLACK_NS
    default_timer_slack_ns: int = DEFAULT_TIMER_SLACK_NS

    def for_child(self, comm: str) -> ThreadResources:
        """A new task made by this one (clone or fork): its name, nice and slack."""
        return ThreadResources(comm, self.nice, self.timer_slack_ns, self.timer_slack_ns)


def program_comm(exe_path: str) -> str:
    """The name exec gives a task: the program's file name, cut to 15 bytes."""
    name = posixpath.basename(exe_path).encode("utf-8", "surrogateescape")[:COMM_LEN - 1]
    return name.decode("utf-8", "surrogateescape")


def comm_of(thread: Thread) -> str:
    """A thread's name (PR_GET_NAME, /proc/PID/comm)."""
    comm = thread.res.comm
    return program_comm(thread.process.exe_path) if comm is None else comm


def resident_pages(proc: Process) -> int:
    """How many pages of `proc` are resident now."""
    return len(proc.space.page_table)


@dataclass(frozen=True)
class SystemFacts:
    """Machine-wide figures for sysinfo: RAM, its frames, the processes and the clock."""

    ram_bytes: int
    frames: FrameAllocator
    processes: list[Process]
    clock: Clock

    def live_threads(self) -> int:
        """Every live thread of the machine (sysinfo's procs counts tasks, as Linux does)."""
        return sum(len(p.live_threads()) for p in self.processes if p.alive)


class ResourceHooks:
    """Linux's rules for resources at fork, thread creation, exec and exit."""

    def __init__(self, find_process: Callable[[int], Process | None],
                 current: Callable[[], Thread | None], cpu_time: Callable[[Thread], int],
                 on_exec: Iterable[Callable[[Process], None]] = (),
                 on_exit: Iterable[Callable[[Process], None]] = ()) -> None:
        """Hooks finding processes by pid, the running thread, and a thread's CPU cycles;
        `on_exec`/`on_exit` are called after this module's own work (timers, shm)."""
        self.find_process = find_process
        self.current = current
        self.cpu_time = cpu_time
        self.exec_hooks = tuple(on_exec)
        self.exit_hooks = tuple(on_exit)

    def process_created(self, child: Process) -> None:
        """A process came to be: a forked child inherits its parent's resources."""
        parent = child.parent
        if parent is not None:
            child.res = parent.res.for_fork(resident_pages(parent))

    def thread_created(self, thread: Thread) -> None:
        """A thread came to be: it inherits its creator's name, nice value and slack."""
        creator = self.current()
        if creator is None or creator.body is not None or creator is thread:
            return
        thread.res = creator.res.for_child(comm_of(creator))

    def fault_ended(self, pid: int, cause: str, signo: int) -> None:
        """A fault of process `pid` ended: count it, and note its resident set's growth."""
        proc = self.find_process(pid)
        if proc is None or signo:
            return
        res = proc.res
        if cause == "page_in":
            res.majflt += 1
        else:
            res.minflt += 1
        res.maxrss_pages = max(res.maxrss_pages, resident_pages(proc))

    def process_execed(self, proc: Process) -> None:
        """exec: the name is the new program's, dumpable again, capabilities recomputed."""
        for thread in proc.live_threads():
            thread.res.comm = None
        proc.res.dumpable = SUID_DUMP_USER
        creds = proc.creds
        if 0 in (creds.uid, creds.euid):        # root keeps (or regains) every capability
            creds.cap_permitted = CAP_FULL | creds.cap_inheritable
            creds.cap_effective = creds.cap_permitted if creds.euid == 0 else 0
        else:
            creds.cap_permitted = creds.cap_effective = 0
        for hook in self.exec_hooks:
            hook(proc)

    def process_exited(self, proc: Process) -> None:
        """exit: the parent accounts the child's CPU time and largest resident set."""
        parent = proc.parent
        if parent is not None:
            res, into = proc.res, parent.res
            into.child_cpu_cycles += sum(self.cpu_time(t) for t in proc.threads) \
                + res.child_cpu_cycles
            into.child_maxrss_pages = max(into.child_maxrss_pages, res.maxrss_pages,
                                          res.child_maxrss_pages)
            into.child_minflt += res.minflt + res.child_minflt
            into.child_majflt += res.majflt + res.child_majflt
        for hook in self.exit_hooks:
            hook(proc)
