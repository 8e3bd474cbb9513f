"""The mmap family: mmap, munmap, mprotect, madvise, brk."""
from __future__ import annotations

import errno
import os
import stat

from emu.kernel.process import ThreadState
from emu.kernel.syscalls import SyscallContext, syscall, to_int32
from emu.mm.frames import PAGE_SIZE, OutOfFrames
from emu.mm.objects import AnonymousMemory, CachedFileObject
from emu.mm.vmspace import (MMAP_MIN, PROT_EXEC, PROT_READ, PROT_WRITE, STACK_TOP, Mapping,
                            Share, page_align_up)

MAP_SHARED, MAP_PRIVATE, MAP_SHARED_VALIDATE = 0x01, 0x02, 0x03
MAP_FIXED, MAP_ANONYMOUS = 0x10, 0x20
MAP_LAZY = 0x80                 # QNX extension (firmware/include/emu.h)
MAP_NORESERVE = 0x4000          # treated like MAP_LAZY
MAP_LOCKED, MAP_POPULATE = 0x2000, 0x8000
MAP_NOSYNCFILE = 0x1000000      # QNX extension (emu.h): changes never reach the file
MS_ASYNC, MS_INVALIDATE, MS_SYNC = 1, 2, 4
MAP_FIXED_NOREPLACE = 0x100000
MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4
MLOCK_ONFAULT = 1
MADV_DONTNEED, MADV_FREE = 4, 8
_PROT_ALL = PROT_READ | PROT_WRITE | PROT_EXEC


def _check_range(addr: int, length: int) -> int:
    """Page-aligned end of [addr, addr+length), or EINVAL."""
    if addr % PAGE_SIZE or length == 0 or addr + length > STACK_TOP:
        raise OSError(errno.EINVAL, "bad range")
    return addr + page_align_up(length)


@syscall("mmap")
def sys_mmap(ctx: SyscallContext, addr: int, length: int, prot: int, flags: int,
             fd: int, offset: int) -> int:
    """Map anonymous memory or a file; pages are set up on first touch."""
    kind = flags & 0x3
    if length == 0 or kind == 0 or offset % PAGE_SIZE or prot & ~_PROT_ALL:
        return -errno.EINVAL
    size = page_align_up(length)
    if size == 0 or size > STACK_TOP:
        return -errno.ENOMEM
    share = Share.SHARED if kind in (MAP_SHARED, MAP_SHARED_VALIDATE) else Share.PRIVATE
    space = ctx.proc.space
    if flags & MAP_ANONYMOUS:
        obj: AnonymousMemory | CachedFileObject = AnonymousMemory()
        offset, name = 0, "[anon]"
    else:
        file = ctx.proc.fds.get(to_int32(fd))
        mode = file.guest_flags & 0o3
        if mode == os.O_WRONLY or (share is Share.SHARED and prot & PROT_WRITE
                                   and mode != os.O_RDWR):
            return -errno.EACCES
        if not stat.S_ISREG(os.fstat(file.host_fd).st_mode):
            return -errno.ENODEV
        cached = ctx.memory.page_cache.file_for(file.host_fd, file.guest_path)
        obj = CachedFileObject(cached, nosync=bool(flags & MAP_NOSYNCFILE))
        name = file.guest_path
    if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE):
        end = _check_range(addr, size)
        if addr < MMAP_MIN:
            return -errno.EPERM
        if flags & MAP_FIXED_NOREPLACE and space.overlaps(addr, end):
            return -errno.EEXIST
        space.remove(addr, end)         # (Linux too loses the old mapping if the new one fails)
        start = addr
    elif addr and addr % PAGE_SIZE == 0 and space.is_free(addr, addr + size):
        start = addr
    else:
        found = space.find_free(size, align=space.placement_alignment(size))
        if found is None:
            return -errno.ENOMEM
        start = found
    lazy = bool(flags & (MAP_LAZY | MAP_NORESERVE))
    try:
        space.insert(Mapping(start, start + size, prot, share, obj, offset, name, lazy=lazy))
    except OutOfFrames:
        return -errno.ENOMEM            # committing the frames failed: RAM is short
    if not ctx.memory.residency.new_mapping(ctx.proc, start, start + size, locked=bool(flags & MAP_LOCKED),
                                  populate=bool(flags & MAP_POPULATE)):
        space.remove(start, start + size)
        return -errno.EAGAIN            # it could not be made resident
    return start


@syscall("munmap")
def sys_munmap(ctx: SyscallContext, addr: int, length: int, *_: int) -> int:
    """Remove mappings in a range (unmapped parts are fine)."""
    end = _check_range(addr, length)
    ctx.proc.space.remove(addr, end)
    return 0


@syscall("mprotect")
def sys_mprotect(ctx: SyscallContext, addr: int, length: int, prot: int, *_: int) -> int:
    """Change the protection of a fully mapped range."""
    if prot & ~_PROT_ALL:
        return -errno.EINVAL
    end = _check_range(addr, length)
    space = ctx.proc.space
    covered = addr
    for m in space.mappings():
        if m.end <= covered or m.start >= end:
            continue
        if m.start > covered:
            break
        covered = m.end
    if covered < end:
        return -errno.ENOMEM
    space.protect(addr, end, prot)
    # locked pages that just became accessible are set up now, as mlock would have
    for m in space.mappings_in(addr, end):
        if m.locked and not ctx.memory.residency.populate(ctx.proc, m.start, m.end,
                                                final=ctx.proc.superlocked):
            return -errno.EAGAIN
    return 0


