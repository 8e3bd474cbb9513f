"""What a run produced, and the class of a faulted run's outcome against its golden run.

The classes (SASSIFI's and FAIL*'s, plus what an operating system adds):

- `benign`: output, files and exit identical to the golden run's;
- `late`: identical, but more than `late` (a fraction) slower in simulated time: a
  deadline miss;
- `detected`: the program reported the error itself — a non-zero exit the golden run did
  not have, or a fault signal (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP) caught by a
  handler more often than in the golden run;
- `crash`: killed by a signal the golden run was not killed by (the signal is named);
- `hang`: the cycle limit was reached (by default 10 times the golden run's cycles);
- `deadlock`: every thread blocked with nothing left to wake one;
- `sdc`: silent data corruption — it ended as the golden run did (or with status 0) but
  its output or files differ;
- `not_fired`: the fault's trigger never happened (the run is the golden run);
- `emulator_error`: emu itself failed (an internal error, or the host's time limit).

The order above is the order of the checks: the first that applies is the class.
"""
from __future__ import annotations

import enum
import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

FAULT_SIGNALS = ("SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGTRAP")
PREVIEW = 240               # bytes of stdout and stderr kept in a record


class Outcome(str, enum.Enum):
    """The class of a faulted run's outcome."""

    BENIGN = "benign"
    LATE = "late"
    DETECTED = "detected"
    CRASH = "crash"
    HANG = "hang"
    DEADLOCK = "deadlock"
    SDC = "sdc"
    NOT_FIRED = "not_fired"
    EMULATOR_ERROR = "emulator_error"


OUTCOMES = tuple(o.value for o in Outcome)


def digest(data: bytes) -> str:
    """A short content digest (sha256, 16 hex digits)."""
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass(frozen=True)
class RunRecord:
    """What one run produced: how it ended, its clock, its output (digests and a preview)
    and what the injector did."""

    exit_code: int                  # as a shell reports it (128 + N when killed by N)
    signal: str | None              # the signal that killed it, by name
    reason: str                     # "exit", "signal", "deadlock", "cycle_limit", ...
    cycles: int
    instructions: int
    stdout: str                     # digest
    stderr: str                     # digest
    files: dict[str, str] = field(default_factory=dict)     # guest path -> digest or "missing"
    stdout_preview: str = ""
    stderr_preview: str = ""
    handled: dict[str, int] = field(default_factory=dict)   # fault signals caught by handlers
    fired: int = 0                  # hits of injected faults
    hits: tuple[str, ...] = ()      # the first hits, "cycle pid/tid pc: detail"
    faults: int = 0                 # deferred faults (for the report)
    error: str | None = None        # emu's own failure

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict (from_json's inverse)."""
        out = asdict(self)
        out["hits"] = list(self.hits)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        """A record from `to_json`'s dict."""
        return cls(**{**data, "hits": tuple(data.get("hits", ()))})

    @classmethod
    def failed(cls, error: str) -> RunRecord:
        """The record of a run emu could not finish."""
        return cls(exit_code=-1, signal=None, reason="error", cycles=0, instructions=0,
                   stdout="", stderr="", error=error)

    @property
    def same_output_as(self) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        """What output comparison looks at."""
        return self.stdout, self.stderr, tuple(sorted(self.files.items()))


def classify(golden: RunRecord, run: RunRecord, late: float = 0.10) -> tuple[Outcome, str]:
    """The class of `run` (a faulted run) against `golden`, and a short reason."""
    if run.error is not None:
        return Outcome.EMULATOR_ERROR, run.error
    if not run.fired:
        return Outcome.NOT_FIRED, "the trigger never happened"
    if run.reason == "cycle_limit":
        return Outcome.HANG, f"still running at {run.cycles:,} cycles"
    if run.reason == "deadlock":
        return Outcome.DEADLOCK, "every thread blocked"
    if run.signal is not None and run.signal != golden.signal:
        return Outcome.CRASH, run.signal
    extra = {name: n - golden.handled.get(name, 0) for name, n in run.handled.items()
             if n > golden.handled.get(name, 0)}
    if run.signal is None and run.exit_code not in (0, golden.exit_code):
        return Outcome.DETECTED, f"exit {run.exit_code}"
    if extra:
        return Outcome.DETECTED, "handled " + ", ".join(f"{k}" for k in sorted(extra))
    if run.same_output_as != golden.same_output_as or run.exit_code != golden.exit_code:
        differs = [name for name, a, b in (("stdout", run.stdout, golden.stdout),
                                           ("stderr", run.stderr, golden.stderr),
                                           ("files", run.files, golden.files),
                                           ("exit", run.exit_code, golden.exit_code)) if a != b]
        return Outcome.SDC, ", ".join(differs) + " differ"
    if run.cycles > golden.cycles * (1 + late):
        return Outcome.LATE, f"{run.cycles / max(golden.cycles, 1):.2f}x the golden run's time"
    return Outcome.BENIGN, ""


def record_of(report: dict[str, Any], stdout: bytes, stderr: bytes,
              files: dict[str, bytes | None]) -> RunRecord:
    """The record of a finished run from its --stats report and what it wrote."""
    exit_ = report["exit"]
    inject = report.get("inject", {})
    hits = tuple(f"{h['cycle']} {h['pid']}/{h['tid']} {h['pc']:#x} {h['kind']}: {h['detail']}"
                 for h in inject.get("hits", [])[:5])
    handled = {k: v for k, v in report["signals"].get("handled", {}).items()
               if k in FAULT_SIGNALS}
    return RunRecord(
        exit_code=exit_["code"], signal=exit_["signal"], reason=exit_.get("reason", "exit"),
        cycles=report["cycles"], instructions=report["instructions"],
        stdout=digest(stdout), stderr=digest(stderr),
        files={path: ("missing" if data is None else digest(data))
               for path, data in sorted(files.items())},
        stdout_preview=stdout[:PREVIEW].decode(errors="replace"),
        stderr_preview=stderr[:PREVIEW].decode(errors="replace"),
        handled=handled, fired=sum(inject.get("fired", {}).values()), hits=hits,
        faults=report["faults"]["total"])
