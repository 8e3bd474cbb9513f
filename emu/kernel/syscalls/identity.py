"""Credentials and process attributes: the set*id family, groups, capabilities, personality,
prctl.

Linux's rules (kernel/sys.c, kernel/groups.c, kernel/capability.c,
security/commoncap.c): a caller with CAP_SETUID (CAP_SETGID for groups) may set
any id; others only pick among their real, effective and saved ids. Changing
ids from or to root adjusts the capability sets as Linux's
cap_emulate_setxuid does (no SECBIT_KEEP_CAPS), and changing the effective or
file-system ids resets the dumpable flag and the parent-death signal.
"""
from __future__ import annotations

import errno
import struct
from dataclasses import replace

from emu.kernel.process import Credentials, Process
from emu.kernel.resources import (CAP_FS_MASK, CAP_FULL, CAP_LAST_CAP, CAP_SETGID, CAP_SETPCAP,
                                  CAP_SETUID, COMM_LEN, SUID_DUMP_DISABLE, SUID_DUMP_USER,
                                  capable, comm_of)
from emu.kernel.signals import NSIG
from emu.kernel.syscalls import SyscallContext, syscall, to_int32

NO_ID = 0xFFFFFFFF                      # (uid_t) -1: "leave unchanged", never a valid id
NGROUPS_MAX = 65536
_LINUX_CAPABILITY_VERSION_1, _LINUX_CAPABILITY_VERSION_2 = 0x19980330, 0x20071026
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_U32 = 0xFFFFFFFF

PR_SET_PDEATHSIG, PR_GET_PDEATHSIG, PR_GET_DUMPABLE, PR_SET_DUMPABLE = 1, 2, 3, 4
PR_SET_NAME, PR_GET_NAME, PR_CAPBSET_READ = 15, 16, 23
PR_SET_TIMERSLACK, PR_GET_TIMERSLACK = 29, 30
PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37
PR_SET_NO_NEW_PRIVS, PR_GET_NO_NEW_PRIVS = 38, 39


def _commit(proc: Process, new: Credentials) -> int:
    """Install `new` credentials (commit_creds): a change of effective or file-system ids, or
    lost capabilities, make the process non-dumpable and clear its parent-death signal."""
    old = proc.creds
    changed = (old.euid, old.egid, old.fsuid, old.fsgid) != (new.euid, new.egid, new.fsuid,
                                                              new.fsgid)
    lost = (new.cap_permitted & ~old.cap_permitted) or (new.cap_effective & ~old.cap_permitted)
    if changed or lost:
        proc.res.dumpable = SUID_DUMP_DISABLE
        proc.pdeath_signal = 0
    proc.creds = new
    return 0


def _fix_caps(old: Credentials, new: Credentials) -> None:
    """cap_emulate_setxuid: leaving root drops capabilities; becoming euid 0 raises them."""
    if 0 in (old.uid, old.euid, old.suid) and 0 not in (new.uid, new.euid, new.suid):
        new.cap_permitted = new.cap_effective = 0
    if old.euid == 0 and new.euid != 0:
        new.cap_effective = 0
    if old.euid != 0 and new.euid == 0:
        new.cap_effective = new.cap_permitted


def _uid_change(ctx: SyscallContext, new: Credentials) -> int:
    _fix_caps(ctx.proc.creds, new)
    return _commit(ctx.proc, new)


def _ids(ctx: SyscallContext, *values: int) -> tuple[int, ...]:
    return tuple(v & _U32 for v in values)


# ---- reading ids ----

def _write_ids(ctx: SyscallContext, addrs: tuple[int, int, int], ids: tuple[int, int, int]) -> int:
    for addr, value in zip(addrs, ids):
        ctx.mem.write(addr, struct.pack("<I", value))
    return 0


@syscall("getresuid", inline=True)
def sys_getresuid(ctx: SyscallContext, ruid: int, euid: int, suid: int, *_: int) -> int:
    """The real, effective and saved user ids."""
    c = ctx.proc.creds
    return _write_ids(ctx, (ruid, euid, suid), (c.uid, c.euid, c.suid))


@syscall("getresgid", inline=True)
def sys_getresgid(ctx: SyscallContext, rgid: int, egid: int, sgid: int, *_: int) -> int:
    """The real, effective and saved group ids."""
    c = ctx.proc.creds
    return _write_ids(ctx, (rgid, egid, sgid), (c.gid, c.egid, c.sgid))


# ---- user ids ----

