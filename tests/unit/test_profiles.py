"""Machine profiles: the bundled ones load and cite a source for every number, `base`
inheritance, `--set` overrides, and one-line errors for bad ones."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from emu.errors import EmuError
from emu.profile import PROFILE_DIR, bundled_profiles, load_profile

NAMES = ["cortex-a53", "cortex-a72", "cortex-a76", "default", "skylake", "zen2"]
K, K64, M1, M2, G1 = 4096, 65536, 1 << 20, 2 << 20, 1 << 30


def test_every_bundled_profile_loads_and_is_named_after_its_file():
    profiles = bundled_profiles()
    assert [p.name for p in profiles] == NAMES
    assert {p.name: p.arch for p in profiles} == {
        "cortex-a53": "aarch64", "cortex-a72": "aarch64", "cortex-a76": "aarch64",
        "default": "any", "skylake": "x86_64", "zen2": "x86_64"}


@pytest.mark.parametrize("name, l1i, l1d, l2", [
    ("cortex-a53", [(10, 10)], [(10, 10)], [(512, 4)]),
    ("cortex-a72", [(48, 48)], [(32, 32)], [(1024, 4)]),
    ("cortex-a76", [(48, 48)], [(48, 48)], [(1280, 5)]),
    ("skylake", [(128, 8), (8, 8)], [(64, 4), (32, 4), (4, 4)], [(1536, 12), (16, 4)]),
    ("zen2", [(64, 64)], [(64, 64)], [(2048, 16)]),
])
def test_the_tlb_geometry_of_each_core(name, l1i, l1d, l2):
    tlb = load_profile(name).tlb
    for level, want in ((tlb.l1i, l1i), (tlb.l1d, l1d), (tlb.l2, l2)):
        assert [(a.entries, a.ways) for a in level.arrays] == want


def test_every_number_has_a_source_and_assumptions_say_so():
    for profile in bundled_profiles():
        for key in ("machine.frequency_hz", "tlb.l1d", "tlb.l2", "walk.level_cycles",
                    "walk.cache", "kernel.zero_page", "instructions.div"):
            assert profile.source(key), (profile.name, key)


def test_a_profile_without_a_source_is_refused(tmp_path):
    text = (PROFILE_DIR / "cortex-a53.toml").read_text().replace('"tlb.l2" =', '"x" =')
    (tmp_path / "p.toml").write_text(text.replace('base = "default"',
                                                  f'base = "{PROFILE_DIR / "default.toml"}"'))
    with pytest.raises(EmuError, match="tlb.l2.*no source"):
        load_profile(tmp_path / "p.toml")


def test_base_inheritance_overrides_only_the_keys_given(tmp_path):
    (tmp_path / "mine.toml").write_text(
        '[profile]\nname = "mine"\narch = "aarch64"\nsummary = "a72 with a bigger L2"\n'
        'base = "cortex-a72"\n[tlb.l2]\narrays = [{entries = 2048, ways = 8, '
        'page_sizes = ["4K", "2M"]}]\n[sources]\n"tlb.l2" = "assumption: what if"\n')
    mine, a72 = load_profile(tmp_path / "mine.toml"), load_profile("cortex-a72")
    assert mine.tlb.l2.arrays[0].entries == 2048 and mine.tlb.l2.arrays[0].page_sizes == (K, M2)
    assert mine.tlb.l2.hit_cycles == a72.tlb.l2.hit_cycles and mine.tlb.l1d == a72.tlb.l1d
    assert mine.frequency_hz == a72.frequency_hz and mine.source("tlb.l2") == "assumption: what if"


def test_a_base_cycle_is_an_error(tmp_path):
    for a, b in (("a", "b"), ("b", "a")):
        (tmp_path / f"{a}.toml").write_text(f'[profile]\nbase = "{b}"\n')
    with pytest.raises(EmuError, match="loops"):
        load_profile(tmp_path / "a.toml")


def test_set_overrides_any_key_and_refuses_unknown_ones():
    p = load_profile("skylake", ["tlb.l2.hit_cycles=20", "walk.level_cycles=[9, 9, 9, 9]"])
    assert p.tlb.l2.hit_cycles == 20 and p.walk.level_cycles == (9, 9, 9, 9)
    assert p.source("tlb.l2.hit_cycles") == "set on the command line"
    for bad, message in (("tlb.l9.hit_cycles=1", "no such key"), ("nonsense", "KEY=VALUE"),
                         ("machine.frequency_hz=fast", "frequency_hz"),
                         ("tlb.l1d.arrays=[{entries = 12, ways = 4, page_sizes = [\"4K\"]}]",
                          "power-of-two")):
        with pytest.raises(EmuError, match=message):
            load_profile("skylake", [bad])


def test_the_default_profile_keeps_the_costs_the_runs_were_measured_with():
    p = load_profile()
    assert p.tlb_fill + sum(p.walk.level_cycles) == 30          # a 4 KiB walk, as before
    assert (p.frequency_hz, p.time_slice_ns, p.kernel.zero_page) == (10**9, 4_000_000, 1000)


def test_a_profile_for_another_arch_is_refused_by_name():
    with pytest.raises(EmuError, match="cortex-a72 is for aarch64"):
        load_profile("cortex-a72").check_arch("x86_64")
    load_profile("default").check_arch("x86_64")


def test_emu_profiles_lists_them_and_shows_one():
    out = subprocess.run([sys.executable, "-m", "emu", "profiles"], capture_output=True,
                         text=True, cwd="/")
    assert out.returncode == 0 and all(name in out.stdout for name in NAMES)
    show = subprocess.run([sys.executable, "-m", "emu", "profiles", "--show", "cortex-a76"],
                          capture_output=True, text=True, cwd="/")
    assert show.returncode == 0 and "1280" in show.stdout and "TRM" in show.stdout


def test_an_unknown_profile_is_one_line():
    hello = Path(__file__).resolve().parents[2] / "firmware" / "build" / "x86_64" / "hello"
    out = subprocess.run([sys.executable, "-m", "emu", "run", "--profile", "nosuch", str(hello)],
                         capture_output=True, text=True, cwd="/")
    assert out.returncode == 125 and "no profile named 'nosuch'" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
