"""A campaign's results: one SQLite database (the embedded default, `campaign.db` beside
the campaign file).

Tables:
- `meta`: the campaign's file and name, and how many times it was started (`runs`);
- `golden`: one row per program and policy — the fault-free run's record and the
  occurrences of every trigger the campaign's faults count;
- `plan`: every experiment the campaign has (written before any runs, so that `status`
  knows the total), with its stable key;
- `result`: one row per finished experiment, written in its own transaction as soon as
  it is known, so that a campaign killed at any moment and started again redoes no
  finished experiment and loses none. `run` says which start wrote it.

Only the coordinator writes; workers, local or on a cluster, send their results to it.
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Iterator

from emu.campaign.outcome import RunRecord
from emu.errors import EmuError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS golden (
    key TEXT PRIMARY KEY, program TEXT NOT NULL, policy TEXT NOT NULL, arch TEXT NOT NULL,
    record TEXT NOT NULL, occurrences TEXT NOT NULL, trigger_keys TEXT NOT NULL,
    seconds REAL NOT NULL);
CREATE TABLE IF NOT EXISTS plan (
    key TEXT PRIMARY KEY, seq INTEGER NOT NULL, program TEXT NOT NULL, policy TEXT NOT NULL,
    sweep TEXT NOT NULL, kind TEXT NOT NULL, fault TEXT NOT NULL, fork_cycle INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS result (
    key TEXT PRIMARY KEY REFERENCES plan(key), outcome TEXT NOT NULL, why TEXT NOT NULL,
    exit_code INTEGER NOT NULL, signal TEXT, reason TEXT NOT NULL, cycles INTEGER NOT NULL,
    instructions INTEGER NOT NULL, fired INTEGER NOT NULL, record TEXT NOT NULL,
    seconds REAL NOT NULL, fast_forward INTEGER NOT NULL, worker TEXT NOT NULL,
    run INTEGER NOT NULL, finished_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS plan_seq ON plan(seq);
"""


@dataclass(frozen=True)
class PlannedExperiment:
    """A row of `plan`."""

    key: str
    seq: int
    program: str
    policy: str
    sweep: str
    kind: str
    fault: str
    fork_cycle: int


@dataclass(frozen=True)
class Result:
    """A finished experiment, as the coordinator stores it."""

    key: str
    outcome: str
    why: str
    record: RunRecord
    seconds: float
    fast_forward: bool
    worker: str


class CampaignDb:
    """The campaign database (created if missing)."""

    def __init__(self, path: str) -> None:
        """Open (or create) the database at `path`; EmuError if it cannot be."""
        try:
            self.conn = sqlite3.connect(path, timeout=30, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise EmuError(f"campaign database {path}: {exc}") from None
        self.path = path

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    # ---- meta ----

    def meta(self, key: str) -> str | None:
        """A meta value."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        """Set a meta value."""
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def start_run(self) -> int:
        """Count one more start of the campaign; its number."""
        with self.conn:
            runs = int(self.meta("runs") or "0") + 1
            self.set_meta("runs", str(runs))
        return runs

    # ---- golden runs ----

    def golden(self, key: str) -> tuple[RunRecord, list[list[list[int]]], list[str], float] | None:
        """A stored golden run: record, occurrences, the trigger keys recorded, seconds."""
        row = self.conn.execute("SELECT record, occurrences, trigger_keys, seconds FROM golden "
                                "WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return (RunRecord.from_json(json.loads(row[0])), json.loads(row[1]), json.loads(row[2]),
                row[3])

    def put_golden(self, key: str, program: str, policy: str, arch: str, record: RunRecord,
                   occurrences: list[list[list[int]]], trigger_keys: list[str],
                   seconds: float) -> None:
        """Store a golden run."""
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO golden VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                              (key, program, policy, arch, json.dumps(record.to_json()),
                               json.dumps(occurrences), json.dumps(trigger_keys), seconds))

    def goldens(self) -> list[tuple[str, str, RunRecord]]:
        """(program, policy, record) of every golden run."""
        return [(p, q, RunRecord.from_json(json.loads(r))) for p, q, r in self.conn.execute(
            "SELECT program, policy, record FROM golden ORDER BY program, policy")]

    # ---- the plan ----

    def put_plan(self, rows: list[PlannedExperiment]) -> None:
        """Add the experiments not yet planned (one transaction)."""
        with self.conn:
            self.conn.executemany(
                "INSERT OR IGNORE INTO plan VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.key, r.seq, r.program, r.policy, r.sweep, r.kind, r.fault, r.fork_cycle)
                 for r in rows])

    def done_keys(self) -> set[str]:
        """Keys of the experiments that have a result."""
        return {k for (k,) in self.conn.execute("SELECT key FROM result")}

    # ---- results ----

    def put_result(self, result: Result, run: int) -> bool:
        """Store one result in its own transaction; False if the experiment had one."""
        rec = result.record
        with self.conn:
            cur = self.conn.execute(
                "INSERT OR IGNORE INTO result VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (result.key, result.outcome, result.why, rec.exit_code, rec.signal, rec.reason,
                 rec.cycles, rec.instructions, rec.fired, json.dumps(rec.to_json()),
                 result.seconds, int(result.fast_forward), result.worker, run, time.time()))
        return cur.rowcount == 1

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every planned experiment joined with its result (outcome None if not done)."""
        cur = self.conn.execute(
            "SELECT p.key, p.seq, p.program, p.policy, p.sweep, p.kind, p.fault, p.fork_cycle,"
            " r.outcome, r.why, r.exit_code, r.signal, r.cycles, r.instructions, r.fired,"
            " r.seconds, r.fast_forward, r.run, r.record"
            " FROM plan p LEFT JOIN result r ON r.key = p.key ORDER BY p.seq")
        names = [d[0] for d in cur.description]
        for row in cur:
            yield dict(zip(names, row))
