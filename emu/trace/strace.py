"""`emu run --strace`: every system call with decoded arguments and its result, as strace -f.

An instrument over SyscallEnter/SyscallExit (published by the syscall table), StateChange
(a blocked call's result arrives when its thread runs again), SignalAction and ProcessExit.
It reads guest memory only through a reader that never faults and charges nothing, so a
traced run is the same run. Lines look like strace's:

    [pid 3] openat(AT_FDCWD, "/etc/passwd", O_RDONLY|O_CLOEXEC) = 3
    [pid 3] read(3, 0x7ffe1000, 4096) = 812
    [pid 3] futex(0x4c8f00, FUTEX_WAIT_PRIVATE, 2, NULL <unfinished ...>
    [pid 3] <... futex resumed>) = 0
    [pid 3] --- SIGSEGV {si_signo=SIGSEGV, si_code=SEGV_MAPERR, si_addr=0x10} ---
    [pid 3] +++ exited with 0 +++
"""
from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Callable
from typing import IO

from emu.trace.events import (Event, ProcessExit, SignalAction, StateChange, SyscallEnter,
                              SyscallExit)

ReadMemory = Callable[[int, int, int], bytes]
"""(pid, address, size) -> the guest's bytes there; raises when nothing is mapped."""
PendingResult = Callable[[int], "int | None"]
"""tid -> the result a woken thread's blocked system call returns, if one is waiting."""

STRING_LIMIT = 32               # strace's default -s
PATH_LIMIT = 4096
AT_FDCWD = -100
_OPEN_COMMON = {0o100: "O_CREAT", 0o200: "O_EXCL", 0o400: "O_NOCTTY", 0o1000: "O_TRUNC",
                0o2000: "O_APPEND", 0o4000: "O_NONBLOCK", 0o10000: "O_DSYNC",
                0o20000: "O_ASYNC", 0o1000000: "O_NOATIME", 0o2000000: "O_CLOEXEC",
                0o4000000 | 0o10000: "O_SYNC", 0o10000000: "O_PATH"}
_OPEN_ARCH = {
    "x86_64": {0o40000: "O_DIRECT", 0o100000: "O_LARGEFILE", 0o200000: "O_DIRECTORY",
               0o400000: "O_NOFOLLOW"},
    "aarch64": {0o40000: "O_DIRECTORY", 0o100000: "O_NOFOLLOW", 0o200000: "O_DIRECT",
                0o400000: "O_LARGEFILE"},
}
_PROT = {1: "PROT_READ", 2: "PROT_WRITE", 4: "PROT_EXEC", 0x01000000: "PROT_GROWSDOWN",
         0x02000000: "PROT_GROWSUP"}
_MAP_TYPE = {1: "MAP_SHARED", 2: "MAP_PRIVATE", 3: "MAP_SHARED_VALIDATE"}
_MAP = {0x10: "MAP_FIXED", 0x20: "MAP_ANONYMOUS", 0x40: "MAP_32BIT", 0x80: "MAP_LAZY",
        0x100: "MAP_GROWSDOWN", 0x800: "MAP_DENYWRITE", 0x1000: "MAP_EXECUTABLE",
        0x2000: "MAP_LOCKED", 0x4000: "MAP_NORESERVE", 0x8000: "MAP_POPULATE",
        0x10000: "MAP_NONBLOCK", 0x20000: "MAP_STACK", 0x40000: "MAP_HUGETLB",
        0x80000: "MAP_SYNC", 0x100000: "MAP_FIXED_NOREPLACE"}
_CLONE = {0x100: "CLONE_VM", 0x200: "CLONE_FS", 0x400: "CLONE_FILES", 0x800: "CLONE_SIGHAND",
          0x1000: "CLONE_PIDFD", 0x2000: "CLONE_PTRACE", 0x4000: "CLONE_VFORK",
          0x8000: "CLONE_PARENT", 0x10000: "CLONE_THREAD", 0x20000: "CLONE_NEWNS",
          0x40000: "CLONE_SYSVSEM", 0x80000: "CLONE_SETTLS", 0x100000: "CLONE_PARENT_SETTID",
          0x200000: "CLONE_CHILD_CLEARTID", 0x400000: "CLONE_DETACHED",
          0x800000: "CLONE_UNTRACED", 0x1000000: "CLONE_CHILD_SETTID"}
_AT = {0x100: "AT_SYMLINK_NOFOLLOW", 0x200: "AT_REMOVEDIR", 0x400: "AT_SYMLINK_FOLLOW",
       0x800: "AT_NO_AUTOMOUNT", 0x1000: "AT_EMPTY_PATH"}