@syscall("madvise")
def sys_madvise(ctx: SyscallContext, addr: int, length: int, advice: int, *_: int) -> int:
    """MADV_DONTNEED/MADV_FREE drop the pages (they read back as their object's contents)."""
    if addr % PAGE_SIZE:
        return -errno.EINVAL
    if length == 0:
        return 0
    end = addr + page_align_up(length)
    if advice in (MADV_DONTNEED, MADV_FREE):
        try:
            ctx.proc.space.discard(addr, end)
        except OutOfFrames:
            return -errno.EAGAIN        # the pages could not be committed again
    return 0


@syscall("brk")
def sys_brk(ctx: SyscallContext, new_brk: int, *_: int) -> int:
    """Move the program break; returns the break in effect afterwards."""
    space = ctx.proc.space
    if new_brk < space.brk_start:
        return space.brk
    old_end, new_end = page_align_up(space.brk), page_align_up(new_brk)
    if new_end > old_end:
        if not space.is_free(old_end, new_end):
            return space.brk
        try:
            space.insert(Mapping(old_end, new_end, PROT_READ | PROT_WRITE, Share.PRIVATE,
                                 AnonymousMemory(), 0, "[heap]"))
        except OutOfFrames:
            return space.brk            # the heap's frames are committed too
        if not ctx.memory.residency.new_mapping(ctx.proc, old_end, new_end):
            space.remove(old_end, new_end)
            return space.brk
    elif new_end < old_end:
        space.remove(new_end, old_end)
    space.brk = new_brk
    return new_brk


def _mapped_range(ctx: SyscallContext, addr: int, length: int) -> tuple[int, int]:
    """The page-rounded range of an mlock-family call; ENOMEM unless all of it is mapped."""
    start = addr & ~(PAGE_SIZE - 1)
    end = page_align_up(addr + length)
    covered = start
    for m in ctx.proc.space.mappings_in(start, end):
        if m.start != covered:
            break
        covered = m.end
    if covered < end:
        raise OSError(errno.ENOMEM, "range not mapped")
    return start, end


@syscall("mlock")
def sys_mlock(ctx: SyscallContext, addr: int, length: int, *_: int) -> int:
    """Lock a range and make it resident before returning (its first writes still fault)."""
    start, end = _mapped_range(ctx, addr, length)
    return 0 if ctx.memory.residency.lock(ctx.proc, start, end) else -errno.EAGAIN


@syscall("mlock2")
def sys_mlock2(ctx: SyscallContext, addr: int, length: int, flags: int, *_: int) -> int:
    """mlock, or with MLOCK_ONFAULT only mark the range locked (pages come at first touch)."""
    if flags & ~MLOCK_ONFAULT:
        return -errno.EINVAL
    if not flags & MLOCK_ONFAULT:
        return sys_mlock(ctx, addr, length)
    start, end = _mapped_range(ctx, addr, length)
    ctx.memory.residency.mark_locked(ctx.proc, ctx.thread.tid, start, end)
    return 0


@syscall("munlock")
def sys_munlock(ctx: SyscallContext, addr: int, length: int, *_: int) -> int:
    """Unlock a range (its pages stay resident: nothing is ever paged out)."""
    start, end = _mapped_range(ctx, addr, length)
    ctx.proc.space.set_locked(start, end, False)
    return 0


@syscall("mlockall")
def sys_mlockall(ctx: SyscallContext, flags: int, *_: int) -> int:
    """MCL_CURRENT locks every mapping now; MCL_FUTURE locks every later one as it is made."""
    if not flags & (MCL_CURRENT | MCL_FUTURE) or flags & ~(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT):
        return -errno.EINVAL
    proc = ctx.proc
    if flags & MCL_FUTURE:
        proc.lock_future = True
    if flags & MCL_CURRENT:
        for m in list(proc.space.mappings()):
            if not ctx.memory.residency.lock(proc, m.start, m.end):
                return -errno.EAGAIN
    return 0


@syscall("munlockall")
def sys_munlockall(ctx: SyscallContext, *_: int) -> int:
    """Unlock everything and stop locking new mappings (a superlocked process stays so)."""
    proc = ctx.proc
    proc.lock_future = proc.superlocked
    for m in list(proc.space.mappings()):
        proc.space.set_locked(m.start, m.end, proc.superlocked)
    return 0


@syscall("msync")
def sys_msync(ctx: SyscallContext, addr: int, length: int, flags: int, *_: int) -> int | None:
    """Write modified pages of shared file mappings back to the file and re-protect them.

    MS_SYNC waits for the simulated device (the caller blocks in REPLY) and
    fsyncs the host file; MS_ASYNC queues the writes; MS_INVALIDATE also drops
    clean cached pages so that they are read from the file again. The host
    file has the bytes as soon as the call is made either way.
    """
    if addr % PAGE_SIZE or flags & ~(MS_ASYNC | MS_INVALIDATE | MS_SYNC) \
            or (flags & MS_ASYNC and flags & MS_SYNC):
        return -errno.EINVAL
    start, end = _mapped_range(ctx, addr, length)
    space, memory, thread = ctx.proc.space, ctx.memory, ctx.thread
    invalidate = bool(flags & MS_INVALIDATE)
    pages = space.dirty_file_pages(start, end)
    if not pages:
        space.sync(start, end, invalidate)
        return 0
    done = memory.store.submit(ctx.proc.pid, thread.tid, pages, True, "msync")
    if done.ok:     # the device took them: the file has the bytes, the pages are clean again
        space.sync(start, end, invalidate)
        if flags & MS_SYNC:
            for m in space.mappings_in(start, end):
                if m.obj.cached:
                    m.obj.file.sync()
    # on a write error nothing is written and the pages stay modified
    result = 0 if done.ok else -done.errno
    if not flags & MS_SYNC:
        return result
    memory.waits.block_until(thread, done.done_at, ThreadState.REPLY, result)
    return None
