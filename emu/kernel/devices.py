"""Device files emu provides in every guest root, whether or not the root has a /dev.

- /dev/null, /dev/zero and /dev/full are the host's own devices (reads give nothing,
  zeros, zeros; writes are discarded, discarded, ENOSPC) — nothing reaches a file;
- /dev/urandom and /dev/random give the run's seeded bytes (hermetic runs);
- /dev/stdin, /dev/stdout and /dev/stderr (Linux: links to /proc/self/fd/0-2) open the
  caller's descriptor 0, 1 or 2 again;
- /dev/tty is ENXIO: a guest has no controlling terminal.

mmap of /dev/zero is anonymous memory (private or shared), as on Linux (memory.py).
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Callable

from emu.kernel.files import FdTable, OpenFile

HOST_DEVICES = {"/dev/null": os.devnull, "/dev/zero": "/dev/zero", "/dev/full": "/dev/full"}
RANDOM_DEVICES = ("/dev/urandom", "/dev/random")
STD_LINKS = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2, "/dev/fd/0": 0,
             "/dev/fd/1": 1, "/dev/fd/2": 2}
DEVICE_PATHS = frozenset({*HOST_DEVICES, *RANDOM_DEVICES, *STD_LINKS, "/dev/tty"})


@dataclass(eq=False)
class SeededRandom:
    """/dev/urandom: the run's reproducible random bytes; writes are accepted and dropped."""

    random_bytes: Callable[[int], bytes]

    def read(self, count: int) -> bytes:
        """`count` bytes of the seeded stream."""
        return self.random_bytes(count)

    def write(self, data: bytes) -> int:
        """Mixing entropy in changes nothing here (the stream stays the seed's)."""
        return len(data)

    def release(self) -> None:
        """Nothing to let go."""


def is_device(canon: str) -> bool:
    """Whether emu serves guest path `canon` itself."""
    return canon in DEVICE_PATHS


def open_device(canon: str, guest_flags: int, host_flags: int, fds: FdTable,
                random_bytes: Callable[[int], bytes]) -> OpenFile:
    """A new open file for device `canon` (see `is_device`)."""
    if canon == "/dev/tty":
        raise OSError(errno.ENXIO, "no controlling terminal")
    if canon in STD_LINKS:
        source = fds.get(STD_LINKS[canon])
        if source.kernel_object is not None or source.is_std:
            source.refs += 1        # the same open file (a pipe end, the emulator's stdio)
            return source
        fd = os.open(f"/proc/self/fd/{source.host_fd}", host_flags | os.O_CLOEXEC)
        return OpenFile(fd, source.guest_path, guest_flags)
    host = HOST_DEVICES.get(canon, "/dev/urandom")
    fd = os.open(host, (host_flags & (os.O_WRONLY | os.O_RDWR | os.O_NONBLOCK)) | os.O_CLOEXEC)
    obj = SeededRandom(random_bytes) if canon in RANDOM_DEVICES else None
    return OpenFile(fd, canon, guest_flags, kernel_object=obj)