_FUTEX = ("FUTEX_WAIT", "FUTEX_WAKE", "FUTEX_FD", "FUTEX_REQUEUE", "FUTEX_CMP_REQUEUE",
          "FUTEX_WAKE_OP", "FUTEX_LOCK_PI", "FUTEX_UNLOCK_PI", "FUTEX_TRYLOCK_PI",
          "FUTEX_WAIT_BITSET", "FUTEX_WAKE_BITSET", "FUTEX_WAIT_REQUEUE_PI",
          "FUTEX_CMP_REQUEUE_PI")
_HOW = ("SIG_BLOCK", "SIG_UNBLOCK", "SIG_SETMASK")
_WHENCE = ("SEEK_SET", "SEEK_CUR", "SEEK_END", "SEEK_DATA", "SEEK_HOLE")
_IOCTL = {0x5401: "TCGETS", 0x5402: "TCSETS", 0x5413: "TIOCGWINSZ", 0x540F: "TIOCGPGRP",
          0x5410: "TIOCSPGRP", 0x541B: "FIONREAD", 0x5421: "FIONBIO"}
_SI_CODES = {0: "SI_USER", 0x80: "SI_KERNEL", -1: "SI_QUEUE", -2: "SI_TIMER", -6: "SI_TKILL"}
_FAULT_CODES = {
    signal.SIGSEGV: ("SEGV_MAPERR", "SEGV_ACCERR"),
    signal.SIGBUS: ("BUS_ADRALN", "BUS_ADRERR", "BUS_OBJERR"),
    signal.SIGILL: ("ILL_ILLOPC", "ILL_ILLOPN", "ILL_ILLADR", "ILL_ILLTRP", "ILL_PRVOPC"),
    signal.SIGFPE: ("FPE_INTDIV", "FPE_INTOVF", "FPE_FLTDIV", "FPE_FLTOVF", "FPE_FLTUND",
                    "FPE_FLTRES", "FPE_FLTINV", "FPE_FLTSUB"),
    signal.SIGTRAP: ("TRAP_BRKPT", "TRAP_TRACE"),
    signal.SIGCHLD: ("CLD_EXITED", "CLD_KILLED", "CLD_DUMPED", "CLD_TRAPPED", "CLD_STOPPED",
                     "CLD_CONTINUED"),
}
_HEX_RESULT = frozenset({"mmap", "brk", "mremap", "shmat"})
_NO_RETURN = frozenset({"exit", "exit_group"})

# argument kinds of the calls strace users look at most; others show six hex words
_SIGNATURES: dict[str, tuple[str, ...]] = {
    "read": ("fd", "ptr", "u"), "write": ("fd", "wbuf", "u"), "pread64": ("fd", "ptr", "u", "d"),
    "pwrite64": ("fd", "wbuf", "u", "d"), "readv": ("fd", "ptr", "d"), "writev": ("fd", "ptr", "d"),
    "open": ("path", "oflags", "mode"), "openat": ("dirfd", "path", "oflags", "mode"),
    "creat": ("path", "mode"), "close": ("fd",), "lseek": ("fd", "d", "whence"),
    "stat": ("path", "ptr"), "lstat": ("path", "ptr"), "fstat": ("fd", "ptr"),
    "newfstatat": ("dirfd", "path", "ptr", "atflags"), "fstatat64": ("dirfd", "path", "ptr", "atflags"),
    "statx": ("dirfd", "path", "atflags", "x", "ptr"), "access": ("path", "d"),
    "faccessat": ("dirfd", "path", "d"), "faccessat2": ("dirfd", "path", "d", "atflags"),
    "readlink": ("path", "ptr", "u"), "readlinkat": ("dirfd", "path", "ptr", "u"),
    "unlink": ("path",), "unlinkat": ("dirfd", "path", "atflags"), "mkdir": ("path", "mode"),
    "mkdirat": ("dirfd", "path", "mode"), "rmdir": ("path",), "chdir": ("path",),
    "rename": ("path", "path"), "renameat": ("dirfd", "path", "dirfd", "path"),
    "getcwd": ("ptr", "u"), "getdents64": ("fd", "ptr", "u"), "dup": ("fd",),
    "dup2": ("fd", "fd"), "dup3": ("fd", "fd", "oflags"), "pipe": ("ptr",),
    "pipe2": ("ptr", "oflags"), "fcntl": ("fd", "d", "x"), "ioctl": ("fd", "ioctl", "x"),
    "mmap": ("ptr", "u", "prot", "mflags", "fd", "x"), "mprotect": ("ptr", "u", "prot"),
    "munmap": ("ptr", "u"), "brk": ("ptr",), "madvise": ("ptr", "u", "d"),
    "mremap": ("ptr", "u", "u", "x", "ptr"), "msync": ("ptr", "u", "x"),
    "mlock": ("ptr", "u"), "munlock": ("ptr", "u"), "mlockall": ("x",),
    "rt_sigaction": ("sig", "ptr", "ptr", "u"), "rt_sigprocmask": ("how", "ptr", "ptr", "u"),
    "rt_sigreturn": (), "kill": ("d", "sig"), "tkill": ("d", "sig"), "tgkill": ("d", "d", "sig"),
    "sigaltstack": ("ptr", "ptr"), "rt_sigsuspend": ("ptr", "u"), "pause": (),
    "exit": ("d",), "exit_group": ("d",), "wait4": ("d", "ptr", "x", "ptr"),
    "execve": ("path", "argv", "ptr"), "clone3": ("ptr", "u"), "fork": (), "vfork": (),
    "futex": ("ptr", "futex", "d", "ptr"), "set_tid_address": ("ptr",),
    "set_robust_list": ("ptr", "u"), "rseq": ("ptr", "u", "x", "x"),
    "nanosleep": ("ptr", "ptr"), "clock_nanosleep": ("d", "x", "ptr", "ptr"),
    "clock_gettime": ("d", "ptr"), "gettimeofday": ("ptr", "ptr"), "time": ("ptr",),
    "getrandom": ("ptr", "u", "x"), "uname": ("ptr",), "arch_prctl": ("x", "x"),
    "prlimit64": ("d", "d", "ptr", "ptr"), "sched_yield": (), "poll": ("ptr", "u", "d"),
    "ppoll": ("ptr", "u", "ptr", "ptr", "u"), "sysinfo": ("ptr",), "umask": ("mode",),
    **{name: () for name in ("getpid", "getppid", "gettid", "getuid", "geteuid", "getgid",
                             "getegid", "getpgrp", "setsid", "sync")},
}


