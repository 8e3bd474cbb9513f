"""The campaign coordinator: golden runs first, then every experiment not yet done.

1. Each program under each policy is a target; its golden run records the occurrences of
   every trigger the campaign's faults of that target count (stored, so a second start
   does not run it again).
2. Each sweep expands against its target's golden run (`emu.campaign.spec.expand`) into
   experiments with stable keys (a digest of the program's bytes, its arguments, options,
   root and files, and the fault's canonical text); all go into the `plan` table.
3. The experiments without a result are grouped by target, sorted by the cycle they can
   be forked at (the start of the kernel step of the golden run in which their trigger
   fires), and sent to the pool in small groups; each result is classified against its
   golden run and stored in its own transaction as it arrives.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from emu.campaign.db import CampaignDb, PlannedExperiment, Result
from emu.campaign.outcome import RunRecord, classify
from emu.campaign.pool import Pool
from emu.campaign.session import Target
from emu.campaign.spec import (Campaign, GoldenFacts, PolicySpec, ProgramSpec, SweepSpec, expand,
                               program_digest, tree_digest)
from emu.errors import EmuError
from emu.inject.spec import FaultKind, FaultSpec, Stream
from emu.inject.trigger import Occurrence, Trigger
from emu.loader.symbols import function_instruction_offsets

_STREAM_KEYS = ("pc", "syscall", "fault", "cause", "file", "addr", "dir")


@dataclass
class TargetPlan:
    """One program under one policy: its target, golden run and experiments."""

    program: ProgramSpec
    policy: PolicySpec
    target: Target
    key: str
    trigger_keys: list[FaultSpec] = field(default_factory=list)
    run_seed: int = 0                       # the runs' --seed (p= triggers draw with it)
    golden: RunRecord | None = None
    occurrences: list[list[Occurrence]] = field(default_factory=list)
    experiments: list[tuple[PlannedExperiment, int | None]] = field(default_factory=list)

    @property
    def label(self) -> str:
        """'program/policy'."""
        return f"{self.program.name}/{self.policy.name}"


@dataclass
class Summary:
    """What a campaign start did."""

    total: int
    done_before: int
    ran: int
    outcomes: Counter[str]
    seconds: float


def recording_key(spec: FaultSpec) -> FaultSpec | None:
    """What a golden run records for `spec`'s trigger: its stream and filters (None for a
    fault on the clock alone, which needs no record)."""
    if spec.stream is Stream.CLOCK:
        return None
    fields: dict[str, Any] = {k: getattr(spec, k) for k in _STREAM_KEYS
                              if getattr(spec, k) is not None}
    kind = spec.kind if spec.kind.family in ("mm", "store") else FaultKind.SKIP
    if kind in (FaultKind.MM_DELAY, FaultKind.LATENCY):
        fields["cycles"] = 1                    # required by the kind; not part of the stream
    return FaultSpec(kind, **fields)


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]


class Coordinator:
    """Runs one campaign against its database."""

    def __init__(self, campaign: Campaign, db: CampaignDb, pool: Pool,
                 progress: Callable[[int, int, str], None] | None = None,
                 echo: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> None:
        """A coordinator; `progress(done, total, what)` hears of every result."""
        self.campaign = campaign
        self.db = db
        self.pool = pool
        self.progress = progress or (lambda done, total, what: None)
        self.echo = echo
        self._stream_keys: dict[tuple[str, int], list[FaultSpec]] = {}
        self.targets = self._targets()

    def _targets(self) -> list[TargetPlan]:
        plans = []
        for program in self.campaign.programs:
            digest = program_digest(program.path)
            root = tree_digest(program.root)
            for policy in self.campaign.policies:
                target = Target(program.path, program.args, program.options + policy.options,
                                program.root, program.files)
                key = _digest({"program": digest, "args": target.args, "options": target.options,
                               "root": root, "files": target.files})
                plans.append(TargetPlan(program, policy, target, key,
                                        run_seed=target.config(program.root or ".").seed))
        return plans

    def _sweeps_of(self, plan: TargetPlan) -> list[SweepSpec]:
        return [s for s in self.campaign.sweeps
                if plan.program.name in s.programs and plan.policy.name in s.policies]

    # ---- golden runs ----

    def _sweep_keys(self, plan: TargetPlan, sweep: SweepSpec) -> list[FaultSpec]:
        """Every trigger stream a sweep can count on a target (the product of its stream
        keys' values, which never depend on the golden run); expanded once."""
        cached = self._stream_keys.get((plan.key, sweep.index))
        if cached is not None:
            return cached
        no_golden = GoldenFacts(cycles=0, occurrences=0, arch=plan.program.arch,
                                instructions_of=self._instructions_of(plan.program))
        keys = {k: v for k, v in sweep.keys.items() if k in _STREAM_KEYS}
        family = FaultKind(sweep.kind).family
        fillers = dict(_FILLERS.get(sweep.kind, {}))
        if family in ("cpu", "sched"):
            fillers["cycle"] = 0
        stream_only = replace(sweep, keys={**fillers, **keys}, samples=None)
        found: dict[str, FaultSpec] = {}
        for spec in expand(stream_only, no_golden, self.campaign.settings.seed, plan.label):
            key = recording_key(spec)
            if key is not None:
                found.setdefault(key.text(), key)
        keys = self._stream_keys[(plan.key, sweep.index)] = list(found.values())
        return keys

    def _trigger_keys(self, plan: TargetPlan) -> list[FaultSpec]:
        """Every trigger stream the target's sweeps can count."""
        keys: dict[str, FaultSpec] = {}
        for sweep in self._sweeps_of(plan):
            for key in self._sweep_keys(plan, sweep):
                keys.setdefault(key.text(), key)
        return list(keys.values())

    def goldens(self) -> None:
        """Every target's golden run: from the database, or run now."""
        todo = []
        for plan in self.targets:
            plan.trigger_keys = self._trigger_keys(plan)
            texts = [k.text() for k in plan.trigger_keys]
            stored = self.db.golden(plan.key)
            if stored is not None and stored[2] == texts and stored[0].error is None:
                plan.golden = stored[0]
                plan.occurrences = [[Occurrence(*o) for o in log] for log in stored[1]]
                continue
            todo.append({"type": "golden", "id": plan.key, "target": plan.target.to_json(),
                         "record": texts, "timeout": self.campaign.settings.timeout})
        if not todo:
            return
        self.echo(f"campaign: {len(todo)} golden run(s)")
        by_key = {plan.key: plan for plan in self.targets}
        for task, answer in self.pool.run(todo):
            plan = by_key[task["id"]]
            record = RunRecord.from_json(answer["record"])
            if record.error is not None:
                raise EmuError(f"the golden run of {plan.label} failed: {record.error}")
            plan.golden = record
            plan.occurrences = [[Occurrence(*o) for o in log] for log in answer["occurrences"]]
            self.db.put_golden(plan.key, plan.program.name, plan.policy.name, plan.program.arch,
                               record, answer["occurrences"], task["record"], answer["seconds"])

    # ---- the plan ----

    @staticmethod
    def _instructions_of(program: ProgramSpec) -> Callable[[str], list[str]]:
        """symbol -> every instruction of that function, as SYMBOL+OFFSET."""
        def instructions(name: str) -> list[str]:
            return [f"{name}+{offset:#x}" for offset in
                    function_instruction_offsets(program.path, name, program.arch)]
        return instructions

    def plan(self) -> int:
        """Expand every sweep against its golden run and store the plan; the experiment
        count."""
        rows: list[PlannedExperiment] = []
        seq = 0
        for plan in self.targets:
            assert plan.golden is not None
            index = {k.text(): i for i, k in enumerate(plan.trigger_keys)}
            plan.experiments = []
            for sweep in self._sweeps_of(plan):
                counts = self._occurrence_count(plan, sweep, index)
                facts = GoldenFacts(plan.golden.cycles, counts, plan.program.arch,
                                    self._instructions_of(plan.program))
                for spec in expand(sweep, facts, self.campaign.settings.seed, plan.label):
                    key_spec = recording_key(spec)
                    key_index = index[key_spec.text()] if key_spec is not None else None
                    fork = self._fork_cycle(plan, spec, key_index)
                    row = PlannedExperiment(
                        _digest({"target": plan.key, "fault": spec.text()}), seq,
                        plan.program.name, plan.policy.name, sweep.name, spec.kind.value,
                        spec.text(), fork)
                    seq += 1
                    rows.append(row)
                    plan.experiments.append((row, key_index))
        self.db.put_plan(rows)
        return len(rows)

    def _occurrence_count(self, plan: TargetPlan, sweep: SweepSpec,
                          index: dict[str, int]) -> int:
        """How often the golden run saw the sweep's trigger (the most of its streams)."""
        return max((len(plan.occurrences[index[key.text()]])
                    for key in self._sweep_keys(plan, sweep)), default=0)

    def _fork_cycle(self, plan: TargetPlan, spec: FaultSpec, key_index: int | None) -> int:
        """Where an experiment can start from a run already there: the trigger's cycle for
        a fault on the clock, else the start of the golden step where it fires (0: the
        start, when it never fires)."""
        if key_index is None:
            return spec.cycle or 0
        # p= draws use the run's own seed (emu run --seed), as the injector does
        hit = Trigger(spec, plan.run_seed).firing_occurrence(
            plan.occurrences[key_index])
        return hit.step_start if hit is not None else 0

    # ---- running ----

    def run(self, run_number: int, group_size: int = 0) -> Summary:
        """Run every planned experiment without a result; a summary."""
        import time

        started = time.perf_counter()
        done = self.db.done_keys()
        total = sum(len(p.experiments) for p in self.targets)
        pending = [(p, row, k) for p in self.targets for row, k in p.experiments
                   if row.key not in done]
        tasks = self._tasks(pending, group_size)
        outcomes: Counter[str] = Counter()
        finished = total - len(pending)
        self.progress(finished, total, "")
        settings = self.campaign.settings
        by_target = {p.key: p for p in self.targets}
        for task, answer in self.pool.run(tasks):
            plan = by_target[task["id"]]
            assert plan.golden is not None
            record = RunRecord.from_json(answer["record"])
            outcome, why = classify(plan.golden, record, settings.late)
            stored = self.db.put_result(Result(answer["key"], outcome.value, why, record,
                                               answer["seconds"], answer["fast_forward"],
                                               answer["worker"]), run_number)
            if stored:
                outcomes[outcome.value] += 1
                finished += 1
                self.progress(finished, total, outcome.value)
        return Summary(total, total - len(pending), sum(outcomes.values()), outcomes,
                       time.perf_counter() - started)

    def _tasks(self, pending: list[tuple[TargetPlan, PlannedExperiment, int | None]],
               group_size: int) -> list[dict[str, Any]]:
        settings = self.campaign.settings
        # local workers keep their session from group to group (the forward pass is
        # shared), so groups may be small: four per worker, for balance (sixteen without
        # fast-forward, which has no forward pass to share); a Dask task starts afresh, so
        # there a group is as large as an even share allows
        per_worker = 2 if self.pool.fresh_per_task else 4 if settings.fast_forward else 16
        size = group_size or settings.group or max(1, min(
            64, math.ceil(len(pending) / max(1, per_worker * self.pool.workers))))
        by_target: list[list[dict[str, Any]]] = []
        for plan in self.targets:
            mine = sorted(((row, k) for p, row, k in pending if p is plan),
                          key=lambda item: item[0].fork_cycle)
            assert plan.golden is not None
            limit = max(1, int(plan.golden.cycles * settings.hang))
            by_target.append([
                {"type": "group", "id": plan.key, "target": plan.target.to_json(),
                 "record": [k.text() for k in plan.trigger_keys],
                 "fast_forward": settings.fast_forward, "limit": limit,
                 "timeout": settings.timeout,
                 "experiments": [{"key": row.key, "fault": row.fault, "key_index": k,
                                  "fork_cycle": row.fork_cycle}
                                 for row, k in mine[i:i + size]]}
                for i in range(0, len(mine), size)])
        # each target's groups in the order of their fork points (a worker's session only
        # goes forward), targets interleaved so that every worker has work at once
        return [groups[rank] for rank in range(max(map(len, by_target), default=0))
                for groups in by_target if rank < len(groups)]


# keys a kind needs to be a valid spec, for expanding only a sweep's stream keys
_FILLERS: dict[str, dict[str, Any]] = {
    **{k: {"reg": "pc", "bit": 0} for k in ("bitflip", "set0", "set1")},
    "overwrite": {"reg": "pc", "value": 0},
    "mm-delay": {"cycles": 1}, "latency": {"cycles": 1},
}
