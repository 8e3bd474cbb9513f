"""The mmap family: mmap, munmap, mremap, mprotect, madvise, mincore, brk, mlock & co.

Every address, length and offset is checked for overflow (64-bit wrap-around, the end
of user space) before anything is allocated, with Linux's errno for each case.
"""
from __future__ import annotations

import errno
import os
import stat
import weakref

from emu.kernel.process import ThreadState
from emu.kernel.syscalls import SyscallContext, syscall, to_int32
from emu.mm.frames import PAGE_SHIFT, PAGE_SIZE, OutOfFrames
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
MADV_DONTNEED, MADV_FREE, MADV_REMOVE = 4, 8, 9
MADV_WIPEONFORK, MADV_KEEPONFORK, MADV_DONTNEED_LOCKED = 18, 19, 24
# every advice Linux 6.x knows (MADV_HWPOISON and MADV_SOFT_OFFLINE need CAP_SYS_ADMIN)
_MADV_VALID = frozenset(range(0, 5)) | frozenset(range(8, 26))
_MADV_ADMIN = frozenset({100, 101})
MREMAP_MAYMOVE, MREMAP_FIXED, MREMAP_DONTUNMAP = 1, 2, 4
PROT_SEM, PROT_BTI = 0x8, 0x10
PROT_GROWSDOWN, PROT_GROWSUP = 0x01000000, 0x02000000
_PROT_ALL = PROT_READ | PROT_WRITE | PROT_EXEC
TASK_SIZE = STACK_TOP               # the end of user space (47 bits on both arches)
_WORD = 1 << 64
MAX_LFS_FILESIZE = (1 << 63) - 1


MAX_MAP_COUNT = 65530                   # vm.max_map_count's default (/proc/sys/vm/max_map_count)


def _check_range(addr: int, length: int) -> int:
    """Page-aligned end of [addr, addr+length) inside user space, or EINVAL (munmap's rule)."""
    if addr % PAGE_SIZE or length == 0 or addr > TASK_SIZE or length > TASK_SIZE - addr:
        raise OSError(errno.EINVAL, "bad range")
    return addr + page_align_up(length)


def _prot_bits(ctx: SyscallContext, prot: int) -> int:
    """The PROT_READ/WRITE/EXEC part of a prot argument; EINVAL for bits Linux rejects
    (PROT_SEM, and PROT_BTI on AArch64, are accepted and have no effect here)."""
    prot &= 0xFFFFFFFF
    if prot & PROT_GROWSDOWN and prot & PROT_GROWSUP:
        raise OSError(errno.EINVAL, "both grows flags")
    extra = PROT_SEM | (PROT_BTI if ctx.arch == "aarch64" else 0)
    if prot & ~(_PROT_ALL | extra | PROT_GROWSDOWN | PROT_GROWSUP):
        raise OSError(errno.EINVAL, "bad prot")
    return prot & _PROT_ALL


def shared_anonymous(ctx: SyscallContext, size: int) -> CachedFileObject:
    """The object of a MAP_SHARED anonymous (or /dev/zero) mapping: pages of an unnamed
    file, the same in every mapping of it and across fork, however late they are first
    touched; its frames go with the last mapping that holds it."""
    cache = ctx.memory.page_cache
    cached = cache.anonymous(size, "/dev/zero (deleted)")
    obj = CachedFileObject(cached, nosync=True)
    weakref.finalize(obj, cache.release, cached)
    return obj