def quote(data: bytes, limit: int = STRING_LIMIT, more: bool = False) -> str:
    """`data` as strace quotes it: at most `limit` bytes, escaped, `...` if cut (or `more`)."""
    out = []
    for i, byte in enumerate(data[:limit]):
        ch = chr(byte)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\n\t\r\v\f":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r", "\v": "\\v", "\f": "\\f"}[ch])
        elif 0x20 <= byte < 0x7F:
            out.append(ch)
        else:       # octal, short unless a digit follows (as strace writes it)
            follows = i + 1 < min(len(data), limit) and chr(data[i + 1]).isdigit()
            out.append(f"\\{byte:03o}" if follows else f"\\{byte:o}")
    return '"' + "".join(out) + '"' + ("..." if more or len(data) > limit else "")


def flags(value: int, names: dict[int, str], zero: str = "0") -> str:
    """`value` as NAME|NAME|0x.. for the bits `names` knows."""
    parts, rest = [], value
    for bit, name in names.items():
        if bit and rest & bit == bit:
            parts.append(name)
            rest &= ~bit
    if rest:
        parts.append(f"{rest:#x}")
    return "|".join(parts) or zero


def signal_name(signo: int) -> str:
    """SIGSEGV for 11; SIGRTMIN+n, or the number, beyond the named signals."""
    try:
        return signal.Signals(signo).name
    except ValueError:
        return f"SIGRT_{signo - 32}" if 32 <= signo <= 64 else str(signo)


def result_text(name: str, value: int) -> str:
    """`= ...` as strace shows a result: hex for addresses, `-1 ENAME (message)` for errors."""
    if -4096 < value < 0:
        code = -value
        return f"-1 {errno.errorcode.get(code, str(code))} ({os.strerror(code)})"
    if name in _HEX_RESULT:
        return f"{value & (1 << 64) - 1:#x}"
    return str(value)


def _signed(value: int, bits: int = 64) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


