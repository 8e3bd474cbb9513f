"""A synthetic /proc with what LTP, busybox and libc read, built from the kernel's own state.

Files are generated when opened (a snapshot, as a read of a real /proc file is):

- /proc/meminfo (from --ram and the free frames), /proc/cpuinfo, /proc/uptime,
  /proc/loadavg, /proc/version, /proc/mounts, /proc/filesystems, /proc/stat;
- /proc/sys/kernel/{pid_max,tainted,osrelease,ostype,hostname},
  /proc/sys/fs/pipe-max-size, /proc/sys/vm/overcommit_memory;
- per process (/proc/self, /proc/thread-self, /proc/PID): status, stat, statm, maps,
  cmdline, comm, environ (empty: it is not kept), the directory fd/ whose entries
  reopen the process's descriptors, and task/TID/{comm,stat,status} per thread;
- smaps, pagemap, /proc/sysvipc/shm, /proc/sys/kernel/shm*, /proc/config.gz
  (procextra.py).

exe, cwd and root are links the guest root resolves (guestfs.py). Nothing here
reveals the host: paths are guest paths, and figures come from the simulated machine.
"""
from __future__ import annotations

import stat as stat_mod
from dataclasses import dataclass
from typing import Callable

from emu.kernel import procextra
from emu.kernel.process import Process, Thread, ThreadState
from emu.kernel.resources import comm_of, program_comm
from emu.kernel.sysvshm import SysvShm
from emu.mm.frames import PAGE_SIZE
from emu.mm.vmspace import PROT_EXEC, PROT_READ, PROT_WRITE, Share

PID_MAX = 4194304               # what systemd sets on 64-bit Linux
KERNEL_RELEASE = "6.1.0-emu"
_STATE_LETTER = {ThreadState.RUNNING: "R", ThreadState.READY: "R", ThreadState.DEAD: "Z"}
_DT_DIR, _DT_REG, _DT_LNK = 4, 8, 10

PROC_FILES = ("status", "stat", "statm", "maps", "cmdline", "comm", "environ", "smaps",
              "mounts")
TASK_FILES = ("comm", "stat", "status")
PROC_LINKS = ("exe", "cwd", "root")
GLOBAL_FILES = ("meminfo", "cpuinfo", "uptime", "loadavg", "version", "mounts", "filesystems",
                "stat", "sys/kernel/pid_max", "sys/kernel/tainted", "sys/kernel/osrelease",
                "sys/kernel/ostype", "sys/kernel/hostname", "sys/fs/pipe-max-size",
                "sys/fs/pipe-user-pages-hard", "sys/fs/pipe-user-pages-soft",
                "sys/fs/lease-break-time", "sys/vm/overcommit_memory",
                "sys/kernel/core_pattern", "sys/kernel/shmmax", "sys/kernel/shmall",
                "sys/kernel/shmmni", "sysvipc/shm", "config.gz", "sys/vm/max_map_count")


@dataclass(frozen=True)
class ProcEntry:
    """What a /proc path is: a file with its bytes, a directory with its entries, or a link
    to a descriptor of a process (fd/N)."""

    kind: str                                   # "file", "dir", "fd" or "sparse"
    data: bytes = b""
    chunks: tuple[tuple[int, bytes], ...] = ()  # "sparse": (offset, bytes), else zeros
    size: int = 0                               # "sparse": the file's size
    entries: tuple[tuple[str, int], ...] = ()   # (name, d_type)
    owner: Process | None = None
    fd: int = -1

    @property
    def mode(self) -> int:
        """st_mode of the entry."""
        if self.kind == "dir":
            return stat_mod.S_IFDIR | 0o555
        if self.kind == "fd":
            return stat_mod.S_IFLNK | 0o700
        return stat_mod.S_IFREG | 0o444