@syscall("mmap")
def sys_mmap(ctx: SyscallContext, addr: int, length: int, prot: int, flags: int,
             fd: int, offset: int) -> int:
    """Map anonymous memory or a file; pages are set up on first touch."""
    kind = flags & 0x3
    if length == 0 or kind == 0 or offset % PAGE_SIZE:
        return -errno.EINVAL
    prot = _prot_bits(ctx, prot)
    size = page_align_up(length)
    if size >= _WORD or size > TASK_SIZE:
        return -errno.ENOMEM                # (PAGE_ALIGN wrapped to 0, or bigger than user space)
    if (offset >> PAGE_SHIFT) + (size >> PAGE_SHIFT) >= 1 << (64 - PAGE_SHIFT):
        return -errno.EOVERFLOW
    if not flags & MAP_ANONYMOUS and (offset > MAX_LFS_FILESIZE
                                      or size > MAX_LFS_FILESIZE - offset):
        return -errno.EOVERFLOW
    share = Share.SHARED if kind in (MAP_SHARED, MAP_SHARED_VALIDATE) else Share.PRIVATE
    space = ctx.proc.space
    zero_device, may_write = False, True
    if not flags & MAP_ANONYMOUS:
        file = ctx.proc.fds.get(to_int32(fd))
        if file.guest_flags & 0o10000000:           # O_PATH
            return -errno.EBADF
        zero_device = file.guest_path == "/dev/zero"
        mode = file.guest_flags & 0o3
        if mode == os.O_WRONLY or (share is Share.SHARED and prot & PROT_WRITE
                                   and mode != os.O_RDWR):
            return -errno.EACCES
        may_write = share is Share.PRIVATE or mode == os.O_RDWR
    if flags & MAP_ANONYMOUS or zero_device:
        obj: AnonymousMemory | CachedFileObject = AnonymousMemory()
        offset, name = 0, "[anon]"
        if share is Share.SHARED:
            obj = shared_anonymous(ctx, size)
            name = obj.name
    else:
        if not stat.S_ISREG(os.fstat(file.host_fd).st_mode):
            return -errno.ENODEV
        cached = ctx.memory.page_cache.file_for(file.host_fd, file.guest_path)
        obj = CachedFileObject(cached, nosync=bool(flags & MAP_NOSYNCFILE))
        name = file.guest_path
    if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE):
        if addr % PAGE_SIZE:
            return -errno.EINVAL
        if addr > TASK_SIZE - size:
            return -errno.ENOMEM
        end = addr + size
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
    # A PROT_NONE mapping only reserves address space (guard pages, glibc's heap arenas,
    # reservations a program later mprotects piece by piece): it commits nothing, its pages
    # come at first touch after an mprotect, as MAP_LAZY ones do.
    lazy = bool(flags & (MAP_LAZY | MAP_NORESERVE)) \
        or not prot & (PROT_READ | PROT_WRITE | PROT_EXEC)
    if space.count >= MAX_MAP_COUNT:
        return -errno.ENOMEM                # vm.max_map_count
    try:
        space.insert(Mapping(start, start + size, prot, share, obj, offset, name, lazy=lazy,
                             may_write=may_write))
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
    space = ctx.proc.space
    inside = space.find(addr)
    if inside is not None and inside.start < addr and end < inside.end \
            and space.count >= MAX_MAP_COUNT:
        return -errno.ENOMEM                # splitting it would pass vm.max_map_count
    space.remove(addr, end)
    return 0


@syscall("mprotect")
def sys_mprotect(ctx: SyscallContext, addr: int, length: int, prot: int, *_: int) -> int:
    """Change the protection of a fully mapped range."""
    prot = _prot_bits(ctx, prot)
    if addr % PAGE_SIZE:
        return -errno.EINVAL
    if length == 0:
        return 0
    end = addr + page_align_up(length)
    if end >= _WORD:
        return -errno.ENOMEM                # wraps around
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
    if prot & PROT_WRITE and not all(m.may_write for m in space.mappings_in(addr, end)):
        return -errno.EACCES                # a shared mapping of a file opened read-only
    space.protect(addr, end, prot)
    # locked pages that just became accessible are set up now, as mlock would have
    for m in space.mappings_in(addr, end):
        if m.locked and not ctx.memory.residency.populate(ctx.proc, m.start, m.end,
                                                final=ctx.proc.superlocked):
            return -errno.EAGAIN
    return 0


