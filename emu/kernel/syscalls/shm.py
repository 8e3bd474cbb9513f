"""System V shared memory calls: shmget, shmat, shmdt, shmctl (struct shmid64_ds of LP64 Linux).

The segments are in emu/kernel/sysvshm.py; attaching maps a segment Share.SHARED into
the caller's address space (emu/mm), so its pages are the same in every process.
"""
from __future__ import annotations

import errno
import struct

from emu.kernel.sysvshm import (IPC_PRIVATE, SHM_LOCKED, SHMALL, SHMMAX, SHMMNI, S_IRWXUGO,
                                Segment, ShmObject, SysvShm, is_owner, permitted)
from emu.kernel.syscalls import SyscallContext, syscall, to_int32
from emu.kernel.syscalls.proc import CLOCK_REALTIME_EPOCH_NS
from emu.mm.frames import PAGE_SIZE
from emu.mm.vmspace import (MMAP_MIN, PROT_EXEC, PROT_READ, PROT_WRITE, STACK_TOP, Mapping,
                            Share, page_align_up)

IPC_CREAT, IPC_EXCL = 0o1000, 0o2000
IPC_RMID, IPC_SET, IPC_STAT, IPC_INFO = 0, 1, 2, 3
SHM_LOCK, SHM_UNLOCK, SHM_STAT, SHM_INFO, SHM_STAT_ANY = 11, 12, 13, 14, 15
SHM_RDONLY, SHM_RND, SHM_REMAP, SHM_EXEC = 0o10000, 0o20000, 0o40000, 0o100000
SHMLBA = PAGE_SIZE                      # x86-64 and AArch64 alike
CAP_IPC_LOCK = 14
_READ, _WRITE, _EXEC = 0o4, 0o2, 0o1
_PERM = struct.Struct("<iIIIIIH2x4xQQ")         # struct ipc64_perm: 48 bytes
_SHMID_TAIL = struct.Struct("<QqqqiiQQQ")       # the rest of struct shmid64_ds: 64 bytes


def _shm(ctx: SyscallContext) -> SysvShm:
    shm = ctx.shm
    shm.collect()
    return shm


def _now(ctx: SyscallContext) -> int:
    return (CLOCK_REALTIME_EPOCH_NS + ctx.clock.now_ns()) // 10**9


@syscall("shmget")
def sys_shmget(ctx: SyscallContext, key: int, size: int, flags: int, *_: int) -> int:
    """The segment of `key` (IPC_PRIVATE: always a new one), created with IPC_CREAT (EEXIST
    with IPC_EXCL if it exists); EINVAL if an existing one is smaller than `size`."""
    key, flags = to_int32(key), to_int32(flags)
    shm = _shm(ctx)
    creds = ctx.proc.creds
    seg = shm.by_key(key) if key != IPC_PRIVATE else None
    if seg is not None:
        if flags & IPC_CREAT and flags & IPC_EXCL:
            return -errno.EEXIST
        if not permitted(creds, seg, (flags >> 6 | flags >> 3 | flags) & 0o7):
            return -errno.EACCES
        if seg.size < size:
            return -errno.EINVAL
        return seg.shmid
    if key != IPC_PRIVATE and not flags & IPC_CREAT:
        return -errno.ENOENT
    if not 1 <= size <= SHMMAX:
        return -errno.EINVAL
    if shm.total_pages() + (size + PAGE_SIZE - 1) // PAGE_SIZE > SHMALL:
        return -errno.ENOSPC
    seg = shm.create(key, size, flags & S_IRWXUGO, creds, ctx.proc.pid)
    seg.ctime = _now(ctx)
    return seg.shmid


@syscall("shmat")
def sys_shmat(ctx: SyscallContext, shmid: int, addr: int, flags: int, *_: int) -> int:
    """Map a segment (at `addr`, rounded down with SHM_RND; NULL: emu chooses); read-only with
    SHM_RDONLY. Returns the address."""
    shmid, flags = to_int32(shmid), to_int32(flags)
    shm = _shm(ctx)
    if addr:
        if addr % SHMLBA:
            if not flags & SHM_RND:
                return -errno.EINVAL
            addr -= addr % SHMLBA
            if not addr and flags & SHM_REMAP:
                return -errno.EINVAL
    elif flags & SHM_REMAP:
        return -errno.EINVAL
    seg = shm.by_id(shmid)
    if seg is None:
        return -errno.EINVAL
    prot, wanted = (PROT_READ, _READ) if flags & SHM_RDONLY else (PROT_READ | PROT_WRITE,
                                                                   _READ | _WRITE)
    if flags & SHM_EXEC:
        prot, wanted = prot | PROT_EXEC, wanted | _EXEC
    if not permitted(ctx.proc.creds, seg, wanted):
        return -errno.EACCES
    space = ctx.proc.space
    size = page_align_up(seg.size)
    if addr:
        if addr + size > STACK_TOP:
            return -errno.EINVAL
        if addr < MMAP_MIN:
            return -errno.EPERM
        if space.overlaps(addr, addr + size):
            if not flags & SHM_REMAP:
                return -errno.EINVAL
            space.remove(addr, addr + size)
        start = addr
    else:
        found = space.find_free(size, align=space.placement_alignment(size))
        if found is None:
            return -errno.ENOMEM
        start = found
    assert seg.obj is not None
    obj: ShmObject = seg.obj
    space.insert(Mapping(start, start + size, prot, Share.SHARED, obj, 0, obj.name))
    if not ctx.memory.residency.new_mapping(ctx.proc, start, start + size):
        space.remove(start, start + size)
        return -errno.ENOMEM
    seg.atime, seg.lpid = _now(ctx), ctx.proc.pid
    return start