class ArgumentDecoder:
    """Turns one call's argument registers into strace's text."""

    def __init__(self, arch: str, read: ReadMemory) -> None:
        """Decoding for `arch`, reading guest memory through `read`."""
        self.arch = arch
        self.read = read
        self.open_flags = {**_OPEN_COMMON, **_OPEN_ARCH.get(arch, {})}

    def arguments(self, pid: int, name: str, args: tuple[int, ...]) -> str:
        """The text between the parentheses."""
        if name == "clone":
            return self._clone(args)
        kinds = _SIGNATURES.get(name)
        if kinds is None:
            return ", ".join(f"{a:#x}" for a in args)
        shown = []
        for i, kind in enumerate(kinds):
            if kind == "mode" and name in ("open", "openat") and not args[i - 1] & 0o20000100:
                break                           # no O_CREAT / O_TMPFILE: no mode argument
            shown.append(self._one(pid, kind, args[i], args, i))
        return ", ".join(shown)

    def _one(self, pid: int, kind: str, value: int, args: tuple[int, ...], i: int) -> str:
        if kind in ("fd", "d"):
            return str(_signed(value, 32) if kind == "fd" else _signed(value))
        if kind == "dirfd":
            fd = _signed(value, 32)
            return "AT_FDCWD" if fd == AT_FDCWD else str(fd)
        if kind == "u":
            return str(value)
        if kind == "x":
            return f"{value:#x}"
        if kind == "ptr":
            return "NULL" if value == 0 else f"{value:#x}"
        if kind == "path":
            return self._string(pid, value, PATH_LIMIT)
        if kind == "wbuf":
            return self._buffer(pid, value, args[i + 1])
        if kind == "argv":
            return self._argv(pid, value)
        if kind == "oflags":
            low = {0: "O_RDONLY", 1: "O_WRONLY", 2: "O_RDWR"}.get(value & 3, "O_ACCMODE")
            rest = flags(value & ~3, self.open_flags, "")
            return low + ("|" + rest if rest else "")
        if kind == "mode":
            return f"0{value & 0o7777:o}" if value else "000"
        if kind == "prot":
            return flags(value, _PROT, "PROT_NONE")
        if kind == "mflags":
            kind_name = _MAP_TYPE.get(value & 3, f"{value & 3:#x}")
            rest = flags(value & ~3 & ~(0x40 if self.arch != "x86_64" else 0), _MAP, "")
            return kind_name + ("|" + rest if rest else "")
        if kind == "atflags":
            return flags(value, _AT)
        if kind == "sig":
            return signal_name(value) if value else "0"
        if kind == "how":
            return _HOW[value] if value < len(_HOW) else str(value)
        if kind == "whence":
            return _WHENCE[value] if value < len(_WHENCE) else str(value)
        if kind == "ioctl":
            return _IOCTL.get(value & 0xFFFFFFFF, f"{value:#x}")
        if kind == "futex":
            op = value & 0x7F
            text = _FUTEX[op] if op < len(_FUTEX) else str(op)
            text += "_PRIVATE" if value & 0x80 else ""
            return text + ("|FUTEX_CLOCK_REALTIME" if value & 0x100 else "")
        raise AssertionError(f"unknown argument kind {kind}")

    def _clone(self, args: tuple[int, ...]) -> str:
        """clone(2): x86-64 passes (flags, stack, ptid, ctid, tls), AArch64 (.., tls, ctid)."""
        flag, stack, ptid = args[0], args[1], args[2]
        ctid, tls = (args[3], args[4]) if self.arch == "x86_64" else (args[4], args[3])
        exit_signal = flag & 0xFF
        text = flags(flag & ~0xFF, _CLONE, "")
        if exit_signal:
            text += ("|" if text else "") + signal_name(exit_signal)
        parts = [f"child_stack={'NULL' if not stack else hex(stack)}", f"flags={text or '0'}"]
        if flag & 0x100000:
            parts.append(f"parent_tid={ptid:#x}")
        if flag & 0x80000:
            parts.append(f"tls={tls:#x}")
        if flag & 0x1200000:
            parts.append(f"child_tidptr={ctid:#x}")
        return ", ".join(parts)

    def _peek(self, pid: int, address: int, size: int) -> bytes:
        """Up to `size` bytes at `address`: as many as are mapped, page by page."""
        out = b""
        while len(out) < size:
            chunk = min(size - len(out), 4096 - (address + len(out)) % 4096)
            try:
                out += self.read(pid, address + len(out), chunk)
            except Exception:       # noqa: BLE001 - nothing mapped further on
                break
        return out

    def _string(self, pid: int, address: int, limit: int) -> str:
        if address == 0:
            return "NULL"
        data = b""
        while len(data) <= limit:       # NUL-terminated: read a page-sized piece at a time
            piece = self._peek(pid, address + len(data), 256)
            if not piece:
                break
            end = piece.find(b"\0")
            if end >= 0:
                return quote(data + piece[:end], limit)
            data += piece
        return quote(data, limit, more=True) if data else f"{address:#x}"

    def _buffer(self, pid: int, address: int, size: int) -> str:
        data = self._peek(pid, address, min(size, STRING_LIMIT))
        if not data and size:
            return f"{address:#x}"
        return quote(data, STRING_LIMIT, more=size > len(data))

    def _argv(self, pid: int, address: int) -> str:
        if address == 0:
            return "NULL"
        items = []
        for n in range(32):
            pointer = int.from_bytes(self._peek(pid, address + 8 * n, 8).ljust(8, b"\0"), "little")
            if pointer == 0:
                break
            items.append(self._string(pid, pointer, STRING_LIMIT))
        else:
            items.append("...")
        return "[" + ", ".join(items) + "]"