@syscall("madvise")
def sys_madvise(ctx: SyscallContext, addr: int, length: int, advice: int, *_: int) -> int:
    """MADV_DONTNEED/MADV_FREE drop the pages (they read back as their object's contents);
    every other known advice is accepted and changes nothing. Errors as Linux: EINVAL for
    unknown advice, an unaligned start or a range that wraps; ENOMEM if part of the range is
    unmapped (the mapped parts are still advised)."""
    advice = to_int32(advice)
    if advice in _MADV_ADMIN:
        return -errno.EPERM if ctx.proc.creds.euid else -errno.EINVAL
    if advice not in _MADV_VALID or addr % PAGE_SIZE:
        return -errno.EINVAL
    end = addr + page_align_up(length)
    if end >= _WORD or (length and end == addr):
        return -errno.EINVAL                # PAGE_ALIGN wrapped, or start + len wraps
    if end == addr:
        return 0
    parts = ctx.proc.space.mappings_in(addr, end)
    covered = sum(m.length for m in parts) == end - addr
    if advice in (MADV_DONTNEED, MADV_FREE, MADV_DONTNEED_LOCKED, MADV_REMOVE, MADV_WIPEONFORK):
        for m in parts:
            if m.locked and advice != MADV_DONTNEED_LOCKED:
                return -errno.EINVAL
            private_anon = m.share is Share.PRIVATE and not m.obj.is_file
            if advice in (MADV_FREE, MADV_WIPEONFORK) and not private_anon:
                return -errno.EINVAL
            if advice == MADV_REMOVE:     # freeing the backing store: not supported here
                return -errno.EINVAL if m.share is Share.PRIVATE else -errno.EOPNOTSUPP
        if advice in (MADV_DONTNEED, MADV_FREE, MADV_DONTNEED_LOCKED):
            try:
                for m in parts:
                    ctx.proc.space.discard(m.start, m.end)
            except OutOfFrames:
                return -errno.EAGAIN        # the pages could not be committed again
    return 0 if covered else -errno.ENOMEM


@syscall("mincore")
def sys_mincore(ctx: SyscallContext, addr: int, length: int, vec: int, *_: int) -> int:
    """One byte per page of [addr, addr+length): 1 if the page is resident (mapped here, or
    a file page in the page cache). EINVAL unaligned, ENOMEM for an unmapped page or a range
    outside user space."""
    if addr % PAGE_SIZE:
        return -errno.EINVAL
    if addr > TASK_SIZE or length > TASK_SIZE - addr:
        return -errno.ENOMEM
    end = addr + page_align_up(length)
    space, page = ctx.proc.space, addr
    while page < end:
        m = space.find(page)
        if m is None:
            return -errno.ENOMEM
        stop = min(m.end, end, page + (PAGE_SIZE << 12))     # 4096 pages at a time
        first, last = page >> PAGE_SHIFT, stop >> PAGE_SHIFT
        out = bytearray(last - first)
        for vpn, _ in space.page_table.entries(first, last):
            out[vpn - first] = 1
        if m.obj.cached:
            for i in range(len(out)):
                index = m.object_offset((first + i) << PAGE_SHIFT) >> PAGE_SHIFT
                out[i] |= m.obj.file.is_cached(index)
        ctx.mem.write(vec + ((page - addr) >> PAGE_SHIFT), bytes(out))
        page = stop
    return 0


@syscall("mremap")
def sys_mremap(ctx: SyscallContext, addr: int, old_size: int, new_size: int, flags: int,
               new_addr: int, *_: int) -> int:
    """Resize and/or move a mapping (Linux's rules: shrink in place, grow in place when the
    range after it is free, else move with MREMAP_MAYMOVE; MREMAP_FIXED, MREMAP_DONTUNMAP;
    old_size 0 duplicates a shared file mapping)."""
    if flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP) \
            or (flags & MREMAP_FIXED and not flags & MREMAP_MAYMOVE) \
            or (flags & MREMAP_DONTUNMAP and (not flags & MREMAP_MAYMOVE or old_size != new_size)) \
            or addr % PAGE_SIZE:
        return -errno.EINVAL
    old_len, new_len = page_align_up(old_size) % _WORD, page_align_up(new_size) % _WORD
    if new_len == 0:
        return -errno.EINVAL
    space = ctx.proc.space
    m = space.find(addr)
    if m is None:
        return -errno.EFAULT
    if flags & (MREMAP_FIXED | MREMAP_DONTUNMAP):
        if new_addr % PAGE_SIZE or new_len > TASK_SIZE or new_addr > TASK_SIZE - new_len:
            return -errno.EINVAL
        if addr + old_len > new_addr and new_addr + new_len > addr:
            return -errno.EINVAL            # the two ranges overlap
        if flags & MREMAP_FIXED:
            if new_addr < MMAP_MIN:
                return -errno.EPERM
            space.remove(new_addr, new_addr + new_len)
        if old_len > new_len:
            space.remove(addr + new_len, addr + old_len)
            old_len = new_len
        err = _resizable(ctx, addr, old_len, new_len)
        if err:
            return err
        if not flags & MREMAP_FIXED:
            new_addr = _place(ctx, new_addr, new_len)
            if new_addr < 0:
                return new_addr
        return _move(ctx, addr, old_len, new_addr, new_len, bool(flags & MREMAP_DONTUNMAP))
    if old_len >= new_len:                  # shrinking (or the same size): always in place
        if old_len > new_len:
            space.remove(addr + new_len, addr + old_len)
        return addr
    err = _resizable(ctx, addr, old_len, new_len)
    if err:
        return err
    m = space.find(addr)
    assert m is not None
    if old_len and addr + old_len == m.end and space.is_free(m.end, addr + new_len):
        try:
            space.extend(m, addr + new_len)
        except OutOfFrames:
            return -errno.ENOMEM
        return _made_resident(ctx, m.end, addr + new_len, addr)
    if not flags & MREMAP_MAYMOVE:
        return -errno.ENOMEM
    target = _place(ctx, 0, new_len)
    return target if target < 0 else _move(ctx, addr, old_len, target, new_len, False)


