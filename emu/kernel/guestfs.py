"""The guest root: guest paths resolved to host paths that can never leave it.

Resolution walks one component at a time, following symlinks itself (absolute
targets restart at the guest root), and clamps `..` at the root, so neither
`..`, nor a symlink, nor /proc/self/root can escape.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
import weakref

_MAX_SYMLINKS = 40
OUTSIDE_ROOT_EXE = "/proc/self/exe"
"""The guest's name for a program that lies outside the guest root (its host path stays
hidden: runs must not depend on where the binary sits on the host)."""


class GuestPathError(OSError):
    """A guest path that cannot be resolved (carries the errno the syscall returns)."""


class GuestRoot:
    """Maps guest paths onto a host directory."""

    def __init__(self, host_dir: str, exe_guest_path: str = "") -> None:
        """Serve `host_dir` as the guest's `/`; `exe_guest_path` is what /proc/self/exe names."""
        self.host_dir = os.path.realpath(host_dir)
        self.exe_guest_path = exe_guest_path
        # "" until made: the root has no /tmp of its own (None: it has one)
        self._private_tmp: str | None = \
            None if os.path.lexists(os.path.join(self.host_dir, "tmp")) else ""
        # guest-visible owners set by chown where the host could not (it is not root):
        # (st_dev, st_ino) -> (uid, gid), for the run
        self.owners: dict[tuple[int, int], tuple[int, int]] = {}

    def owner_of(self, st: os.stat_result) -> tuple[int, int]:
        """(uid, gid) the guest sees for a host stat result (a chown recorded for the run
        wins over the host's owner)."""
        return self.owners.get((st.st_dev, st.st_ino), (st.st_uid, st.st_gid))

    def set_owner(self, st: os.stat_result, uid: int, gid: int) -> None:
        """Record the guest-visible owner of the file `st` describes (forgotten when it
        matches the host's)."""
        key = (st.st_dev, st.st_ino)
        if (uid, gid) == (st.st_uid, st.st_gid):
            self.owners.pop(key, None)
        else:
            self.owners[key] = (uid, gid)

    def forget_owner(self, st: os.stat_result) -> None:
        """Drop a recorded owner (its file is being removed: the inode may be reused)."""
        self.owners.pop((st.st_dev, st.st_ino), None)

    def magic_link(self, path: str, cwd: str, exe: str | None = None,
                   pid: int | None = None) -> str | None:
        """What readlink shows for /proc/self/{exe,cwd,root} (or /proc/thread-self/...,
        /proc/PID/...) however it is spelt (`.`, `..`, `//`, relative, through
        /proc/self/root or /proc/self/cwd); None for any other path. Never a host path."""
        exe_path = self.exe_guest_path if exe is None else exe
        selves = {"self", "thread-self"} | ({str(pid)} if pid is not None else set())
        parts: list[str] = [] if path.startswith("/") else [c for c in cwd.split("/") if c]
        names = [c for c in path.split("/") if c]
        for i, name in enumerate(names):
            if name == ".":
                continue
            if name == "..":
                if parts:
                    parts.pop()
                continue
            parts.append(name)
            last = i == len(names) - 1
            if len(parts) == 3 and parts[0] == "proc" and parts[1] in selves \
                    and parts[2] in ("root", "cwd") and not last:
                parts = [c for c in (cwd if parts[2] == "cwd" else "/").split("/") if c]
        if len(parts) == 3 and parts[0] == "proc" and parts[1] in selves \
                and parts[2] in ("root", "cwd", "exe") and not path.endswith("/"):
            return {"root": "/", "cwd": cwd, "exe": exe_path}[parts[2]]
        return None

    def guest_path_of(self, host_path: str) -> str | None:
        """The guest path of a host path under the root, or None if it lies outside."""
        real = os.path.realpath(host_path)
        if real == self.host_dir:
            return "/"
        if os.path.commonpath([real, self.host_dir]) == self.host_dir:
            return "/" + os.path.relpath(real, self.host_dir)
        return None

    def resolve(self, path: str, cwd: str, follow: bool = True, exe: str | None = None) -> str:
        """Host path for guest `path` (relative to guest `cwd`); follows a final symlink if `follow`."""
        return self.host_path(self.canonical(path, cwd, follow, exe))

    def canonical(self, path: str, cwd: str, follow: bool = True, exe: str | None = None) -> str:
        """The guest's absolute, symlink-free path for `path`.

        /proc/self/{root,cwd,exe} are the guest's own (`exe` overrides the
        program named at construction); a trailing '/' follows a final symlink.
        """
        if not path:
            raise GuestPathError(errno.ENOENT, "empty path")
        follow = follow or path.endswith("/")
        exe_path = self.exe_guest_path if exe is None else exe
        pending = [c for c in path.split("/") if c]
        parts: list[str] = [] if path.startswith("/") else [c for c in cwd.split("/") if c]
        links = 0
        while pending:
            name = pending.pop(0)
            if name == ".":
                continue
            if name == "..":
                if parts:
                    parts.pop()
                continue
            if not parts and name == "proc" and pending[:1] in (["self"], ["thread-self"]) and \
                    pending[1:2] in (["root"], ["cwd"], ["exe"]):    # the guest's, never the host's
                target = {"root": "/", "cwd": cwd, "exe": exe_path}[pending[1]]
                if target == OUTSIDE_ROOT_EXE:          # a program outside the root: itself
                    parts, pending = ["proc", "self", "exe"], pending[2:]
                    continue
                pending = [c for c in target.split("/") if c] + pending[2:]
                continue
            parts.append(name)
            host = self.host_path("/" + "/".join(parts))
            try:
                st = os.lstat(host)
            except OSError:
                if pending:                       # a missing directory in the middle
                    raise GuestPathError(errno.ENOENT, path) from None
                break
            if stat.S_ISLNK(st.st_mode) and (pending or follow):
                links += 1
                if links > _MAX_SYMLINKS:
                    raise GuestPathError(errno.ELOOP, path)
                target = os.readlink(host)
                parts.pop()
                if target.startswith("/"):
                    parts = []
                pending = [c for c in target.split("/") if c] + pending
            elif pending and not stat.S_ISDIR(st.st_mode):
                raise GuestPathError(errno.ENOTDIR, path)
        return "/" + "/".join(parts)

    def host_path(self, guest_abs: str) -> str:
        """Host path of a canonical guest path (from `canonical`); /tmp is the run's private
        directory when the root has none."""
        if guest_abs == "/":
            return self.host_dir
        if self._private_tmp is not None and (guest_abs == "/tmp" or
                                              guest_abs.startswith("/tmp/")):
            return self._private_tmp_dir() + guest_abs[4:]
        return self.host_dir + guest_abs

    def _private_tmp_dir(self) -> str:
        """The private /tmp, made at first use and removed with the root (at the end of the
        run): a tmpfs-like scratch space, as a Linux /tmp that nobody else sees."""
        if not self._private_tmp:
            self._private_tmp = tempfile.mkdtemp(prefix="emu-tmp-")
            os.chmod(self._private_tmp, 0o1777)
            weakref.finalize(self, shutil.rmtree, self._private_tmp, True)
        return self._private_tmp