@syscall("setuid")
def sys_setuid(ctx: SyscallContext, uid: int, *_: int) -> int:
    """With CAP_SETUID: every user id; otherwise the effective one, to the real or saved id."""
    (uid,) = _ids(ctx, uid)
    old = ctx.proc.creds
    if uid == NO_ID:
        return -errno.EINVAL
    new = old.copy()
    if capable(old, CAP_SETUID):
        new.uid = new.suid = uid
    elif uid not in (old.uid, old.suid):
        return -errno.EPERM
    new.euid = new.fsuid = uid
    return _uid_change(ctx, new)


@syscall("setreuid")
def sys_setreuid(ctx: SyscallContext, ruid: int, euid: int, *_: int) -> int:
    """Set the real and/or effective user id (-1: unchanged); the saved id follows the
    effective one when the real id is set or the effective one differs from the old real."""
    ruid, euid = _ids(ctx, ruid, euid)
    old = ctx.proc.creds
    privileged = capable(old, CAP_SETUID)
    new = old.copy()
    if ruid != NO_ID:
        if ruid not in (old.uid, old.euid) and not privileged:
            return -errno.EPERM
        new.uid = ruid
    if euid != NO_ID:
        if euid not in (old.uid, old.euid, old.suid) and not privileged:
            return -errno.EPERM
        new.euid = euid
    if ruid != NO_ID or (euid != NO_ID and euid != old.uid):
        new.suid = new.euid
    new.fsuid = new.euid
    return _uid_change(ctx, new)


@syscall("setresuid")
def sys_setresuid(ctx: SyscallContext, ruid: int, euid: int, suid: int, *_: int) -> int:
    """Set any of the real, effective and saved user ids (-1: unchanged); without CAP_SETUID
    each new value must be one of the current three."""
    wanted = _ids(ctx, ruid, euid, suid)
    old = ctx.proc.creds
    current = (old.uid, old.euid, old.suid)
    if any(v != NO_ID and v not in current for v in wanted) and not capable(old, CAP_SETUID):
        return -errno.EPERM
    new = old.copy()
    if wanted[0] != NO_ID:
        new.uid = wanted[0]
    if wanted[1] != NO_ID:
        new.euid = wanted[1]
    if wanted[2] != NO_ID:
        new.suid = wanted[2]
    new.fsuid = new.euid
    return _uid_change(ctx, new)


@syscall("setfsuid")
def sys_setfsuid(ctx: SyscallContext, fsuid: int, *_: int) -> int:
    """Set the file-system user id if allowed; always returns the previous one."""
    (fsuid,) = _ids(ctx, fsuid)
    old = ctx.proc.creds
    previous = old.fsuid
    allowed = fsuid in (old.uid, old.euid, old.suid, old.fsuid) or capable(old, CAP_SETUID)
    if fsuid == NO_ID or not allowed or fsuid == old.fsuid:
        return previous
    new = replace(old, fsuid=fsuid)
    if old.fsuid == 0 and fsuid != 0:
        new.cap_effective &= ~CAP_FS_MASK
    elif old.fsuid != 0 and fsuid == 0:
        new.cap_effective |= new.cap_permitted & CAP_FS_MASK
    _commit(ctx.proc, new)
    return previous


# ---- group ids ----

@syscall("setgid")
def sys_setgid(ctx: SyscallContext, gid: int, *_: int) -> int:
    """With CAP_SETGID: every group id; otherwise the effective one, to the real or saved id."""
    (gid,) = _ids(ctx, gid)
    old = ctx.proc.creds
    if gid == NO_ID:
        return -errno.EINVAL
    new = old.copy()
    if capable(old, CAP_SETGID):
        new.gid = new.sgid = gid
    elif gid not in (old.gid, old.sgid):
        return -errno.EPERM
    new.egid = new.fsgid = gid
    return _commit(ctx.proc, new)


@syscall("setregid")
def sys_setregid(ctx: SyscallContext, rgid: int, egid: int, *_: int) -> int:
    """Set the real and/or effective group id (the rules of setreuid)."""
    rgid, egid = _ids(ctx, rgid, egid)
    old = ctx.proc.creds
    privileged = capable(old, CAP_SETGID)
    new = old.copy()
    if rgid != NO_ID:
        if rgid not in (old.gid, old.egid) and not privileged:
            return -errno.EPERM
        new.gid = rgid
    if egid != NO_ID:
        if egid not in (old.gid, old.egid, old.sgid) and not privileged:
            return -errno.EPERM
        new.egid = egid
    if rgid != NO_ID or (egid != NO_ID and egid != old.gid):
        new.sgid = new.egid
    new.fsgid = new.egid
    return _commit(ctx.proc, new)


