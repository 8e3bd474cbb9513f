"""The rarer parts of the synthetic /proc: memory views of a process and machine-wide tables.

- /proc/PID/smaps: one block per mapping with its size, resident and locked kB;
- /proc/PID/pagemap: the 64-bit entry per virtual page Linux documents
  (Documentation/admin-guide/mm/pagemap.rst): bit 63 present, bits 0-54 the frame number
  (zero unless the reader is privileged, as Linux hides PFNs), bit 61 file-backed or shared;
  served as a sparse file, since only present pages have non-zero entries;
- /proc/sysvipc/shm: the System V segments, one line each;
- /proc/config.gz: the configuration of the kernel emu plays, naming only what it
  implements (LTP's tst_kconfig reads it to decide what a test may use).
"""
from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator

from emu.kernel.process import Process
from emu.kernel.sysvshm import SHMALL, SHMMAX, SHMMNI, SysvShm
from emu.mm.frames import PAGE_SHIFT, PAGE_SIZE
from emu.mm.vmspace import PROT_EXEC, PROT_READ, PROT_WRITE, Mapping, Share

PM_PRESENT, PM_FILE, PM_EXCLUSIVE = 1 << 63, 1 << 61, 1 << 56
PM_PFN_MASK = (1 << 55) - 1
PAGEMAP_SIZE = 1 << (47 - PAGE_SHIFT + 3)       # 8 bytes per page of a 47-bit address space

# What emu's kernel implements, as Linux configuration symbols (the rest are "not set").
KERNEL_CONFIG: tuple[tuple[str, bool], ...] = (
    ("CONFIG_64BIT", True), ("CONFIG_MMU", True), ("CONFIG_SMP", False),
    ("CONFIG_SYSVIPC", True), ("CONFIG_POSIX_MQUEUE", False), ("CONFIG_POSIX_TIMERS", True),
    ("CONFIG_POSIX_AUX_CLOCKS", False), ("CONFIG_HIGH_RES_TIMERS", True),
    ("CONFIG_FUTEX", True), ("CONFIG_EPOLL", True), ("CONFIG_SIGNALFD", False),
    ("CONFIG_TIMERFD", False), ("CONFIG_EVENTFD", False), ("CONFIG_FILE_LOCKING", True),
    ("CONFIG_DNOTIFY", False), ("CONFIG_INOTIFY_USER", False), ("CONFIG_FANOTIFY", False),
    ("CONFIG_PROC_FS", True), ("CONFIG_PROC_PAGE_MONITOR", True), ("CONFIG_TMPFS", True),
    ("CONFIG_HUGETLBFS", False), ("CONFIG_TRANSPARENT_HUGEPAGE", False),
    ("CONFIG_SHMEM", True), ("CONFIG_MEMFD_CREATE", True), ("CONFIG_SWAP", False),
    ("CONFIG_NET", False), ("CONFIG_UNIX", False), ("CONFIG_INET", False),
    ("CONFIG_NAMESPACES", False), ("CONFIG_TIME_NS", False), ("CONFIG_USER_NS", False),
    ("CONFIG_CHECKPOINT_RESTORE", False), ("CONFIG_CGROUPS", False), ("CONFIG_SECCOMP", False),
    ("CONFIG_MODULES", False), ("CONFIG_BLOCK", False), ("CONFIG_COREDUMP", False),
    ("CONFIG_KASAN", False), ("CONFIG_NUMA", False), ("CONFIG_SCHED_DEBUG", False),
)


def kernel_config(arch: str) -> bytes:
    """/proc/config.gz: the configuration text, gzip'd with no timestamp (deterministic)."""
    lines = [f"# emu {arch}: the Linux configuration symbols of what emu implements", ""]
    lines += [f"{name}=y" if on else f"# {name} is not set" for name, on in KERNEL_CONFIG]
    return gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)


def _kb(pages: int) -> str:
    return f"{pages * PAGE_SIZE // 1024:8d} kB"


