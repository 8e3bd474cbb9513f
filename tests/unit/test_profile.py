"""Machine profiles: the bundled defaults, time conversions, and one-line errors for broken files."""
from __future__ import annotations

import re

import pytest

from emu.errors import EmuError
from emu.profile import DEFAULT_PROFILE, InstructionCosts, KernelCosts, load_profile

DEFAULT_TEXT = DEFAULT_PROFILE.read_text()


def write_profile(tmp_path, text: str):
    path = tmp_path / "machine.toml"
    path.write_text(text)
    return path


def edited(old: str, new: str) -> str:
    """The default profile with one line-anchored assignment replaced."""
    text, n = re.subn(rf"(?m)^{re.escape(old)}$", new, DEFAULT_TEXT)
    assert n == 1, f"{old!r} not found once in the default profile"
    return text


def without_section(name: str) -> str:
    """The default profile without the [name] table (header and its keys)."""
    text, n = re.subn(rf"(?ms)^\[{name}\]\n.*?(?=^\[|\Z)", "", DEFAULT_TEXT)
    assert n == 1
    return text


def load_error(tmp_path, text: str) -> str:
    with pytest.raises(EmuError) as info:
        load_profile(write_profile(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message, "EmuError messages are one line"
    return message


# ---- defaults ----

def test_default_profile_values():
    p = load_profile()
    assert p.frequency_hz == 1_000_000_000
    assert p.time_slice_ns == 4_000_000
    assert p.default_priority == 10
    assert p.instructions == InstructionCosts(alu=1, mul=3, div=20, memory=2, branch=1,
                                              call_return=2, fp_simd=2)
    assert p.tlb_fill + sum(p.walk.level_cycles) == 30      # a 4 KiB refill, all levels
    assert p.kernel == KernelCosts(syscall=150, fault_entry=400, pulse=300, context_switch=600,
                                   procnto_fault=2000, zero_page=1000, copy_page=1500,
                                   driver_interrupt=3000)
    assert (p.read_page_ns, p.write_page_ns) == (100_000, 200_000)


def test_explicit_path_to_the_default_gives_the_same_profile():
    assert load_profile(DEFAULT_PROFILE) == load_profile()
    assert load_profile(str(DEFAULT_PROFILE)) == load_profile()


def test_default_time_slice_is_four_ms_of_cycles():
    assert load_profile().time_slice == 4_000_000


def test_one_ghz_makes_cycles_and_nanoseconds_equal():
    p = load_profile()
    assert p.cycles(123_456) == 123_456 and p.nanoseconds(123_456) == 123_456


def test_conversions_at_another_frequency(tmp_path):
    p = load_profile(write_profile(tmp_path, edited("frequency_hz = 1_000_000_000",
                                                    "frequency_hz = 2_500_000_000")))
    assert p.cycles(4) == 10
    assert p.nanoseconds(10) == 4
    assert p.time_slice == 10_000_000
    assert p.nanoseconds(p.cycles(1_000_000)) == 1_000_000


def test_conversions_round_down(tmp_path):
    p = load_profile(write_profile(tmp_path, edited("frequency_hz = 1_000_000_000",
                                                    "frequency_hz = 3_000_000_000")))
    assert p.nanoseconds(2) == 0            # 0.67 ns
    assert p.cycles(1) == 3


def test_a_changed_value_is_taken(tmp_path):
    p = load_profile(write_profile(tmp_path, edited("div = 20", "div = 35")))
    assert p.instructions.div == 35


# ---- broken files ----

def test_missing_file(tmp_path):
    with pytest.raises(EmuError) as info:
        load_profile(tmp_path / "nope.toml")
    message = str(info.value)
    assert "nope.toml" in message and "no profile" in message and "\n" not in message


def test_bad_toml(tmp_path):
    message = load_error(tmp_path, DEFAULT_TEXT + "\nthis is = = not toml\n")
    assert "machine.toml" in message and "line" in message


@pytest.mark.parametrize("section", ["instructions", "kernel"])
def test_missing_cost_section(tmp_path, section):
    message = load_error(tmp_path, without_section(section))
    assert f"{section}." in message and "missing" in message


@pytest.mark.parametrize("section, key", [("machine", "frequency_hz"), ("tlb", "fill"),
                                          ("backing_store", "read_page_ns")])
def test_missing_scalar_section_names_what_is_missing(tmp_path, section, key):
    message = load_error(tmp_path, without_section(section))
    assert "missing" in message and (section in message or key in message)


def test_missing_scalar_key_names_it(tmp_path):
    message = load_error(tmp_path, edited("write_page_ns = 200_000", ""))
    assert "missing" in message and "write_page_ns" in message


def test_missing_key_in_a_cost_section(tmp_path):
    message = load_error(tmp_path, edited("mul = 3", ""))
    assert "instructions.mul" in message


@pytest.mark.parametrize("old, new, words", [
    ("mul = 3", "mul = -3", ("instructions.mul", "integer >= 0")),
    ("pulse = 300", "pulse = -1", ("kernel.pulse", "integer >= 0")),
    ("alu = 1", 'alu = "one"', ("instructions.alu",)),
])
def test_bad_cost_value(tmp_path, old, new, words):
    message = load_error(tmp_path, edited(old, new))
    for word in words:
        assert word in message


@pytest.mark.parametrize("old, new", [
    ("frequency_hz = 1_000_000_000", "frequency_hz = 0"),
    ("time_slice_ns = 4_000_000", "time_slice_ns = -4"),
    ("default_priority = 10", "default_priority = 256"),
    ("default_priority = 10", "default_priority = 0"),
])
def test_bad_machine_value(tmp_path, old, new):
    message = load_error(tmp_path, edited(old, new))
    assert new.split()[0] in message or "positive" in message


@pytest.mark.parametrize("old, new", [
    ("fill = 10", "fill = -10"),
    ("read_page_ns = 100_000", "read_page_ns = -1"),
    ("write_page_ns = 200_000", "write_page_ns = -200_000"),
])
def test_negative_tlb_or_backing_store_value_is_an_error(tmp_path, old, new):
    message = load_error(tmp_path, edited(old, new))
    assert new.split()[0] in message


def test_binary_file_is_an_error(tmp_path):
    path = tmp_path / "machine.toml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(EmuError):
        load_profile(path)
