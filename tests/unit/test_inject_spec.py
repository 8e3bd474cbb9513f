"""Fault specifications and triggers (no Unicorn): parsing, canonical text, checks, and the
occurrence each trigger fires at."""
from __future__ import annotations

import pytest

from emu.errors import EmuError
from emu.inject.plan import Plan
from emu.inject.spec import FOREVER, FaultKind, FaultSpec, Stream
from emu.inject.trigger import Occurrence, Trigger, draw


@pytest.mark.parametrize("text", [
    "frame-alloc@nth=100", "read-error@nth=1:file=/data.bin",
    "write-error@nth=1:file=/data.bin", "bitflip@cycle=5000000:reg=x0,bit=3",
    "bitflip@pc=0x4019b0:vaddr=0x4a82e0,bit=0", "skip@pc=0x401136:count=1",
    "mm-delay@nth=1:cycles=2000000", "pulse-loss@nth=2:timeout=100",
    "latency@p=0.25:dir=read,cycles=10", "hog@cycle=10:prio=20,duration=inf",
    "set1@pc=main:vaddr=data+8,bit=1,duration=1000",
    "frame-alloc@nth=2:cause=cow,addr=0x1000-0x2000",
])
def test_the_canonical_text_parses_back_to_the_same_spec(text: str) -> None:
    spec = FaultSpec.parse(text)
    assert FaultSpec.parse(spec.text()) == spec
    assert FaultSpec.from_mapping(spec.kind.value, spec.to_mapping()) == spec


def test_the_shorthand_and_a_plan_table_mean_the_same(tmp_path) -> None:  # type: ignore[no-untyped-def]
    plan = tmp_path / "p.toml"
    plan.write_text('[[fault]]\nkind = "bitflip"\ncycle = 5000000\nreg = "X0"\nbit = 3\n'
                    '[[fault]]\nkind = "hog"\ncycle = 1\nduration = "inf"\n')
    assert Plan.load(str(plan)).faults == (FaultSpec.parse("bitflip@cycle=5000000:reg=x0,bit=3"),
                                           FaultSpec.parse("hog@cycle=1:duration=inf"))
    assert Plan.load(str(plan)).faults[1].duration == FOREVER


def test_keys_and_values_are_read_as_written() -> None:
    spec = FaultSpec.parse("bitflip@pc=check+0x10:vaddr=0x1_000,mask=0xF0,width=2")
    assert (spec.pc, spec.vaddr, spec.mask, spec.width) == ("check+0x10", 0x1000, 0xF0, 2)
    assert spec.bits == 0xF0 and spec.memory_width == 2
    assert FaultSpec.parse("set0@cycle=1:vaddr=buf,bit=9").memory_width == 2
    assert FaultSpec.parse("overwrite@cycle=1:paddr=8,value=1").memory_width == 8
    assert FaultSpec.parse("bitflip@cycle=1:pte=0x400000,bit=1").memory_width == 8


@pytest.mark.parametrize("text,stream", [
    ("frame-alloc", Stream.FRAME_DEMAND), ("mm-delay:cycles=1", Stream.SERVED_FAULT),
    ("pulse-loss", Stream.PULSE), ("read-error", Stream.STORE_READ),
    ("write-error", Stream.STORE_WRITE), ("latency:cycles=1", Stream.TRANSFER),
    ("skip@pc=1", Stream.PC), ("hog@syscall=write", Stream.SYSCALL),
    ("bitflip@fault=cow:reg=x0,bit=0", Stream.FAULT_END), ("hog@cycle=5", Stream.CLOCK),
])
def test_each_fault_watches_its_stream(text: str, stream: Stream) -> None:
    assert FaultSpec.parse(text).stream is stream


@pytest.mark.parametrize("text,message", [
    ("nope", "unknown fault kind 'nope'"), ("frame-alloc@", "nothing after '@'"),
    ("frame-alloc@nth", "expected key=value"), ("frame-alloc:color=red", "unknown key 'color'"),
    ("frame-alloc@nth=1,cycle=5", "give one of nth=, cycle=, p="),
    ("frame-alloc@p=1.5", "p must be in (0, 1]"),
    ("frame-alloc:cause=zero_fill", "cause is one of"),
    ("mm-delay:cycles=0", "needs cycles=N"), ("latency:cycles=5,errno=5", "does not take errno"),
    ("skip@pc=1,syscall=write", "give one of pc=, syscall=, fault="),
    ("skip@nth=3", "nth= and p= count pc=, syscall= or fault= occurrences"),
    ("skip@pc=1:count=65", "skip count is 1-64"), ("hog@cycle=1:prio=0", "hog prio is 1-255"),
    ("overwrite@cycle=1:reg=x0", "overwrite needs value="),
    ("overwrite@cycle=1:reg=x0,value=1,bit=2", "takes value=, not bit="),
    ("bitflip@cycle=1:reg=x0,bit=1,mask=2", "needs bit=N or mask=M (one of them)"),
    ("bitflip@cycle=1:reg=x0,vaddr=1,bit=1", "exactly one target"),
    ("bitflip@cycle=1:vaddr=1,bit=1,width=3", "width is 1, 2, 4 or 8"),
    ("bitflip@cycle=1:reg=x0,bit=1,width=4", "width= is for memory targets"),
    ("bitflip@cycle=1:vaddr=1,bit=1,tid=3", "tid= is for register targets"),
    ("frame-alloc:addr=5-5", "addr=LO-HI needs LO < HI"), ("frame-alloc:addr=5", "expected LO-HI"),
    ("read-error:file=x", "a guest path starts with /"),
    ("bitflip@fault=nope:reg=x0,bit=1", "fault= is a fault cause"),
    ("latency:cycles=1,dir=up", "dir is read or write"),
])
def test_bad_specs_say_what_is_wrong_in_one_line(text: str, message: str) -> None:
    with pytest.raises(EmuError) as err:
        FaultSpec.parse(text)
    assert message in str(err.value) and "\n" not in str(err.value)