class ProcFs:
    """/proc of one machine."""

    def __init__(self, processes: list[Process], procnto: Callable[[], Process | None],
                 ram_bytes: int, free_frames: Callable[[], int], now_ns: Callable[[], int],
                 arch: str, cpu_time: Callable[[Thread], int], hz: int,
                 shm: SysvShm | None = None) -> None:
        """A /proc over the kernel's process list, the machine's memory and clock, and its
        System V segments."""
        self._shm = shm
        self._processes = processes
        self._procnto = procnto
        self.ram_bytes = ram_bytes
        self._free_frames = free_frames
        self._now_ns = now_ns
        self.arch = arch
        self._cpu_time = cpu_time
        self._hz = hz

    @staticmethod
    def covers(canon: str) -> bool:
        """Whether guest path `canon` lies in /proc."""
        return canon == "/proc" or canon.startswith("/proc/")

    def lookup(self, canon: str, caller: Process, thread: Thread) -> ProcEntry | None:
        """The entry at `canon` (a path in /proc) as `caller` sees it; None if there is none."""
        parts = [p for p in canon.split("/") if p][1:]
        if not parts:
            pids = [str(p.pid) for p in self._guests() if p.alive]
            names = sorted({*pids, "self", "thread-self", "sys"} |
                           {f.split("/")[0] for f in GLOBAL_FILES})
            dirs = {f.split("/")[0] for f in GLOBAL_FILES if "/" in f}
            return ProcEntry("dir", entries=tuple((n, _DT_DIR if n.isdigit() or n in dirs or n in
                                                   ("self", "thread-self")
                                                   else _DT_REG) for n in names))
        head, rest = parts[0], parts[1:]
        target = self._process(head, caller)
        if target is not None:
            return self._process_entry(target, thread if target is caller else None, rest)
        path = "/".join(parts)
        if path in GLOBAL_FILES:
            if path == "config.gz":
                return ProcEntry("file", data=procextra.kernel_config(self.arch))
            return ProcEntry("file", data=self._global(path).encode())
        children = sorted({f[len(path) + 1:].split("/")[0] for f in GLOBAL_FILES
                           if f.startswith(path + "/")})
        if children:
            return ProcEntry("dir", entries=tuple(
                (c, _DT_DIR if f"{path}/{c}" not in GLOBAL_FILES else _DT_REG) for c in children))
        return None

    def _guests(self) -> list[Process]:
        procnto = self._procnto()
        return [p for p in self._processes if p is not procnto]

    def _process(self, name: str, caller: Process) -> Process | None:
        if name in ("self", "thread-self"):
            return caller
        if name.isdigit():                  # (procnto too: /proc/1 is Linux's init)
            return next((p for p in self._processes if p.pid == int(name) and p.alive), None)
        return None

    def _process_entry(self, proc: Process, thread: Thread | None,
                       rest: list[str]) -> ProcEntry | None:
        if not rest:
            return ProcEntry("dir", entries=tuple(
                [(f, _DT_REG) for f in (*PROC_FILES, "pagemap")]
                + [(ln, _DT_LNK) for ln in PROC_LINKS] + [("fd", _DT_DIR), ("task", _DT_DIR)]),
                owner=proc)
        if rest[0] == "task":
            return self._task_entry(proc, rest[1:])
        if rest == ["pagemap"]:
            privileged = proc.creds.euid == 0
            return ProcEntry("sparse", chunks=tuple(procextra.pagemap(proc, privileged)),
                             size=procextra.PAGEMAP_SIZE, owner=proc)
        if rest[0] == "fd":
            fds = proc.fds.numbers()
            if len(rest) == 1:
                return ProcEntry("dir", entries=tuple((str(fd), _DT_LNK) for fd in fds),
                                 owner=proc)
            if len(rest) == 2 and rest[1].isdigit() and int(rest[1]) in fds:
                return ProcEntry("fd", owner=proc, fd=int(rest[1]))
            return None
        if len(rest) != 1 or rest[0] not in PROC_FILES:
            return None
        make = getattr(self, "_" + rest[0])
        return ProcEntry("file", data=make(proc, thread).encode("utf-8", "surrogateescape"),
                         owner=proc)

    def _task_entry(self, proc: Process, rest: list[str]) -> ProcEntry | None:
        threads = {t.tid: t for t in proc.live_threads()}
        if not rest:
            return ProcEntry("dir", entries=tuple((str(tid), _DT_DIR) for tid in threads),
                             owner=proc)
        thread = threads.get(int(rest[0])) if rest[0].isdigit() else None
        if thread is None:
            return None
        if len(rest) == 1:
            return ProcEntry("dir", entries=tuple((f, _DT_REG) for f in TASK_FILES), owner=proc)
        if len(rest) != 2 or rest[1] not in TASK_FILES:
            return None
        make = getattr(self, "_" + rest[1])
        return ProcEntry("file", data=make(proc, thread).encode("utf-8", "surrogateescape"),
                         owner=proc)

    # ---- per-process files ----

    def _mounts(self, proc: Process, thread: Thread | None = None) -> str:
        return self._global("mounts")

    @staticmethod
    def _smaps(proc: Process, thread: Thread | None = None) -> str:
        return procextra.smaps(proc)

    @staticmethod
    def _comm(proc: Process, thread: Thread | None = None) -> str:
        if thread is None:
            live = proc.live_threads()
            thread = live[0] if live else None
        if thread is not None:
            return comm_of(thread) + "\n"
        return program_comm(proc.exe_path) + "\n"

    @staticmethod
    def _cmdline(proc: Process, thread: Thread | None = None) -> str:
        return "".join(arg + "\0" for arg in proc.argv)

    @staticmethod
    def _environ(proc: Process, thread: Thread | None = None) -> str:
        return ""

    def _pages(self, proc: Process) -> tuple[int, int]:
        size = sum(m.end - m.start for m in proc.space.mappings()) // PAGE_SIZE
        return size, len(proc.space.page_table)

    def _status(self, proc: Process, thread: Thread | None = None) -> str:
        c = proc.creds
        size, rss = self._pages(proc)
        live = proc.live_threads()
        main = live[0] if live else None
        state = "R (running)" if main is not None and main.state in (
            ThreadState.RUNNING, ThreadState.READY) else "S (sleeping)"
        sig = proc.sig
        blocked = main.sig.mask if main is not None else 0
        ignored = sum(1 << (n - 1) for n in range(1, 65) if sig.action(n).handler == 1)
        caught = sum(1 << (n - 1) for n in range(1, 65) if sig.action(n).is_handler)
        caps = getattr(c, "cap_effective", (1 << 41) - 1 if c.euid == 0 else 0)
        ppid = proc.parent.pid if proc.parent is not None else 0
        groups = " ".join(str(g) for g in c.groups)
        return (f"Name:\t{self._comm(proc, thread)}Umask:\t{proc.umask:04o}\nState:\t{state}\n"
                f"Tgid:\t{proc.pid}\nNgid:\t0\nPid:\t{proc.pid}\nPPid:\t{ppid}\nTracerPid:\t0\n"
                f"Uid:\t{c.uid}\t{c.euid}\t{c.suid}\t{c.fsuid}\n"
                f"Gid:\t{c.gid}\t{c.egid}\t{c.sgid}\t{c.fsgid}\n"
                f"FDSize:\t64\nGroups:\t{groups}\n"
                f"VmPeak:\t{size * 4:8d} kB\nVmSize:\t{size * 4:8d} kB\n"
                f"VmLck:\t{procextra.locked_pages(proc) * 4:8d} kB\n"
                f"VmRSS:\t{rss * 4:8d} kB\nThreads:\t{len(live)}\nSigQ:\t0/{4096}\n"
                f"SigPnd:\t{main.sig.pending.mask if main else 0:016x}\n"
                f"ShdPnd:\t{sig.shared.mask:016x}\nSigBlk:\t{blocked:016x}\n"
                f"SigIgn:\t{ignored:016x}\nSigCgt:\t{caught:016x}\n"
                f"CapInh:\t{0:016x}\nCapPrm:\t{caps:016x}\nCapEff:\t{caps:016x}\n"
                f"CapBnd:\t{(1 << 41) - 1:016x}\nCapAmb:\t{0:016x}\nNoNewPrivs:\t0\n"
                f"Seccomp:\t0\nCpus_allowed:\t1\nCpus_allowed_list:\t0\n")

    def _stat(self, proc: Process, thread: Thread | None = None) -> str:
        live = proc.live_threads()
        letter = "Z" if not live else _STATE_LETTER.get(live[0].state, "S")
        ppid = proc.parent.pid if proc.parent is not None else 0
        ticks = sum(self._cpu_time(t) for t in proc.threads) * 100 // self._hz
        size, rss = self._pages(proc)
        fields = [proc.pid, f"({self._comm(proc, thread).strip()})", letter, ppid, proc.pgid,
                  proc.sid, 0, -1, 0x400000, 0, 0, 0, 0, ticks, 0, 0, 0, 20, 0, len(live), 0,
                  0, size * PAGE_SIZE, rss, (1 << 64) - 1] + [0] * 27
        return " ".join(str(f) for f in fields) + "\n"

    def _statm(self, proc: Process, thread: Thread | None = None) -> str:
        size, rss = self._pages(proc)
        return f"{size} {rss} 0 0 0 0 0\n"

    def _maps(self, proc: Process, thread: Thread | None = None) -> str:
        lines = []
        for m in proc.space.mappings():
            perms = ("r" if m.prot & PROT_READ else "-") + ("w" if m.prot & PROT_WRITE else "-") \
                + ("x" if m.prot & PROT_EXEC else "-") + ("s" if m.share is Share.SHARED else "p")
            offset = m.offset if m.obj.is_file else 0
            name = m.name if m.name.startswith("[") or m.obj.is_file else m.name
            lines.append(f"{m.start:08x}-{m.end:08x} {perms} {offset:08x} 00:00 0"
                         + (f" {' ' * 18}{name}" if name else ""))
        return "".join(line + "\n" for line in lines)

    # ---- machine-wide files ----

    def _global(self, path: str) -> str:
        kb = self.ram_bytes // 1024
        free = self._free_frames() * PAGE_SIZE // 1024
        uptime = self._now_ns() / 1e9
        if path == "meminfo":
            rows = [("MemTotal", kb), ("MemFree", free), ("MemAvailable", free), ("Buffers", 0),
                    ("Cached", 0), ("SwapCached", 0), ("Active", kb - free), ("Inactive", 0),
                    ("SwapTotal", 0), ("SwapFree", 0), ("Dirty", 0), ("Shmem", 0),
                    ("CommitLimit", kb), ("Committed_AS", kb - free), ("HugePages_Total", 0),
                    ("HugePages_Free", 0), ("Hugepagesize", 2048)]
            return "".join(f"{name + ':':<16}{value:8d} kB\n" if name[:4] != "Huge" or
                           name == "Hugepagesize" else f"{name + ':':<16}{value:8d}\n"
                           for name, value in rows)
        if path == "cpuinfo":
            if self.arch == "x86_64":
                return ("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n"
                        "model\t\t: 6\nmodel name\t: QEMU Virtual CPU (emu)\ncpu MHz\t\t: "
                        f"{self._hz / 1e6:.3f}\ncache size\t: 512 KB\nphysical id\t: 0\n"
                        "siblings\t: 1\ncore id\t\t: 0\ncpu cores\t: 1\nfpu\t\t: yes\n"
                        "flags\t\t: fpu de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov "
                        "pat pse36 clflush mmx fxsr sse sse2 syscall nx lm pni cx16 popcnt "
                        "hypervisor lahf_lm\nbogomips\t: 2000.00\nclflush size\t: 64\n"
                        "address sizes\t: 40 bits physical, 48 bits virtual\n\n")
            return ("processor\t: 0\nBogoMIPS\t: 200.00\nFeatures\t: fp asimd evtstrm aes "
                    "pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop "
                    "asimddp\nCPU implementer\t: 0x00\nCPU architecture: 8\nCPU variant\t: 0x0\n"
                    "CPU part\t: 0x051\nCPU revision\t: 0\n\n")
        if path == "uptime":
            return f"{uptime:.2f} {uptime:.2f}\n"
        if path == "loadavg":
            running = sum(1 for p in self._guests() for t in p.live_threads()
                          if t.state in (ThreadState.RUNNING, ThreadState.READY))
            last = max((p.pid for p in self._processes), default=1)
            return f"0.00 0.00 0.00 {running}/{sum(len(p.live_threads()) for p in self._guests())} {last}\n"
        if path == "version":
            return f"Linux version {KERNEL_RELEASE} (emu) #1 SMP PREEMPT\n"
        if path == "mounts":
            return ("/dev/root / ext4 rw,relatime 0 0\nproc /proc proc rw,nosuid,nodev,noexec 0 0\n"
                    "devtmpfs /dev devtmpfs rw,nosuid 0 0\ntmpfs /tmp tmpfs rw,nosuid,nodev 0 0\n")
        if path == "filesystems":
            return "nodev\tproc\nnodev\ttmpfs\nnodev\tdevtmpfs\n\text4\n"
        if path == "stat":
            ticks = int(uptime * 100)
            return (f"cpu  {ticks} 0 0 0 0 0 0 0 0 0\ncpu0 {ticks} 0 0 0 0 0 0 0 0 0\n"
                    f"btime 0\nprocesses {len(self._processes)}\nprocs_running 1\n")
        if path == "sysvipc/shm":
            return procextra.sysvipc_shm(self._shm) if self._shm is not None else ""
        if path in procextra.SYSV_SYSCTLS:
            return procextra.SYSV_SYSCTLS[path]
        return {"sys/kernel/pid_max": f"{PID_MAX}\n", "sys/kernel/tainted": "0\n",
                "sys/kernel/core_pattern": "core\n", "sys/vm/max_map_count": "65530\n",
                "sys/kernel/osrelease": f"{KERNEL_RELEASE}\n", "sys/kernel/ostype": "Linux\n",
                "sys/kernel/hostname": "emu\n", "sys/fs/pipe-max-size": "1048576\n",
                "sys/fs/pipe-user-pages-hard": "0\n", "sys/fs/pipe-user-pages-soft": "16384\n",
                "sys/fs/lease-break-time": "45\n",
                "sys/vm/overcommit_memory": "0\n"}[path]
