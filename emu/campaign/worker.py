"""A campaign worker: runs golden runs and groups of experiments, wherever it is started.

`python -m emu.campaign.worker` reads tasks, one JSON object per line on stdin, and answers
each with JSON lines on stdout: a golden task with one `golden` line; a group task with a
`result` line per experiment as soon as it is done, then `done`. The local pool keeps
one such process per worker; on a Dask cluster, each task starts one
(`run_task_in_subprocess`), so that forking for fast-forward never happens in a process
with threads, and every run has the process's stdio to itself.

A group's experiments share a program and policy. With fast-forward, one session runs
forward through their fork points in order and forks each experiment there; without,
each is forked from the session at its start. A session whose child changed the guest
root is replaced (see emu/campaign/session.py).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import IO, Any, Iterator

from emu.campaign.outcome import RunRecord
from emu.campaign.session import Session, Target, die_with_parent
from emu.errors import EmuError
from emu.inject.spec import FaultSpec, Stream


def worker_name() -> str:
    """Where results come from: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def run_golden(task: dict[str, Any]) -> dict[str, Any]:
    """A golden task's answer."""
    target = Target.from_json(task["target"])
    keys = tuple(FaultSpec.parse(text) for text in task["record"])
    try:
        session = Session(target, keys)
    except EmuError as exc:
        return {"type": "golden", "record": RunRecord.failed(str(exc)).to_json(),
                "occurrences": [], "seconds": 0.0}
    try:
        golden = session.golden(task["timeout"])
    finally:
        session.close()
    return {"type": "golden", "record": golden.record.to_json(),
            "occurrences": [[[o.number, o.cycle, o.step_start, o.seen_at_step] for o in log]
                            for log in golden.occurrences],
            "seconds": golden.seconds}


class GroupRunner:
    """Runs group tasks, keeping the last session between them: the coordinator hands a
    target's groups out in the order of their fork points, so a worker that gets the next
    group of the same target goes on from where its session is instead of running
    forward from the start again."""

    def __init__(self) -> None:
        """No session yet."""
        self.session: Session | None = None
        self._key: str | None = None
        self.me = worker_name()

    def run(self, task: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """A group task's result lines, one per experiment as it finishes."""
        target = Target.from_json(task["target"])
        keys = tuple(FaultSpec.parse(text) for text in task["record"])
        key = json.dumps([task["target"], task["record"]], sort_keys=True)
        if key != self._key:
            self.close()
            self._key = key
        fast = bool(task["fast_forward"])
        for exp in sorted(task["experiments"], key=lambda e: (e["fork_cycle"] if fast else 0)):
            started = time.perf_counter()
            spec = FaultSpec.parse(exp["fault"])
            forked = False
            try:
                session = self._session_at(target, keys, exp["fork_cycle"] if fast else 0,
                                           spec.stream is Stream.CLOCK)
                forked = session.cycle > session.start
                record, _ = session.experiment(spec, exp["key_index"], task["limit"],
                                               task["timeout"])
            except EmuError as exc:
                record = RunRecord.failed(str(exc))
            yield {"type": "result", "key": exp["key"], "record": record.to_json(),
                   "seconds": time.perf_counter() - started, "fast_forward": forked,
                   "worker": self.me}

    def _session_at(self, target: Target, keys: tuple[FaultSpec, ...], fork_at: int,
                    clock: bool) -> Session:
        """A session at `fork_at` — or, for a fault on the clock alone, at the first stop
        point after it, where the session may be already — or at its start if the run
        ends before."""
        session = self.session
        if session is not None and (session.dirty or session.exited or (
                session.cycle > fork_at and not (clock and session.requested <= fork_at))):
            self.close()
            session = None
        if session is None:
            session = self.session = Session(target, keys)
        if fork_at > session.cycle and not session.advance(fork_at):
            self.close()                # it ended before: this one runs from the start
            session = self.session = Session(target, keys)
        return session

    def close(self) -> None:
        """Give the session up."""
        if self.session is not None:
            self.session.close()
            self.session = None


def serve(tasks: IO[str], answers: IO[str]) -> None:
    """Answer every task line of `tasks` on `answers`."""
    runner = GroupRunner()
    try:
        for line in tasks:
            if not line.strip():
                continue
            task = json.loads(line)
            if task["type"] == "golden":
                answers.write(json.dumps(run_golden(task)) + "\n")
            else:
                for answer in runner.run(task):
                    answers.write(json.dumps(answer) + "\n")
                    answers.flush()
                answers.write(json.dumps({"type": "done"}) + "\n")
            answers.flush()
    finally:
        runner.close()


def main() -> int:
    """The worker process: tasks on stdin, answers on stdout (the guest's output, and
    emu's, go to files of each run)."""
    die_with_parent()
    # the task and answer channels move off stdio, which the runs' guests use
    tasks = os.fdopen(os.dup(0), "r")
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    try:
        serve(tasks, answers)
    except BrokenPipeError:
        return 1
    return 0


def start_worker() -> subprocess.Popen[str]:
    """A worker process (this Python, this emu), ready for tasks."""
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, "-m", "emu.campaign.worker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env, bufsize=1)


def run_task_in_subprocess(task: dict[str, Any]) -> list[dict[str, Any]]:
    """Run one task in a fresh worker process and return its answers (a Dask task)."""
    proc = start_worker()
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(json.dumps(task) + "\n")
        proc.stdin.close()
        answers = [json.loads(line) for line in proc.stdout if line.strip()]
    finally:
        proc.wait()
    return [a for a in answers if a["type"] != "done"]


if __name__ == "__main__":
    sys.exit(main())
