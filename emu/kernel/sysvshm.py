"""System V shared memory segments: the machine's IPC namespace of shmget/shmat/shmctl.

A segment's pages are shared by every mapping of it, in any process and across fork,
because they belong to the segment, not to a mapping: each segment is a `CachedFile`
over a host memfd of its size, and every attach maps it Share.SHARED through a
`ShmObject` (a never-synced `CachedFileObject`), so a fault maps the segment's own
frame (FaultCause.CACHED). The frames are taken when the segment is created (ENOMEM
there when RAM is short, like emu's committed anonymous memory), zeroed, and given back
when the segment is destroyed: at IPC_RMID once no mapping is left, or at the first
shm call, exec or exit after its last mapping went.

`shm_nattch` is the number of mappings of the segment in live processes, as Linux
counts them (a fork's copy or a piece split off by mprotect counts once more).
"""
from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from emu.kernel.process import Credentials, Process
from emu.mm.frames import PAGE_SHIFT, PAGE_SIZE, FrameAllocator, OutOfFrames, PhysicalMemory
from emu.mm.objects import CachedFileObject
from emu.mm.pagecache import CachedFile, CodeInvalidate
from emu.mm.vmspace import Mapping

IPC_PRIVATE = 0
SHMMNI = 4096                           # segments per namespace
SHMMAX = SHMALL = 0xFFFFFFFFFFFFFFFF - (1 << 24)
IPCMNI_SHIFT = 15                       # id = sequence << 15 | index
SHM_DEST, SHM_LOCKED = 0o1000, 0o2000
S_IRWXUGO = 0o777
CAP_IPC_OWNER = 15
CAP_SYS_ADMIN = 21


@dataclass(eq=False)
class Segment:
    """One segment and its struct shmid64_ds fields."""

    shmid: int
    key: int
    size: int                           # as asked for (shm_segsz); pages cover it
    file: CachedFile
    uid: int
    gid: int
    cuid: int
    cgid: int
    mode: int
    seq: int
    cpid: int
    lpid: int = 0
    atime: int = 0
    dtime: int = 0
    ctime: int = 0
    obj: ShmObject | None = field(default=None, repr=False)

    @property
    def index(self) -> int:
        """Its slot in the namespace (SHM_STAT's argument)."""
        return self.shmid & ((1 << IPCMNI_SHIFT) - 1)

    @property
    def pages(self) -> int:
        """Pages the segment spans."""
        return (self.size + PAGE_SIZE - 1) >> PAGE_SHIFT

    @property
    def removed(self) -> bool:
        """Whether IPC_RMID marked it for destruction."""
        return bool(self.mode & SHM_DEST)


class ShmObject(CachedFileObject):
    """The memory object of a segment's mappings: its pages, never written to any file."""

    def __init__(self, segment: Segment) -> None:
        """The object mapping `segment`'s pages."""
        super().__init__(segment.file, nosync=True)
        self.segment = segment
        self.name = f"/SYSV{segment.key & 0xFFFFFFFF:08x}"


def permitted(creds: Credentials, seg: Segment, requested: int) -> bool:
    """ipcperms: whether `creds` may access `seg` with the rwx bits of `requested` (0-7)."""
    granted = seg.mode
    if creds.euid in (seg.cuid, seg.uid):
        granted >>= 6
    elif seg.cgid in (creds.fsgid, *creds.groups) or seg.gid in (creds.fsgid, *creds.groups):
        granted >>= 3
    return not (requested & ~granted & 0o7) or bool(creds.cap_effective >> CAP_IPC_OWNER & 1)


def is_owner(creds: Credentials, seg: Segment) -> bool:
    """Whether `creds` may IPC_SET or IPC_RMID `seg` (owner, creator, or CAP_SYS_ADMIN)."""
    return creds.euid in (seg.uid, seg.cuid) or bool(creds.cap_effective >> CAP_SYS_ADMIN & 1)


