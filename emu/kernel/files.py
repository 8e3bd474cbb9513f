"""Open files of a process: guest descriptors onto host descriptors.

Guest descriptors 0-2 are the emulator's own stdin/stdout/stderr. Open-flag
values differ between architectures (O_DIRECTORY, O_NOFOLLOW, O_DIRECT,
O_LARGEFILE), so they are translated to the host's.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from typing import Protocol

# Flags whose values differ between x86-64 and the asm-generic (AArch64) ABI.
_ARCH_OPEN_FLAGS = {
    "x86_64": {"O_DIRECT": 0o40000, "O_LARGEFILE": 0o100000, "O_DIRECTORY": 0o200000,
               "O_NOFOLLOW": 0o400000},
    "aarch64": {"O_DIRECTORY": 0o40000, "O_NOFOLLOW": 0o100000, "O_DIRECT": 0o200000,
                "O_LARGEFILE": 0o400000},
}
_COMMON_OPEN_FLAGS = {  # same value on both guest ABIs and the host
    "O_WRONLY": 0o1, "O_RDWR": 0o2, "O_CREAT": 0o100, "O_EXCL": 0o200, "O_NOCTTY": 0o400,
    "O_TRUNC": 0o1000, "O_APPEND": 0o2000, "O_NONBLOCK": 0o4000, "O_DSYNC": 0o10000,
    "O_CLOEXEC": 0o2000000, "O_SYNC": 0o4010000, "O_PATH": 0o10000000,
}
_O_TMPFILE_BIT = 0o20000000     # __O_TMPFILE: O_TMPFILE is this | the arch's O_DIRECTORY
O_CLOEXEC = 0o2000000
O_NONBLOCK = 0o4000


def host_open_flags(arch: str, guest_flags: int) -> tuple[int, bool, bool]:
    """(host flags, wants O_DIRECTORY, wants O_NOFOLLOW) for guest open flags."""
    host = guest_flags & 0o3
    for name, value in _COMMON_OPEN_FLAGS.items():
        if name not in ("O_WRONLY", "O_RDWR", "O_CLOEXEC") and guest_flags & value == value:
            host |= getattr(os, name, 0)
    arch_flags = _ARCH_OPEN_FLAGS[arch]
    directory = bool(guest_flags & arch_flags["O_DIRECTORY"])
    nofollow = bool(guest_flags & arch_flags["O_NOFOLLOW"])
    if directory:
        host |= os.O_DIRECTORY
    if nofollow:
        host |= os.O_NOFOLLOW
    if guest_flags & _O_TMPFILE_BIT:
        host |= os.O_TMPFILE
    return host, directory, nofollow


@dataclass(eq=False)
class OpenFile:
    """One open file description (shared by dup'ed descriptors).

    A pipe, FIFO or epoll instance is a kernel object (`kernel_object`); its `host_fd`
    is then only an anchor of the same file type (a host pipe end, for fstat and lseek),
    never read or written."""

    host_fd: int
    guest_path: str
    guest_flags: int
    is_std: bool = False            # the emulator's own stdio: never closed on the host
    dir_entries: list[tuple[str, int, int]] | None = None   # getdents64 state
    refs: int = field(default=1)
    kernel_object: KernelObject | None = None
    _may_block: bool | None = None
    owner: tuple[int, int] = (0, 0)     # F_SETOWN_EX: (type, id) that gets SIGIO / the lease signal
    signal: int = 0                     # F_SETSIG (0: SIGIO)
    lease: int = 2                      # F_SETLEASE: F_RDLCK, F_WRLCK or F_UNLCK (2)

    @property
    def nonblocking(self) -> bool:
        """Whether O_NONBLOCK is set on the description."""
        return bool(self.guest_flags & O_NONBLOCK)

    @property
    def may_block(self) -> bool:
        """Whether host reads or writes of it can wait (a host pipe, socket or terminal)."""
        if self._may_block is None:
            from emu.kernel.hostio import host_may_block
            self._may_block = self.kernel_object is None and host_may_block(self.host_fd)
        return self._may_block

    def close(self) -> None:
        """Drop one reference; close the host descriptor with the last one."""
        self.refs -= 1
        if self.refs == 0:
            if self.kernel_object is not None:
                self.kernel_object.release()
            if not self.is_std:
                os.close(self.host_fd)


class KernelObject(Protocol):
    """What a kernel-implemented open file (pipe end, epoll instance) does at its last close."""

    def release(self) -> None:
        """The description's last descriptor closed."""


@dataclass
class FdSlot:
    """A descriptor: the open file and its per-descriptor flags."""

    file: OpenFile
    cloexec: bool = False


class FdTable:
    """A process's descriptor table."""

    MAX_FDS = 1024                  # the default RLIMIT_NOFILE soft limit

    def __init__(self) -> None:
        """A table with 0, 1, 2 bound to the emulator's stdio."""
        self._slots: dict[int, FdSlot] = {}
        self.limit = self.MAX_FDS       # RLIMIT_NOFILE's soft limit: descriptors stay below
        for fd, name in ((0, "<stdin>"), (1, "<stdout>"), (2, "<stderr>")):
            self._slots[fd] = FdSlot(OpenFile(fd, name, 0 if fd == 0 else 1, is_std=True))

    def get(self, fd: int) -> OpenFile:
        """The open file of `fd`, or EBADF."""
        slot = self._slots.get(fd)
        if slot is None:
            raise OSError(errno.EBADF, "bad file descriptor")
        return slot.file

    def numbers(self) -> list[int]:
        """The open descriptors, in order."""
        return sorted(self._slots)

    def slot(self, fd: int) -> FdSlot:
        """The descriptor slot of `fd`, or EBADF."""
        self.get(fd)
        return self._slots[fd]

    def install(self, file: OpenFile, lowest: int = 0, cloexec: bool = False) -> int:
        """Bind `file` to the lowest free descriptor >= `lowest` (EMFILE if none)."""
        for fd in range(lowest, self.limit):
            if fd not in self._slots:
                self._slots[fd] = FdSlot(file, cloexec)
                return fd
        raise OSError(errno.EMFILE, "too many open files")

    def dup_to(self, old: int, new: int, cloexec: bool = False) -> int:
        """Make `new` refer to `old`'s file (closing what `new` had)."""
        file = self.get(old)
        if not 0 <= new < self.limit:
            raise OSError(errno.EBADF, "bad file descriptor")
        if new == old:
            return new
        if new in self._slots:
            self.close(new)
        file.refs += 1
        self._slots[new] = FdSlot(file, cloexec)
        return new

    def dup(self, old: int, lowest: int = 0, cloexec: bool = False) -> int:
        """A new descriptor for `old`'s file."""
        file = self.get(old)
        fd = self.install(file, lowest, cloexec)
        file.refs += 1
        return fd

    def close(self, fd: int) -> None:
        """Release descriptor `fd` (EBADF if not open)."""
        slot = self._slots.pop(fd, None)
        if slot is None:
            raise OSError(errno.EBADF, "bad file descriptor")
        slot.file.close()

    def clone(self) -> FdTable:
        """A copy for a forked child: the same open files (shared offsets), the same flags."""
        table = FdTable.__new__(FdTable)
        table._slots = {}
        table.limit = self.limit
        for fd, slot in self._slots.items():
            slot.file.refs += 1
            table._slots[fd] = FdSlot(slot.file, slot.cloexec)
        return table

    def close_on_exec(self) -> None:
        """Close every descriptor marked close-on-exec."""
        for fd in [fd for fd, slot in self._slots.items() if slot.cloexec]:
            self.close(fd)

    def close_all(self) -> None:
        """Close every descriptor (process exit)."""
        for fd in list(self._slots):
            self.close(fd)
