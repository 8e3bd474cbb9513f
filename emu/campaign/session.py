"""One program under one policy, on a machine that can be forked at any point into runs
that finish on their own: the campaign's unit of execution (and its fast-forward).

A `Session` builds the machine in a private guest root (a copy of the program's root, or
an empty directory), with the guest's stdin on /dev/null and its stdout and stderr in
files. `advance(cycle)` runs it to a cycle (stopping and resuming change nothing: the
machine's step API guarantees it); `fork_run` forks the emulator process there: the child
arms the experiment's faults (or records triggers, for a golden run), runs to the end
under a cycle limit, and sends its `RunRecord` back through a pipe; the session waits
for it, with a host time limit, and goes on.

A child shares the host file system with the session, and open file descriptions (their
offsets) with it: so every host descriptor's offset is put back after a child, and if
the child changed the guest root (a program that writes files), the session is spent —
`dirty` — and the caller starts a new one.
"""
from __future__ import annotations

import ctypes
import json
import os
import select
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

from emu.campaign.outcome import RunRecord, record_of
from emu.cli import config_from, parse_run_options
from emu.config import RunConfig
from emu.errors import EmuError
from emu.inject.spec import FaultSpec
from emu.inject.trigger import Occurrence
from emu.loader.symbols import symbols
from emu.machine import AtCycle, Exited, Machine
from emu.trace.events import Diagnostic, Event

PR_SET_PDEATHSIG = 1
Arm = Callable[[Machine], "Callable[[], Any] | None"]
"""(machine) -> what to send back after the run (a callable), or None: a child's set-up."""


def die_with_parent() -> None:
    """Have the kernel kill this process when its parent dies (Linux prctl)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


@dataclass(frozen=True)
class Target:
    """A program under a policy: everything an `emu run` needs but its faults."""

    program: str                    # host path
    args: tuple[str, ...] = ()
    options: tuple[str, ...] = ()   # `emu run` options (the program's, then the policy's)
    root: str | None = None         # copied for every run (None: an empty directory)
    files: tuple[str, ...] = ()     # guest paths whose final bytes are part of the output

    def config(self, root: str) -> RunConfig:
        """The RunConfig of this target with `root` as the guest root; EmuError if the
        options do not parse."""
        parsed = parse_run_options(["--root", root, *self.options, self.program, *self.args])
        if parsed.stats or parsed.events or parsed.strace or parsed.faults or parsed.inject:
            raise EmuError("a campaign's options may not have --stats, --events, --strace, "
                           "--fault or --inject")
        return config_from(parsed, {})

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return {"program": self.program, "args": list(self.args), "options": list(self.options),
                "root": self.root, "files": list(self.files)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Target:
        """The inverse of to_json."""
        return cls(data["program"], tuple(data["args"]), tuple(data["options"]), data["root"],
                   tuple(data["files"]))


@dataclass(frozen=True)
class GoldenResult:
    """A golden run: its record and, per recorded trigger, its occurrences."""

    record: RunRecord
    occurrences: list[list[Occurrence]]
    seconds: float


def _tree_state(root: str) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and modification times of everything under `root`."""
    state = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            state.append((os.path.relpath(path, root), st.st_size, st.st_mtime_ns))
        dirnames.sort()
    try:
        state.append((".", 0, os.lstat(root).st_mtime_ns))
    except OSError:
        pass
    return tuple(state)


