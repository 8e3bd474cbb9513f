"""Paths emu serves itself — /dev (devices.py) and /proc (procfs.py) — as stat, access and
readlink see them, whether or not the guest root has such directories."""
from __future__ import annotations

import os
import posixpath
import stat as stat_mod

from emu.kernel.devices import HOST_DEVICES, RANDOM_DEVICES, STD_LINKS, is_device
from emu.kernel.procfs import ProcFs
from emu.kernel.syscalls import SyscallContext

_BOOT_NS = 0                     # /proc entries are as old as the machine


def lexical_path(ctx: SyscallContext, base: str, path: str) -> str:
    """`path` made absolute against guest directory `base`, with `.` and `..` folded."""
    return posixpath.normpath(posixpath.join(base, path)) if path else base


def is_magic_link(path: str) -> bool:
    """/proc/PID/{exe,cwd,root} and paths through them: the guest root resolves those."""
    parts = [p for p in path.split("/") if p]
    return len(parts) >= 3 and parts[0] == "proc" and parts[2] in ("exe", "cwd", "root")


def served(path: str) -> bool:
    """Whether emu itself answers for guest path `path` (lexical, absolute)."""
    return is_device(path) or (ProcFs.covers(path) and not is_magic_link(path))


def _fake_stat(mode: int, size: int = 0, ino: int = 1) -> os.stat_result:
    seconds = _BOOT_NS / 1e9
    return os.stat_result((mode, ino, 0, 1, 0, 0, size, int(seconds), int(seconds),
                           int(seconds), seconds, seconds, seconds, _BOOT_NS, _BOOT_NS,
                           _BOOT_NS, 4096, (size + 511) // 512, 0))


def synthetic_stat(ctx: SyscallContext, path: str, follow: bool) -> os.stat_result:
    """stat of a served path (see `served`); ENOENT for a /proc path that names nothing."""
    if path in STD_LINKS:
        if not follow:
            return _fake_stat(stat_mod.S_IFLNK | 0o777)
        return os.fstat(ctx.proc.fds.get(STD_LINKS[path]).host_fd)
    if path == "/dev/tty":
        return os.stat("/dev/tty") if os.path.exists("/dev/tty") else \
            _fake_stat(stat_mod.S_IFCHR | 0o666)
    if is_device(path):
        host = HOST_DEVICES.get(path, "/dev/urandom" if path in RANDOM_DEVICES else path)
        return os.stat(host)
    entry = ctx.procfs.lookup(path, ctx.proc, ctx.thread)
    if entry is None:
        raise OSError(2, "no such /proc entry")
    if entry.kind == "fd" and follow:
        assert entry.owner is not None
        return os.fstat(entry.owner.fds.get(entry.fd).host_fd)
    return _fake_stat(entry.mode, len(entry.data))


def synthetic_link(ctx: SyscallContext, path: str) -> str | None:
    """readlink of a served path: the target of /dev/std* and /proc/PID/fd/N (a guest path,
    pipe:[N], ...); None if it is not a link."""
    if path in STD_LINKS:
        return f"/proc/self/fd/{STD_LINKS[path]}"
    if not ProcFs.covers(path):
        return None
    entry = ctx.procfs.lookup(path, ctx.proc, ctx.thread)
    if entry is None or entry.kind != "fd":
        return None
    assert entry.owner is not None
    return entry.owner.fds.get(entry.fd).guest_path
