"""Processes and threads: the kernel's records of who runs in which address space."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from emu.kernel.files import FdTable
from emu.kernel.guestfs import GuestRoot
from emu.mm.uaccess import UserMemory
from emu.mm.vmspace import AddressSpace


class ThreadState(enum.Enum):
    """Thread states, named as QNX names them."""

    RUNNING = "RUNNING"
    READY = "READY"
    DEAD = "DEAD"


@dataclass
class Thread:
    """A guest thread: its saved registers and its state."""

    tid: int
    process: Process
    pc: int
    context: Any = None             # the CPU engine's saved registers while not running
    state: ThreadState = ThreadState.READY
    clear_child_tid: int = 0        # set_tid_address
    robust_list: int = 0

    def set_state(self, new: ThreadState) -> None:
        """Move to `new`; a dead thread never changes state again."""
        assert self.state is not ThreadState.DEAD, f"thread {self.tid} is dead"
        self.state = new


@dataclass
class ExitStatus:
    """How a process ended: an exit code, or the signal that killed it."""

    code: int = 0
    signal: int = 0

    @property
    def shell_code(self) -> int:
        """The status as a shell reports it: the code, or 128 + signal."""
        return 128 + self.signal if self.signal else self.code & 0xFF


@dataclass
class Process:
    """A guest process: address space, descriptors, identity and threads."""

    pid: int
    arch: str
    space: AddressSpace
    mem: UserMemory
    root: GuestRoot
    exe_path: str                   # guest path of the program
    uid: int = 0
    gid: int = 0
    cwd: str = "/"
    umask: int = 0o022
    fds: FdTable = field(default_factory=FdTable)
    threads: list[Thread] = field(default_factory=list)
    exit: ExitStatus | None = None

    @property
    def alive(self) -> bool:
        """Whether the process has not exited."""
        return self.exit is None