def _resizable(ctx: SyscallContext, addr: int, old_len: int, new_len: int) -> int:
    """Linux's vma_to_resize checks: 0, or the errno (negative) of the call."""
    m = ctx.proc.space.find(addr)
    if m is None:
        return -errno.EFAULT
    if old_len == 0 and not (m.share is Share.SHARED and m.obj.cached):
        return -errno.EINVAL                # duplicating: only a shared file mapping
    if old_len > m.end - addr:
        return -errno.EFAULT                # across mapping boundaries
    return 0


def _place(ctx: SyscallContext, hint: int, length: int) -> int:
    """Where a moved mapping goes: the hint if free, else the top-down search; -ENOMEM."""
    space = ctx.proc.space
    if hint and hint % PAGE_SIZE == 0 and space.is_free(hint, hint + length):
        return hint
    found = space.find_free(length, align=space.placement_alignment(length))
    return -errno.ENOMEM if found is None else found


def _move(ctx: SyscallContext, addr: int, old_len: int, new_addr: int, new_len: int,
          keep_old: bool) -> int:
    """Move [addr, addr+old_len) with its pages to new_addr, new_len bytes long."""
    space = ctx.proc.space
    m = space.find(addr)
    assert m is not None
    try:
        if old_len == 0:                    # a second mapping of the same shared file pages
            space.insert(Mapping(new_addr, new_addr + new_len, m.prot, m.share, m.obj,
                                 m.object_offset(addr), m.name, m.lazy, may_write=m.may_write))
        else:
            space.move(m.clipped(addr, addr + old_len), new_addr, new_len, keep_old)
    except OutOfFrames:
        return -errno.ENOMEM
    return _made_resident(ctx, new_addr + old_len, new_addr + new_len, new_addr)


def _made_resident(ctx: SyscallContext, start: int, end: int, result: int) -> int:
    """`result`, once the new part [start, end) of a locked mapping is resident (EAGAIN
    if it cannot be)."""
    m = ctx.proc.space.find(start) if start < end else None
    if m is not None and m.locked and not ctx.memory.residency.populate(
            ctx.proc, start, end, final=ctx.proc.superlocked):
        return -errno.EAGAIN
    return result


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


def _mapped_range(ctx: SyscallContext, addr: int, length: int,
                  wrap: int = errno.EINVAL) -> tuple[int, int]:
    """The page-rounded range of an mlock-family call; `wrap` if it wraps around, ENOMEM
    unless all of it is mapped."""
    start = addr & ~(PAGE_SIZE - 1)
    size = page_align_up(length + addr % PAGE_SIZE) % _WORD    # (Linux's PAGE_ALIGN wraps:
    end = start + size                                         # a huge length is 0 pages)
    if end >= _WORD:
        raise OSError(wrap, "range wraps around")
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
    start, end = _mapped_range(ctx, addr, length, wrap=errno.ENOMEM)
    space, memory, thread = ctx.proc.space, ctx.memory, ctx.thread
    invalidate = bool(flags & MS_INVALIDATE)
    if invalidate and any(m.locked for m in space.mappings_in(start, end)):
        return -errno.EBUSY                 # locked pages cannot be invalidated
    pages = space.dirty_file_pages(start, end)
    if not pages:
        space.sync(start, end, invalidate)
        return 0
    files = sorted({m.name for m in space.mappings_in(start, end)
                    if m.obj.cached and m.share is Share.SHARED and not m.obj.nosync})
    done = memory.store.submit(ctx.proc.pid, thread.tid, pages, True, "msync",
                               files[0] if len(files) == 1 else "")
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