class SysvShm:
    """The segments of one machine, by id and by key."""

    def __init__(self, frames: FrameAllocator, ram: PhysicalMemory,
                 processes: list[Process], invalidate_code: CodeInvalidate | None = None,
                 now_seconds: Callable[[], int] = lambda: 0) -> None:
        """A namespace allocating frames of `ram`, seeing attaches in `processes`."""
        self.frames = frames
        self.ram = ram
        self.processes = processes
        self.invalidate_code = invalidate_code
        self.now_seconds = now_seconds
        self.segments: dict[int, Segment] = {}          # by index
        self._seq = 0

    # ---- lookup ----

    def by_id(self, shmid: int) -> Segment | None:
        """The segment with id `shmid` (its index and sequence must both match)."""
        if shmid < 0:
            return None
        seg = self.segments.get(shmid & ((1 << IPCMNI_SHIFT) - 1))
        return seg if seg is not None and seg.shmid == shmid else None

    def by_key(self, key: int) -> Segment | None:
        """The live (not removed) segment created with `key`."""
        return next((s for s in self.segments.values()
                     if s.key == key and not s.removed), None)

    def mappings_of(self, seg: Segment) -> Iterator[tuple[Process, Mapping]]:
        """Every mapping of `seg` in a live process."""
        for proc in self.processes:
            if proc.alive:
                for m in proc.space.mappings():
                    if isinstance(m.obj, ShmObject) and m.obj.segment is seg:
                        yield proc, m

    def nattch(self, seg: Segment) -> int:
        """How many mappings of `seg` there are."""
        return sum(1 for _ in self.mappings_of(seg))

    def total_pages(self) -> int:
        """Pages of every segment (SHM_INFO's shm_tot and shm_rss)."""
        return sum(s.pages for s in self.segments.values())

    # ---- creating and destroying ----

    def create(self, key: int, size: int, mode: int, creds: Credentials, pid: int) -> Segment:
        """A new zero-filled segment of `size` bytes (OSError ENOSPC when the namespace is
        full, ENOMEM when RAM is short)."""
        index = next((i for i in range(SHMMNI) if i not in self.segments), None)
        if index is None:
            raise OSError(errno.ENOSPC, "too many segments")
        pages = (size + PAGE_SIZE - 1) >> PAGE_SHIFT
        fd = os.memfd_create(f"SYSV{key & 0xFFFFFFFF:08x}", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, pages << PAGE_SHIFT)
            file = CachedFile(fd, f"/SYSV{key & 0xFFFFFFFF:08x}", self.frames, self.ram,
                              self.invalidate_code)
        finally:
            os.close(fd)
        try:
            for i in range(pages):
                file.frame(i)
        except OutOfFrames:
            self._release(file)
            raise OSError(errno.ENOMEM, "not enough RAM") from None
        seq = self._seq
        self._seq = (self._seq + 1) % (1 << (31 - IPCMNI_SHIFT))
        seg = Segment(seq << IPCMNI_SHIFT | index, key, size, file, creds.euid, creds.egid,
                      creds.euid, creds.egid, mode & S_IRWXUGO, seq, pid,
                      ctime=self.now_seconds())
        seg.obj = ShmObject(seg)
        self.segments[index] = seg
        return seg

    def remove(self, seg: Segment) -> None:
        """IPC_RMID: no new shmget finds it; it goes once nothing maps it."""
        seg.mode |= SHM_DEST
        seg.key = IPC_PRIVATE
        seg.ctime = self.now_seconds()
        self.collect()

    def collect(self) -> None:
        """Destroy every removed segment that nothing maps any more."""
        for seg in [s for s in self.segments.values() if s.removed]:
            if not self.nattch(seg):
                del self.segments[seg.index]
                self._release(seg.file)

    def _release(self, file: CachedFile) -> None:
        for frame in file.pages.values():
            self.frames.release(frame)
        file.pages.clear()
        file.dirty.clear()

    def forget(self, proc: Process) -> None:
        """A process exited or exec'd (its mappings are gone): destroy what that released."""
        self.collect()
