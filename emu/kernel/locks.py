"""Record locks: fcntl F_GETLK/F_SETLK/F_SETLKW and the open-file-description (OFD) forms.

Locks live in the kernel, keyed by the host file (device, inode), so that processes
sharing a file through different descriptors see each other's locks, as on Linux:

- a POSIX lock belongs to a process; closing *any* descriptor of the file drops all
  of that process's locks on it, and so does exit; fork does not inherit them;
- an OFD lock belongs to an open file description (shared by dup and fork) and goes
  with its last descriptor;
- setting a lock over a range replaces the owner's locks there (splitting them), and
  F_UNLCK removes that range;
- a conflicting F_SETLKW blocks the thread (QNX: waiting in REPLY on the file system's
  resource manager) until a lock on the file is released, then tries again; a signal
  interrupts it with EINTR. A wait that would close a cycle of processes each waiting
  for a lock the next holds fails with EDEADLK instead, as Linux detects for POSIX
  locks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from emu.kernel.files import OpenFile
from emu.kernel.process import Process
from emu.kernel.waitq import WaitQueue

F_RDLCK, F_WRLCK, F_UNLCK = 0, 1, 2
OFFSET_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class LockOwner:
    """Who holds a lock: a process (POSIX) or an open file description (OFD)."""

    pid: int
    description: OpenFile | None = None     # set for OFD locks

    @property
    def report_pid(self) -> int:
        """l_pid that F_GETLK reports (-1 for OFD locks)."""
        return -1 if self.description is not None else self.pid


@dataclass
class RecordLock:
    """One locked byte range [start, end] (end inclusive, OFFSET_MAX: to the end of file)."""

    owner: LockOwner
    kind: int                   # F_RDLCK or F_WRLCK
    start: int
    end: int

    def overlaps(self, start: int, end: int) -> bool:
        """Whether it shares a byte with [start, end]."""
        return self.start <= end and start <= self.end


@dataclass
class FileLocks:
    """The locks of one file and the threads waiting to lock it."""

    locks: list[RecordLock] = field(default_factory=list)
    waiters: WaitQueue = field(default_factory=WaitQueue)


class LockTable:
    """Every record lock of the machine."""

    def __init__(self) -> None:
        """No lock held."""
        self._files: dict[tuple[int, int], FileLocks] = {}
        # what each blocked POSIX owner waits for (F_SETLKW), for deadlock detection
        self._waiting: dict[LockOwner, tuple[tuple[int, int], int, int, int]] = {}

    def would_deadlock(self, key: tuple[int, int], owner: LockOwner, kind: int, start: int,
                       end: int) -> bool:
        """Whether `owner` waiting for this lock would close a cycle of POSIX lock owners
        each waiting for the next (Linux's EDEADLK; OFD locks are not checked, as on Linux)."""
        if owner.description is not None:
            return False
        blocker = self.conflict(key, owner, kind, start, end)
        seen: set[LockOwner] = set()
        while blocker is not None:
            holder = blocker.owner
            if holder == owner:
                return True
            if holder in seen or holder not in self._waiting:
                return False
            seen.add(holder)
            wkey, wkind, wstart, wend = self._waiting[holder]
            blocker = self.conflict(wkey, holder, wkind, wstart, wend)
        return False

    def note_waiting(self, key: tuple[int, int], owner: LockOwner, kind: int, start: int,
                     end: int) -> None:
        """`owner` blocks until it can take this lock."""
        if owner.description is None:
            self._waiting[owner] = (key, kind, start, end)

    def done_waiting(self, owner: LockOwner) -> None:
        """`owner` no longer waits (it took the lock, gave up, or died)."""
        self._waiting.pop(owner, None)

    @staticmethod
    def key(file: OpenFile) -> tuple[int, int]:
        """The host identity of `file`."""
        st = os.fstat(file.host_fd)
        return (st.st_dev, st.st_ino)

    def __bool__(self) -> bool:
        return bool(self._files)

    def conflict(self, key: tuple[int, int], owner: LockOwner, kind: int, start: int,
                 end: int) -> RecordLock | None:
        """The first lock of another owner that a `kind` lock over [start, end] conflicts
        with."""
        entry = self._files.get(key)
        if entry is None:
            return None
        for lock in sorted(entry.locks, key=lambda held: held.start):   # the lowest first
            if lock.owner != owner and lock.overlaps(start, end) \
                    and (kind == F_WRLCK or lock.kind == F_WRLCK):
                return lock
        return None

    def queue(self, key: tuple[int, int]) -> WaitQueue:
        """The queue of threads waiting to lock file `key`."""
        return self._files.setdefault(key, FileLocks()).waiters

    def set(self, key: tuple[int, int], owner: LockOwner, kind: int, start: int,
            end: int) -> WaitQueue | None:
        """Make [start, end] `owner`'s `kind` lock (F_UNLCK: unlocked), which must not
        conflict; returns the file's wait queue if waiters should be woken."""
        entry = self._files.setdefault(key, FileLocks())
        kept: list[RecordLock] = []
        released = False
        for lock in entry.locks:
            if lock.owner != owner or not lock.overlaps(start, end):
                kept.append(lock)
                continue
            released = released or lock.kind == F_WRLCK or kind == F_UNLCK
            if lock.start < start:
                kept.append(RecordLock(owner, lock.kind, lock.start, start - 1))
            if lock.end > end:
                kept.append(RecordLock(owner, lock.kind, end + 1, lock.end))
        if kind != F_UNLCK:
            kept.append(RecordLock(owner, kind, start, end))
        entry.locks = kept
        return self._tidy(key, entry) if released else None

    def drop(self, key: tuple[int, int], matches: LockOwner) -> WaitQueue | None:
        """Remove every lock of `matches` on file `key`; the wait queue to wake, if any."""
        entry = self._files.get(key)
        if entry is None:
            return None
        before = len(entry.locks)
        entry.locks = [lock for lock in entry.locks if lock.owner != matches]
        return self._tidy(key, entry) if len(entry.locks) != before else None

    def drop_process(self, proc: Process) -> list[WaitQueue]:
        """Remove every POSIX lock of `proc` (it exited); the wait queues to wake."""
        self.done_waiting(LockOwner(proc.pid))
        woken = []
        for key in list(self._files):
            queue = self.drop(key, LockOwner(proc.pid))
            if queue is not None:
                woken.append(queue)
        return woken

    def _tidy(self, key: tuple[int, int], entry: FileLocks) -> WaitQueue:
        if not entry.locks and not entry.waiters:
            del self._files[key]
        return entry.waiters