def _occurrences(cycles: list[int]) -> list[Occurrence]:
    return [Occurrence(i + 1, c, c, i) for i, c in enumerate(cycles)]


def test_nth_and_cycle_triggers_fire_once_and_a_duration_keeps_hitting() -> None:
    nth = Trigger(FaultSpec.parse("frame-alloc@nth=3"))
    assert [nth.offer(c) for c in (10, 20, 30, 40)] == [False, False, True, False]
    assert nth.fired_at == 30 and nth.seen == 4
    cycle = Trigger(FaultSpec.parse("frame-alloc@cycle=25"))
    assert [cycle.offer(c) for c in (10, 20, 30, 40)] == [False, False, True, False]
    lasting = Trigger(FaultSpec.parse("frame-alloc@nth=2:duration=15"))
    assert [lasting.offer(c) for c in (10, 20, 30, 35, 40)] == [False, True, True, False, False]


def test_a_trigger_resumed_part_way_decides_as_the_whole_run_does() -> None:
    spec = FaultSpec.parse("read-error@p=0.3")
    whole = Trigger(spec, seed=4)
    decisions = [whole.offer(c) for c in range(100)]
    first = decisions.index(True)
    resumed = Trigger(spec, seed=4, seen=first)
    assert resumed.offer(first) and resumed.fired_at == whole.fired_at


def test_draws_depend_only_on_seed_fault_and_occurrence() -> None:
    assert draw(1, "x", 5) == draw(1, "x", 5)
    assert len({draw(1, "x", n) for n in range(50)}) == 50
    assert draw(1, "x", 5) != draw(2, "x", 5) and draw(1, "x", 5) != draw(1, "y", 5)
    hits = sum(draw(9, "f", n) < 0.25 for n in range(4000))
    assert 850 < hits < 1150


def test_filters_keep_only_matching_occurrences() -> None:
    trigger = Trigger(FaultSpec.parse("frame-alloc@nth=1:cause=cow,addr=0x1000-0x2000"))
    assert not trigger.keeps(cause="lazy_alloc", addr=0x1000)
    assert not trigger.keeps(cause="cow", addr=0x2000)
    assert trigger.keeps(cause="cow", addr=0x1FFF)
    assert Trigger(FaultSpec.parse("latency:cycles=1,dir=write")).keeps(write=True)
    assert not Trigger(FaultSpec.parse("latency:cycles=1,dir=write")).keeps(write=False)
    assert not Trigger(FaultSpec.parse("read-error:file=/a")).keeps(file="/b")


def test_the_firing_occurrence_of_a_golden_record() -> None:
    occurrences = _occurrences([100, 200, 300, 400])
    assert Trigger(FaultSpec.parse("frame-alloc@nth=2")).firing_occurrence(occurrences) \
        == occurrences[1]
    assert Trigger(FaultSpec.parse("frame-alloc@cycle=250")).firing_occurrence(occurrences) \
        == occurrences[2]
    assert Trigger(FaultSpec.parse("frame-alloc@nth=9")).firing_occurrence(occurrences) is None


def test_recording_counts_without_firing_and_notes_each_step() -> None:
    trigger = Trigger(FaultSpec.parse("frame-alloc@nth=1"), record=[])
    assert not trigger.offer(10, (1, 5)) and not trigger.offer(12, (1, 5))
    assert not trigger.offer(40, (2, 30))
    assert trigger.record == [Occurrence(1, 10, 5, 0), Occurrence(2, 12, 5, 0),
                              Occurrence(3, 40, 30, 2)]
    assert trigger.fired_at is None


def test_kinds_name_their_family() -> None:
    assert {k.family for k in FaultKind} == {"mm", "store", "cpu", "sched"}
