"""Where a campaign's tasks run: a pool of local worker processes, or a Dask cluster.

Both run the same worker (emu/campaign/worker.py) and hand back its answers, each with
the task it belongs to, as they come: the local pool streams every experiment's result
the moment it is known; Dask hands back a task's answers when the task is done (keep
tasks small).
"""
from __future__ import annotations

import json
import queue
import subprocess
import threading
from typing import Any, Iterator, Protocol

from emu.campaign.outcome import RunRecord
from emu.campaign.worker import run_task_in_subprocess, start_worker
from emu.errors import EmuError

Answer = tuple[dict[str, Any], dict[str, Any]]
"""(the task, one of its answers)."""


class Pool(Protocol):
    """Runs tasks somewhere and yields their answers."""

    workers: int
    fresh_per_task: bool            # every task starts a new worker process (Dask)

    def run(self, tasks: list[dict[str, Any]]) -> Iterator[Answer]:
        """Every answer of every task, as they come."""

    def close(self) -> None:
        """Let the workers go."""


def _failed_answers(task: dict[str, Any], answered: set[str], why: str) -> list[dict[str, Any]]:
    """Answers for what a task that died left unanswered."""
    if task["type"] == "golden":
        return [{"type": "golden", "record": RunRecord.failed(why).to_json(), "occurrences": [],
                 "seconds": 0.0}]
    return [{"type": "result", "key": e["key"], "record": RunRecord.failed(why).to_json(),
             "seconds": 0.0, "fast_forward": False, "worker": "?"}
            for e in task["experiments"] if e["key"] not in answered]


class LocalPool:
    """`workers` local worker processes, each fed by a thread of this process. The
    processes are started on first use and kept until `close` (a golden phase and the
    experiments that follow share them)."""

    fresh_per_task = False

    def __init__(self, workers: int) -> None:
        """A pool of `workers` (at least 1) processes."""
        self.workers = max(1, workers)
        self._procs: list[subprocess.Popen[str] | None] = [None] * self.workers

    def run(self, tasks: list[dict[str, Any]]) -> Iterator[Answer]:
        """Run `tasks` on the workers; answers as they come."""
        for slot, proc in enumerate(self._procs):       # all of them start importing now
            if proc is None or proc.poll() is not None:
                self._procs[slot] = start_worker()
        todo: queue.Queue[dict[str, Any]] = queue.Queue()
        for task in tasks:
            todo.put(task)
        answers: queue.Queue[Answer | None] = queue.Queue()
        threads = [threading.Thread(target=self._feed, args=(slot, todo, answers), daemon=True)
                   for slot in range(min(self.workers, len(tasks)))]
        for thread in threads:
            thread.start()
        running = len(threads)
        while running:
            item = answers.get()
            if item is None:
                running -= 1
                continue
            yield item

    def _feed(self, slot: int, todo: queue.Queue[dict[str, Any]],
              answers: queue.Queue[Answer | None]) -> None:
        """Worker `slot`'s thread: take tasks until none are left, pass their answers on."""
        try:
            while True:
                try:
                    task = todo.get_nowait()
                except queue.Empty:
                    return
                proc = self._procs[slot]
                if proc is None or proc.poll() is not None:
                    proc = self._procs[slot] = start_worker()
                assert proc.stdin is not None and proc.stdout is not None
                answered: set[str] = set()
                try:
                    proc.stdin.write(json.dumps(task) + "\n")
                    proc.stdin.flush()
                    while True:
                        line = proc.stdout.readline()
                        if not line:
                            raise EOFError
                        answer = json.loads(line)
                        if answer["type"] == "done":
                            break
                        answers.put((task, answer))
                        if answer["type"] == "golden":
                            break
                        answered.add(answer["key"])
                except (EOFError, BrokenPipeError, json.JSONDecodeError):
                    for answer in _failed_answers(task, answered, "the worker process died"):
                        answers.put((task, answer))
                    proc.kill()
                    proc.wait()
                    self._procs[slot] = None
        finally:
            answers.put(None)

    def close(self) -> None:
        """End the worker processes."""
        for proc in self._procs:
            if proc is not None:
                if proc.stdin is not None:
                    proc.stdin.close()
                proc.wait()
        self._procs = [None] * self.workers


class DaskPool:
    """Tasks on an existing Dask distributed cluster (`pip install 'emu[dask]'`)."""

    fresh_per_task = True

    def __init__(self, address: str) -> None:
        """Connect to the scheduler at `address`; EmuError if that fails."""
        try:
            from distributed import Client
        except ImportError:
            raise EmuError("--dask needs the distributed package: pip install 'emu[dask]'") \
                from None
        try:
            self.client = Client(address, timeout=30)
        except (OSError, TimeoutError) as exc:
            raise EmuError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        self.workers = max(1, sum(w.get("nthreads", 1) for w in
                                  self.client.scheduler_info()["workers"].values()))

    def run(self, tasks: list[dict[str, Any]]) -> Iterator[Answer]:
        """Submit every task; answers task by task as they finish."""
        from distributed import as_completed

        futures = {self.client.submit(run_task_in_subprocess, task, pure=False): task
                   for task in tasks}
        for future in as_completed(futures):
            task = futures[future]
            try:
                answers = future.result()
            except Exception as exc:        # the task failed on the cluster
                answers = _failed_answers(task, set(), f"the Dask task failed: {exc}")
            answered = {a["key"] for a in answers if a["type"] == "result"}
            if task["type"] == "group":
                answers += _failed_answers(task, answered, "the worker process died")
            elif not answers:
                answers = _failed_answers(task, set(), "the worker process died")
            for answer in answers:
                yield task, answer

    def close(self) -> None:
        """Disconnect."""
        self.client.close()