@syscall("shmdt")
def sys_shmdt(ctx: SyscallContext, addr: int, *_: int) -> int:
    """Unmap the segment attached at `addr` (every piece of that attach)."""
    if addr % PAGE_SIZE:
        return -errno.EINVAL
    shm = ctx.shm
    space = ctx.proc.space
    seg: Segment | None = None
    for m in [m for m in space.mappings() if m.end > addr]:
        if not isinstance(m.obj, ShmObject) or m.start - addr != m.offset:
            continue
        if seg is None:
            seg = m.obj.segment
        elif m.obj.segment is not seg or m.end - addr > page_align_up(seg.size):
            continue
        space.remove(m.start, m.end)
    if seg is None:
        return -errno.EINVAL
    seg.dtime, seg.lpid = _now(ctx), ctx.proc.pid
    shm.collect()
    return 0


def _stat(ctx: SyscallContext, seg: Segment, out: int) -> None:
    perm = _PERM.pack(seg.key, seg.uid, seg.gid, seg.cuid, seg.cgid, seg.mode, seg.seq, 0, 0)
    tail = _SHMID_TAIL.pack(seg.size, seg.atime, seg.dtime, seg.ctime, seg.cpid, seg.lpid,
                            ctx.shm.nattch(seg), 0, 0)
    ctx.mem.write(out, perm + tail)


def _max_index(shm: SysvShm) -> int:
    return max(shm.segments, default=0)


@syscall("shmctl")
def sys_shmctl(ctx: SyscallContext, shmid: int, cmd: int, buf: int, *_: int) -> int:
    """IPC_STAT, IPC_SET, IPC_RMID (destroyed after the last detach), IPC_INFO, SHM_INFO,
    SHM_STAT(_ANY), SHM_LOCK/SHM_UNLOCK; other commands EINVAL."""
    shmid, cmd = to_int32(shmid), to_int32(cmd)
    shm = _shm(ctx)
    creds = ctx.proc.creds
    if cmd < 0 or shmid < 0:
        return -errno.EINVAL
    if cmd == IPC_INFO:
        ctx.mem.write(buf, struct.pack("<9Q", SHMMAX, 1, SHMMNI, SHMMNI, SHMALL, 0, 0, 0, 0))
        return _max_index(shm)
    if cmd == SHM_INFO:
        pages = shm.total_pages()
        ctx.mem.write(buf, struct.pack("<i4x5Q", len(shm.segments), pages, pages, 0, 0, 0))
        return _max_index(shm)
    if cmd in (SHM_STAT, SHM_STAT_ANY):
        seg = shm.segments.get(shmid)
        if seg is None:
            return -errno.EINVAL
        if cmd == SHM_STAT and not permitted(creds, seg, _READ):
            return -errno.EACCES
        _stat(ctx, seg, buf)
        return seg.shmid
    if cmd not in (IPC_STAT, IPC_SET, IPC_RMID, SHM_LOCK, SHM_UNLOCK):
        return -errno.EINVAL
    seg = shm.by_id(shmid)
    if seg is None:
        return -errno.EINVAL
    if cmd == IPC_STAT:
        if not permitted(creds, seg, _READ):
            return -errno.EACCES
        _stat(ctx, seg, buf)
        return 0
    if cmd in (SHM_LOCK, SHM_UNLOCK):
        if not creds.cap_effective >> CAP_IPC_LOCK & 1 and creds.euid not in (seg.uid,
                                                                               seg.cuid):
            return -errno.EPERM
        seg.mode = seg.mode | SHM_LOCKED if cmd == SHM_LOCK else seg.mode & ~SHM_LOCKED
        return 0
    if cmd == IPC_SET:
        _, uid, gid, _, _, mode, _, _, _ = _PERM.unpack(ctx.mem.read(buf, _PERM.size))
    if not is_owner(creds, seg):
        return -errno.EPERM
    if cmd == IPC_SET:
        seg.uid, seg.gid = uid, gid
        seg.mode = (seg.mode & ~S_IRWXUGO) | (mode & S_IRWXUGO)
        seg.ctime = _now(ctx)
        return 0
    shm.remove(seg)
    return 0