def _offsets() -> dict[int, int]:
    """The offset of every seekable host descriptor of this process but stdio."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd < 3:
            continue
        try:
            found[fd] = os.lseek(fd, 0, os.SEEK_CUR)
        except OSError:
            pass
    return found


class Session:
    """A machine of one target in a private root, forkable into finished runs."""

    def __init__(self, target: Target, record: tuple[FaultSpec, ...] = ()) -> None:
        """Build the machine (not run yet), recording the occurrences of the triggers of
        `record` (a golden run's, so that the machine stops where the golden run did);
        EmuError if the target cannot run."""
        self.target = target
        self._dir = tempfile.mkdtemp(prefix="emu-campaign-")
        self.root = os.path.join(self._dir, "root")
        if target.root is not None:
            shutil.copytree(target.root, self.root, symlinks=True)
        else:
            os.mkdir(self.root)
        self._out = open(os.path.join(self._dir, "stdout"), "w+b")
        self._err = open(os.path.join(self._dir, "stderr"), "w+b")
        self.diagnostics: list[str] = []
        self._saved = [os.dup(fd) for fd in (0, 1, 2)]
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(self._out.fileno(), 1)
        os.dup2(self._err.fileno(), 2)
        self.dirty = False
        try:
            self.config = target.config(self.root)
            self.machine = Machine(self.config, diagnostics=self._diagnostic)
            self.logs = self.machine.injector.record(record)
            symbols(self.config.program)    # read once here, not in every forked run
        except BaseException:
            self.close()
            raise
        self.exited = False
        self.start = self.cycle
        self.requested = self.start         # the last cycle `advance` was asked for

    def golden(self, timeout: float) -> GoldenResult:
        """The golden run from here (the start): its record, and the occurrences of each
        recorded trigger."""
        started = time.perf_counter()
        logs = self.logs

        def arm(machine: Machine) -> Callable[[], Any]:
            return lambda: [[[o.number, o.cycle, o.step_start, o.seen_at_step] for o in log]
                            for log in logs]
        record, extra = self.fork_run(arm, 0, timeout)
        occurrences = [[Occurrence(*o) for o in log] for log in extra or [[] for _ in logs]]
        return GoldenResult(record, occurrences, time.perf_counter() - started)

    def experiment(self, spec: FaultSpec, key: int | None, limit: int, timeout: float
                   ) -> tuple[RunRecord, int]:
        """The run with `spec` armed here, its trigger having seen what recorded trigger
        number `key` has seen so far (None: nothing counted); its record and that count."""
        seen = self.machine.injector.recorded(key) if key is not None else 0

        def arm(machine: Machine) -> None:
            machine.injector.retire_recorders()
            machine.arm((spec,), (seen,))
        record, _ = self.fork_run(arm, limit, timeout)
        return record, seen

    def _diagnostic(self, event: Event) -> None:
        if isinstance(event, Diagnostic):
            self.diagnostics.append(event.message)

    @property
    def cycle(self) -> int:
        """Where the machine is now."""
        return self.machine.engine.cycles

    def advance(self, cycle: int) -> bool:
        """Run to `cycle` (the first block boundary at or after it); False if every guest
        process ended before."""
        if self.exited:
            return False
        self.requested = cycle
        if cycle > self.cycle:
            self.exited = isinstance(self.machine.run(AtCycle(cycle)), Exited)
        return not self.exited

    def fork_run(self, arm: Arm, limit: int, timeout: float) -> tuple[RunRecord, Any]:
        """Fork here; the child calls `arm(machine)`, runs to the end with the clock limited
        to `limit` cycles (0: none), and its record comes back, with what the callable
        `arm` returned gives after the run (None if it returned None). The host time limit
        `timeout` (seconds) ends a child that takes longer."""
        offsets = _offsets()
        before = _tree_state(self.root)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:                        # the child: never returns
            os.close(read_end)
            self._child(write_end, arm, limit)
        os.close(write_end)
        record, extra = self._collect(pid, read_end, timeout)
        for fd, offset in offsets.items():
            try:
                os.lseek(fd, offset, os.SEEK_SET)
            except OSError:
                pass
        if _tree_state(self.root) != before:
            self.dirty = True
        return record, extra

    def _child(self, channel: int, arm: Arm, limit: int) -> None:
        code = 0
        try:
            die_with_parent()
            for fd, source in ((1, self._out), (2, self._err)):
                copy = tempfile.TemporaryFile(dir=self._dir)
                copy.write(os.pread(source.fileno(), os.fstat(source.fileno()).st_size, 0))
                copy.flush()
                os.dup2(copy.fileno(), fd)
            machine = self.machine
            extra = None
            try:
                after = arm(machine)
                if limit:
                    machine.limit_cycles(limit)
                report = machine.result().report
                record = self._record(report)
                extra = after() if after is not None else None
            except EmuError as exc:
                record = RunRecord.failed(str(exc))
            except Exception as exc:       # an emulator bug: the outcome says so
                record = RunRecord.failed(f"internal error: {type(exc).__name__}: {exc}")
            payload = json.dumps({"record": record.to_json(), "extra": extra}).encode()
            with os.fdopen(channel, "wb") as out:
                out.write(payload)
        except BaseException:
            code = 1
        finally:
            os._exit(code)

    def _record(self, report: dict[str, Any]) -> RunRecord:
        """The child's record: its report, its stdout and stderr, the declared files."""
        outputs = []
        for fd in (1, 2):
            size = os.fstat(fd).st_size
            outputs.append(os.pread(fd, size, 0))
        files: dict[str, bytes | None] = {}
        for guest in self.target.files:
            path = os.path.join(self.root, guest.lstrip("/"))
            try:
                with open(path, "rb") as f:
                    files[guest] = f.read()
            except OSError:
                files[guest] = None
        return record_of(report, outputs[0], outputs[1], files)

    @staticmethod
    def _collect(pid: int, channel: int, timeout: float) -> tuple[RunRecord, Any]:
        """The child's record, or a failed one (it crashed, or took too long)."""
        chunks = []
        deadline = time.monotonic() + timeout
        timed_out = False
        with os.fdopen(channel, "rb") as stream:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                ready, _, _ = select.select([stream], [], [], left)
                if not ready:
                    continue
                chunk = os.read(stream.fileno(), 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
        if timed_out:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        if timed_out:
            return RunRecord.failed(f"host time limit ({timeout:.0f} s) reached"), None
        if not chunks:
            why = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                   else f"exit {os.WEXITSTATUS(status)}")
            return RunRecord.failed(f"the emulator process died ({why})"), None
        data = json.loads(b"".join(chunks))
        return RunRecord.from_json(data["record"]), data["extra"]

    def close(self) -> None:
        """Give back stdio and remove the private root."""
        for fd, copy in zip((0, 1, 2), self._saved):
            os.dup2(copy, fd)
            os.close(copy)
        self._saved = []
        self._out.close()
        self._err.close()
        machine = getattr(self, "machine", None)
        if machine is not None:
            machine.close()
        shutil.rmtree(self._dir, ignore_errors=True)
