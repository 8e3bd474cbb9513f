"""parse_size: the --ram style size strings."""
from __future__ import annotations

import pytest

from emu.config import DEFAULT_RAM, RunConfig, parse_size
from emu.errors import EmuError


@pytest.mark.parametrize("text, value", [
    ("4096", 4096),
    ("0", 0),
    ("64k", 64 << 10),
    ("64K", 64 << 10),
    ("256M", 256 << 20),
    ("256m", 256 << 20),
    ("1G", 1 << 30),
    ("2g", 2 << 30),
    ("16MB", 16 << 20),
    ("16MiB", 16 << 20),
    ("1GiB", 1 << 30),
    ("512kb", 512 << 10),
    (" 8M ", 8 << 20),
    ("8 M", 8 << 20),
])
def test_valid_sizes(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", " ", "M", "1.5G", "-1", "+4", "12T", "1e6", "0x1000",
                                  "4 096", "256MM", "ten", "1G1", "256 Mbytes"])
def test_bad_sizes_raise_emu_error(text):
    with pytest.raises(EmuError, match="bad size"):
        parse_size(text)


def test_error_names_the_input():
    with pytest.raises(EmuError) as info:
        parse_size("lots")
    assert "'lots'" in str(info.value)


def test_run_config_defaults():
    config = RunConfig(program="/bin/true")
    assert config.ram_bytes == DEFAULT_RAM == parse_size("256M")
    assert (config.arch, config.args, config.env, config.max_instructions) == ("auto", (), (), 0)
    with pytest.raises(AttributeError):
        config.arch = "x86_64"           # frozen