class StraceWriter:
    """The --strace instrument: one line per call, blocked calls as unfinished/resumed."""

    kinds = (SyscallEnter, SyscallExit, StateChange, SignalAction, ProcessExit)

    def __init__(self, arch: str, read: ReadMemory, pending_result: PendingResult,
                 stream: IO[str] | None = None) -> None:
        """Decode `arch`'s calls; `pending_result` tells a woken thread's result; lines go to
        `stream` (default: sys.stderr at the time of each line)."""
        self.decoder = ArgumentDecoder(arch, read)
        self.pending_result = pending_result
        self._stream = stream
        self._open: dict[int, tuple[int, str, str]] = {}        # tid -> (pid, name, "name(args")
        self._blocked: dict[int, tuple[int, int, str]] = {}     # tid -> (pid, nr, name)
        self._retrying: set[int] = set()

    def __call__(self, event: Event) -> None:
        """Handle one event."""
        if isinstance(event, SyscallEnter):
            self._enter(event)
        elif isinstance(event, SyscallExit):
            self._exit(event)
        elif isinstance(event, StateChange):
            if event.new == "RUNNING" and event.tid in self._blocked:
                self._woken(event.tid)
        elif isinstance(event, SignalAction):     # ignored ones too: a tracee sees them
            self._line(event.tid, f"--- {self._siginfo(event)} ---")
        elif isinstance(event, ProcessExit):
            self._process_exit(event)

    def _enter(self, event: SyscallEnter) -> None:
        blocked = self._blocked.get(event.tid)
        if blocked is not None and blocked[1] == event.nr:
            self._retrying.add(event.tid)           # a call retried after its wait
            return
        self._blocked.pop(event.tid, None)
        text = f"{event.name}({self.decoder.arguments(event.pid, event.name, event.args)}"
        self._open[event.tid] = (event.pid, event.name, text)

    def _exit(self, event: SyscallExit) -> None:
        tid = event.tid
        if tid in self._retrying:
            if event.result is None:
                return                              # waits again: still unfinished
            self._retrying.discard(tid)
            self._blocked.pop(tid, None)
            self._line(tid, f"<... {event.name} resumed>) = {result_text(event.name, event.result)}")
            return
        opened = self._open.pop(tid, None)
        if opened is None:
            return
        pid, name, text = opened
        if name in _NO_RETURN:
            self._line(tid, f"{text}) = ?")
        elif event.result is None:
            self._line(tid, f"{text} <unfinished ...>")
            self._blocked[tid] = (pid, event.nr, name)
        else:
            self._line(tid, f"{text}) = {result_text(name, event.result)}")

    def _woken(self, tid: int) -> None:
        """A blocked thread runs again: its call returns the result it was woken with (or it
        enters the call again: a retried wait)."""
        result = self.pending_result(tid)
        if result is None:
            return
        _, _, name = self._blocked.pop(tid)
        self._line(tid, f"<... {name} resumed>) = {result_text(name, _signed(result))}")

    def _process_exit(self, event: ProcessExit) -> None:
        for tid, (pid, _, text) in list(self._open.items()):
            if pid == event.pid:                    # exit_group, execve of a dead process
                del self._open[tid]
                self._line(tid, f"{text}) = ?")
        for tid, (pid, _, _) in list(self._blocked.items()):
            if pid == event.pid:
                del self._blocked[tid]
                self._retrying.discard(tid)
                self._line(tid, "<... resumed>) = ?")
        outcome = (f"killed by {signal_name(event.signal)}" if event.signal
                   else f"exited with {event.code}")
        self._line(event.pid, f"+++ {outcome} +++")

    @staticmethod
    def _siginfo(event: SignalAction) -> str:
        name = signal_name(event.signal)
        codes = _FAULT_CODES.get(event.signal, ())
        if 0 < event.code <= len(codes):
            code = codes[event.code - 1]
            if event.signal != signal.SIGCHLD:
                return f"{name} {{si_signo={name}, si_code={code}, si_addr={event.vaddr:#x}}}"
        else:
            code = _SI_CODES.get(event.code, str(event.code))
        return f"{name} {{si_signo={name}, si_code={code}}}"

    def _line(self, tid: int, text: str) -> None:
        stream = self._stream or sys.stderr
        stream.write(f"[pid {tid}] {text}\n")
        stream.flush()