@syscall("setresgid")
def sys_setresgid(ctx: SyscallContext, rgid: int, egid: int, sgid: int, *_: int) -> int:
    """Set any of the real, effective and saved group ids (the rules of setresuid)."""
    wanted = _ids(ctx, rgid, egid, sgid)
    old = ctx.proc.creds
    current = (old.gid, old.egid, old.sgid)
    if any(v != NO_ID and v not in current for v in wanted) and not capable(old, CAP_SETGID):
        return -errno.EPERM
    new = old.copy()
    if wanted[0] != NO_ID:
        new.gid = wanted[0]
    if wanted[1] != NO_ID:
        new.egid = wanted[1]
    if wanted[2] != NO_ID:
        new.sgid = wanted[2]
    new.fsgid = new.egid
    return _commit(ctx.proc, new)


@syscall("setfsgid")
def sys_setfsgid(ctx: SyscallContext, fsgid: int, *_: int) -> int:
    """Set the file-system group id if allowed; always returns the previous one."""
    (fsgid,) = _ids(ctx, fsgid)
    old = ctx.proc.creds
    previous = old.fsgid
    allowed = fsgid in (old.gid, old.egid, old.sgid, old.fsgid) or capable(old, CAP_SETGID)
    if fsgid != NO_ID and allowed and fsgid != old.fsgid:
        _commit(ctx.proc, replace(old, fsgid=fsgid))
    return previous


# ---- supplementary groups ----

@syscall("getgroups", inline=True)
def sys_getgroups(ctx: SyscallContext, size: int, out: int, *_: int) -> int:
    """The supplementary groups; size 0 asks for their number (EINVAL if `size` is short)."""
    size = to_int32(size)
    groups = ctx.proc.creds.groups
    if size < 0:
        return -errno.EINVAL
    if size == 0:
        return len(groups)
    if size < len(groups):
        return -errno.EINVAL
    if groups:
        ctx.mem.write(out, struct.pack(f"<{len(groups)}I", *groups))
    return len(groups)


@syscall("setgroups")
def sys_setgroups(ctx: SyscallContext, size: int, addr: int, *_: int) -> int:
    """Replace the supplementary groups (CAP_SETGID only; kept sorted, as Linux keeps them)."""
    size = to_int32(size)
    if not 0 <= size <= NGROUPS_MAX:
        return -errno.EINVAL
    if not capable(ctx.proc.creds, CAP_SETGID):
        return -errno.EPERM
    groups = struct.unpack(f"<{size}I", ctx.mem.read(addr, 4 * size)) if size else ()
    if NO_ID in groups:
        return -errno.EINVAL
    return _commit(ctx.proc, replace(ctx.proc.creds, groups=tuple(sorted(groups))))


# ---- capabilities ----

def _cap_words(ctx: SyscallContext, header: int) -> int:
    """How many 32-bit words the header's version uses; EINVAL (the preferred version
    written back) for an unknown one."""
    version = struct.unpack("<I", ctx.mem.read(header, 4))[0]
    if version == _LINUX_CAPABILITY_VERSION_1:
        return 1
    if version in (_LINUX_CAPABILITY_VERSION_2, _LINUX_CAPABILITY_VERSION_3):
        return 2
    ctx.mem.write(header, struct.pack("<I", _LINUX_CAPABILITY_VERSION_3))
    raise OSError(errno.EINVAL, "unknown capability version")


@syscall("capget", inline=True)
def sys_capget(ctx: SyscallContext, header: int, data: int, *_: int) -> int:
    """A process's effective, permitted and inheritable capability sets."""
    try:
        words = _cap_words(ctx, header)
    except OSError:
        return 0 if data == 0 else -errno.EINVAL
    if data == 0:
        return 0
    pid = struct.unpack("<i", ctx.mem.read(header + 4, 4))[0]
    if pid < 0:
        return -errno.EINVAL
    proc = ctx.proc if pid in (0, ctx.proc.pid) else ctx.signals.find_process(pid)
    if proc is None:
        return -errno.ESRCH
    c = proc.creds
    out = b"".join(struct.pack("<III", c.cap_effective >> (32 * i) & _U32,
                               c.cap_permitted >> (32 * i) & _U32,
                               c.cap_inheritable >> (32 * i) & _U32) for i in range(words))
    ctx.mem.write(data, out)
    return 0


