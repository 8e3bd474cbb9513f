"""The campaign's model (no Unicorn): outcome classes, sweep expansion, campaign files."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from emu.campaign.outcome import Outcome, RunRecord, classify
from emu.campaign.spec import Campaign, GoldenFacts, SweepSpec, expand
from emu.errors import EmuError

GOLDEN = RunRecord(exit_code=0, signal=None, reason="exit", cycles=1000, instructions=500,
                   stdout="aa", stderr="bb", files={"/f": "cc"}, fired=0)


def faulted(**changes: object) -> RunRecord:
    return replace(GOLDEN, fired=1, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("run,outcome", [
    (faulted(), Outcome.BENIGN),
    (faulted(cycles=1099), Outcome.BENIGN),
    (faulted(cycles=1101), Outcome.LATE),
    (faulted(exit_code=1), Outcome.DETECTED),
    (faulted(handled={"SIGBUS": 1}), Outcome.DETECTED),
    (faulted(exit_code=139, signal="SIGSEGV", reason="signal"), Outcome.CRASH),
    (faulted(exit_code=152, signal="SIGXCPU", reason="cycle_limit"), Outcome.HANG),
    (faulted(exit_code=137, signal="SIGKILL", reason="deadlock"), Outcome.DEADLOCK),
    (faulted(stdout="xx"), Outcome.SDC),
    (faulted(files={"/f": "missing"}), Outcome.SDC),
    (replace(GOLDEN, stdout="xx"), Outcome.NOT_FIRED),
    (RunRecord.failed("boom"), Outcome.EMULATOR_ERROR),
])
def test_outcome_classes(run: RunRecord, outcome: Outcome) -> None:
    assert classify(GOLDEN, run, late=0.10)[0] is outcome


def test_an_exit_status_the_golden_run_had_is_not_a_detection() -> None:
    denied = replace(GOLDEN, exit_code=1, stdout="denied")
    assert classify(denied, faulted(exit_code=1, stdout="denied"))[0] is Outcome.BENIGN
    granted = classify(denied, faulted(exit_code=0, stdout="granted"))
    assert granted == (Outcome.SDC, "stdout, exit differ")


def test_records_survive_json() -> None:
    record = faulted(hits=("1 2/2 0x10 bitflip: x",), handled={"SIGBUS": 2})
    assert RunRecord.from_json(record.to_json()) == record


def _facts(arch: str = "x86_64") -> GoldenFacts:
    return GoldenFacts(cycles=1000, occurrences=7, arch=arch,
                       instructions_of=lambda name: [f"{name}+{o:#x}" for o in (0, 4, 8)])


def _sweep(kind: str, samples: int | None = None, **keys: object) -> SweepSpec:
    return SweepSpec(1, "s", kind, dict(keys), ("p",), ("default",), samples)


def test_ranges_lists_and_arch_tables_make_a_product() -> None:
    faults = expand(_sweep("bitflip", cycle={"from": 0, "to": "golden", "step": 500},
                           reg={"x86_64": ["rax", "rbx"], "aarch64": ["x0"]}, bit=3),
                    _facts(), seed=1, label="p/default")
    assert [f.text() for f in faults] == [
        "bitflip@cycle=0:reg=rax,bit=3", "bitflip@cycle=0:reg=rbx,bit=3",
        "bitflip@cycle=500:reg=rax,bit=3", "bitflip@cycle=500:reg=rbx,bit=3",
        "bitflip@cycle=1000:reg=rax,bit=3", "bitflip@cycle=1000:reg=rbx,bit=3"]
    assert {f.reg for f in expand(_sweep("bitflip", cycle=1, reg={"x86_64": "rax",
                                                                   "aarch64": "x0"}, bit=1),
                                  _facts("aarch64"), 1, "p")} == {"x0"}


def test_golden_bounds_symbols_and_seeded_samples() -> None:
    nth = expand(_sweep("frame-alloc", nth={"from": 1, "to": "golden"}), _facts(), 1, "p")
    assert [f.nth for f in nth] == list(range(1, 8))
    pcs = expand(_sweep("skip", pc={"symbol": "check"}), _facts(), 1, "p")
    assert [f.pc for f in pcs] == ["check+0x0", "check+0x4", "check+0x8"]
    sweep = _sweep("bitflip", samples=10, cycle={"samples": 20, "from": 0, "to": "golden"},
                   reg=["rax", "rbx", "rcx"], bit={"from": 0, "to": 63})
    first, again = expand(sweep, _facts(), 5, "p"), expand(sweep, _facts(), 5, "p")
    assert first == again and len(first) == 10
    assert expand(sweep, _facts(), 6, "p") != first
    assert expand(sweep, _facts(), 5, "other target") != first


@pytest.mark.parametrize("keys,message", [
    ({"nth": {"from": 1, "to": "golden"}, "cause": "zero_fill"}, "cause is one of"),
    ({"nth": {"from": 1}}, "a range is {from, to[, step]}"),
    ({"nth": {"from": 1, "to": 5, "step": 0}}, "step is a positive number"),
    ({"cause": {"from": "golden", "to": 3}}, "\"golden\" is for cycle and nth"),
    ({"pc": {"symbol": "main", "each": "line"}}, "is for pc"),
])
def test_bad_sweeps_are_one_line_errors(keys: dict[str, object], message: str) -> None:
    with pytest.raises(EmuError) as err:
        expand(_sweep("frame-alloc", **keys), _facts(), 1, "p")
    assert message in str(err.value)


def test_a_campaign_file_is_checked(firmware: Path, tmp_path: Path) -> None:
    good = tmp_path / "c.toml"
    good.write_text(f'[[program]]\npath = "{firmware}/x86_64/hello"\n'
                    '[[sweep]]\nkind = "latency"\ncycles = 1\nnth = 1\n')
    campaign = Campaign.load(str(good))
    assert campaign.programs[0].name == "hello" and campaign.programs[0].arch == "x86_64"
    assert [p.name for p in campaign.policies] == ["default"]
    assert campaign.settings.name == "c" and campaign.settings.hang == 10
    for text, message in (
            ("[[program]]\npath = \"nope\"\n", "no such program"),
            (f'[[program]]\npath = "{firmware}/x86_64/hello"\n', "no [[sweep]]"),
            (f'[[program]]\npath = "{firmware}/x86_64/hello"\n[[sweep]]\nkind = "x"\n',
             "kind is one of"),
            (f'[[program]]\npath = "{firmware}/x86_64/hello"\n[[sweep]]\nkind = "skip"\n'
             'programs = ["other"]\n', "no program named 'other'"),
            ("[campaign]\nhang = 1\n", "hang > 1"), ("[[sweep\n", "campaign"),
            ("[whatever]\n", "unknown table(s) whatever")):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(EmuError) as err:
            Campaign.load(str(bad))
        assert message in str(err.value), text