def locked_pages(proc: Process) -> int:
    """Pages of `proc`'s locked mappings (VmLck)."""
    return sum((m.end - m.start) // PAGE_SIZE for m in proc.space.mappings() if m.locked)


def smaps(proc: Process) -> str:
    """/proc/PID/smaps: each mapping's maps line followed by its sizes."""
    out = []
    table = proc.space.page_table
    for m in proc.space.mappings():
        pages = (m.end - m.start) // PAGE_SIZE
        resident = sum(1 for _ in table.entries(m.start >> PAGE_SHIFT, m.end >> PAGE_SHIFT))
        perms = ("r" if m.prot & PROT_READ else "-") + ("w" if m.prot & PROT_WRITE else "-") \
            + ("x" if m.prot & PROT_EXEC else "-") + ("s" if m.share is Share.SHARED else "p")
        offset = m.offset if m.obj.is_file else 0
        out.append(f"{m.start:08x}-{m.end:08x} {perms} {offset:08x} 00:00 0"
                   + (f" {' ' * 18}{m.name}" if m.name else "") + "\n")
        shared = resident if m.share is Share.SHARED else 0
        out.append(f"Size:           {_kb(pages)}\nKernelPageSize:        4 kB\n"
                   f"MMUPageSize:           4 kB\nRss:            {_kb(resident)}\n"
                   f"Pss:            {_kb(resident)}\nShared_Clean:   {_kb(0)}\n"
                   f"Shared_Dirty:   {_kb(shared)}\nPrivate_Clean:  {_kb(0)}\n"
                   f"Private_Dirty:  {_kb(resident - shared)}\n"
                   f"Referenced:     {_kb(resident)}\nAnonymous:      "
                   f"{_kb(0 if m.obj.is_file else resident - shared)}\nSwap:           {_kb(0)}\n"
                   f"Locked:         {_kb(resident if m.locked else 0)}\n"
                   f"VmFlags: {' '.join(_vm_flags(m))}\n")
    return "".join(out)


def _vm_flags(m: Mapping) -> list[str]:
    flags = [name for bit, name in ((PROT_READ, "rd"), (PROT_WRITE, "wr"), (PROT_EXEC, "ex"))
             if m.prot & bit]
    if m.share is Share.SHARED:
        flags.append("sh")
    if m.locked:
        flags.append("lo")
    return flags


def pagemap(proc: Process, privileged: bool) -> Iterator[tuple[int, bytes]]:
    """(file offset, 8-byte entry) of every present page of `proc`; the other entries are
    zero (not present, not swapped: emu has no swap)."""
    table = proc.space.page_table
    for m in proc.space.mappings():
        extra = PM_FILE if m.obj.is_file or m.share is Share.SHARED else PM_EXCLUSIVE
        for vpn, pte in table.entries(m.start >> PAGE_SHIFT, m.end >> PAGE_SHIFT):
            entry = PM_PRESENT | extra | ((pte.frame & PM_PFN_MASK) if privileged else 0)
            yield vpn * 8, struct.pack("<Q", entry)


def sysvipc_shm(shm: SysvShm) -> str:
    """/proc/sysvipc/shm: a header and one line per live segment."""
    lines = ["       key      shmid perms                  size  cpid  lpid nattch   uid   gid "
             " cuid  cgid      atime      dtime      ctime                   rss"
             "                  swap"]
    for seg in shm.segments.values():
        if seg.removed:
            continue
        lines.append(f"{seg.key:10d} {seg.shmid:10d} {seg.mode & 0o777:5o} {seg.size:21d} "
                     f"{seg.cpid:5d} {seg.lpid:5d} {shm.nattch(seg):6d} {seg.uid:5d} "
                     f"{seg.gid:5d} {seg.cuid:5d} {seg.cgid:5d} {seg.atime:10d} "
                     f"{seg.dtime:10d} {seg.ctime:10d} {seg.pages * PAGE_SIZE:21d} {0:21d}")
    return "\n".join(lines) + "\n"


SYSV_SYSCTLS = {"sys/kernel/shmmax": f"{SHMMAX}\n", "sys/kernel/shmall": f"{SHMALL}\n",
                "sys/kernel/shmmni": f"{SHMMNI}\n"}