@syscall("capset")
def sys_capset(ctx: SyscallContext, header: int, data: int, *_: int) -> int:
    """Change one's own capability sets: permitted may only shrink, effective stays within
    permitted, inheritable within permitted (without CAP_SETPCAP) and the bounding set."""
    words = _cap_words(ctx, header)
    pid = struct.unpack("<i", ctx.mem.read(header + 4, 4))[0]
    if pid not in (0, ctx.thread.tid):
        return -errno.EPERM
    raw = struct.unpack(f"<{3 * words}I", ctx.mem.read(data, 12 * words))
    eff = perm = inh = 0
    for i in range(words):
        eff |= raw[3 * i] << (32 * i)
        perm |= raw[3 * i + 1] << (32 * i)
        inh |= raw[3 * i + 2] << (32 * i)
    eff, perm, inh = eff & CAP_FULL, perm & CAP_FULL, inh & CAP_FULL
    old = ctx.proc.creds
    if not capable(old, CAP_SETPCAP) and inh & ~(old.cap_inheritable | old.cap_permitted):
        return -errno.EPERM
    if perm & ~old.cap_permitted or eff & ~perm:
        return -errno.EPERM
    return _commit(ctx.proc, replace(old, cap_effective=eff, cap_permitted=perm,
                                     cap_inheritable=inh))


# ---- personality ----

@syscall("personality", inline=True)
def sys_personality(ctx: SyscallContext, persona: int, *_: int) -> int:
    """Set the execution domain (0xffffffff only asks); returns the previous one."""
    persona &= _U32
    res = ctx.proc.res
    previous = res.personality
    if persona != _U32:
        res.personality = persona
    return previous


# ---- prctl ----

def _read_name(ctx: SyscallContext, addr: int) -> bytes:
    """Up to 15 bytes of the string at `addr` (strncpy_from_user: nothing past its NUL)."""
    out = bytearray()
    while len(out) < COMM_LEN - 1:
        byte = ctx.mem.read(addr + len(out), 1)
        if byte == b"\0":
            break
        out += byte
    return bytes(out)


def _put_int(ctx: SyscallContext, addr: int, value: int) -> int:
    ctx.mem.write(addr, struct.pack("<i", value))
    return 0


@syscall("prctl")
def sys_prctl(ctx: SyscallContext, option: int, arg2: int, arg3: int, arg4: int, arg5: int,
              *_: int) -> int:
    """Process and thread attributes: name, parent-death signal, dumpable, no_new_privs,
    timer slack, child subreaper and the capability bounding set; other options EINVAL."""
    option = to_int32(option)
    proc, thread = ctx.proc, ctx.thread
    res = proc.res
    if option == PR_SET_PDEATHSIG:
        if arg2 > NSIG:
            return -errno.EINVAL
        proc.pdeath_signal = arg2
        return 0
    if option == PR_GET_PDEATHSIG:
        return _put_int(ctx, arg2, proc.pdeath_signal)
    if option == PR_GET_DUMPABLE:
        return res.dumpable
    if option == PR_SET_DUMPABLE:
        if arg2 not in (SUID_DUMP_DISABLE, SUID_DUMP_USER):
            return -errno.EINVAL
        res.dumpable = arg2
        return 0
    if option == PR_SET_NAME:
        thread.res.comm = _read_name(ctx, arg2).decode("utf-8", "surrogateescape")
        return 0
    if option == PR_GET_NAME:
        comm = comm_of(thread).encode("utf-8", "surrogateescape")[:COMM_LEN - 1]
        ctx.mem.write(arg2, comm.ljust(COMM_LEN, b"\0"))
        return 0
    if option == PR_CAPBSET_READ:
        return 1 if 0 <= arg2 <= CAP_LAST_CAP else -errno.EINVAL
    if option == PR_SET_TIMERSLACK:
        tres = thread.res
        tres.timer_slack_ns = arg2 if arg2 else tres.default_timer_slack_ns
        return 0
    if option == PR_GET_TIMERSLACK:
        return thread.res.timer_slack_ns
    if option == PR_SET_CHILD_SUBREAPER:
        res.child_subreaper = bool(arg2)
        return 0
    if option == PR_GET_CHILD_SUBREAPER:
        return _put_int(ctx, arg2, int(res.child_subreaper))
    if option == PR_SET_NO_NEW_PRIVS:
        if arg2 != 1 or arg3 or arg4 or arg5:
            return -errno.EINVAL
        res.no_new_privs = True
        return 0
    if option == PR_GET_NO_NEW_PRIVS:
        if arg2 or arg3 or arg4 or arg5:
            return -errno.EINVAL
        return int(res.no_new_privs)
    return -errno.EINVAL
