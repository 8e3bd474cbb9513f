"""`emu compare` and the paging policies a user can vary: the prefault heuristic, procnto's
service priority, and the page tables' accessed bits behind the prefault's bookkeeping."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_emu


def emu(*args: str, cwd: str = "/") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emu", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_compare_runs_each_policy_as_a_run_alone_would(firmware, arch, tmp_path):
    prog = firmware / arch / "page_touch"
    out = emu("compare", "--policy", "demand=", "--policy", "superlocked=-mL",
              "--policy", "prefault=--prefault anon=7", "--csv", str(tmp_path / "t.csv"),
              "--json", str(tmp_path / "t.json"), "--plot", str(tmp_path / "t.png"),
              str(prog), "512", "2")
    assert out.returncode == 0, out.stderr
    assert "demand" in out.stdout and "superlocked" in out.stdout and "pages=" not in out.stdout
    rows = {r["policy"]: r for r in csv.DictReader(open(tmp_path / "t.csv"))}
    assert set(rows) == {"demand", "superlocked", "prefault"}
    assert int(rows["superlocked"]["faults"]) == 0 < int(rows["prefault"]["faults"]) \
        < int(rows["demand"]["faults"])
    reports = {d["policy"]: d["report"] for d in json.load(open(tmp_path / "t.json"))}
    for name, flags in (("demand", []), ("superlocked", ["-mL"])):
        # alone, with the guest's output where compare puts it, a file (a guest's stdio is
        # part of its input: glibc buffers a file, a pipe and a terminal differently)
        stats = tmp_path / f"{name}.json"
        with open(tmp_path / f"{name}.out", "w") as out:
            alone = subprocess.run([sys.executable, "-m", "emu", "run", "--stats", str(stats),
                                    *flags, str(prog), "512", "2"], cwd="/", timeout=300,
                                   stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.DEVNULL)
        assert alone.returncode == 0
        report = json.loads(stats.read_text())
        for key in ("cycles", "instructions", "faults", "tlb"):
            assert reports[name][key] == report[key], (name, key)
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, message", [
    (["--policy", "nonsense"], "NAME=OPTIONS"),
    (["--policy", "x=--no-such-option"], "policy x:"),
    (["--policy", "a=", "--policy", "a=-ml"], "must differ"),
    (["--plot", "/tmp/x.txt"], ".png or .svg"),
])
def test_compare_bad_input_is_one_line(firmware, args, message):
    out = emu("compare", *args, str(firmware / "x86_64" / "hello"))
    assert out.returncode == 125 and message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_prefault_trades_faults_for_pages_never_used(firmware, arch, tmp_path):
    sweep = firmware / arch / "sweep"
    every_4th = ("8", str(4 * 4096), "1")            # touch one page in four
    # small pages only: a large page has one accessed bit for all of its pages
    base = run_emu("-m~v", sweep, *every_4th, stats_path=tmp_path / "a.json", cwd=Path("/"))
    pre = run_emu("-m~v", "--prefault", "anon=7", sweep, *every_4th,
                  stats_path=tmp_path / "b.json", cwd=Path("/"))
    assert base.returncode == pre.returncode == 0 and base.stdout == pre.stdout
    zero = lambda r: r.stats["faults"]["by_cause"]["zero_fill"]      # noqa: E731
    assert zero(base) >= 512                                         # 8 MiB / 16 KiB
    assert zero(pre) <= zero(base) / 2 + 20          # the touch 4 pages on was set up already
    mm = pre.stats["mm"]
    assert mm["prefaulted_pages"] >= 7 * 250
    # of each 7 pages set up, the touch 4 pages on used one: the accessed bits say so
    assert abs(mm["prefaulted_unused"] - 6 / 7 * mm["prefaulted_pages"]) < 0.05 * mm["prefaulted_pages"]
    assert base.stats["mm"]["prefaulted_pages"] == base.stats["mm"]["prefaulted_unused"] == 0


def test_prefault_of_pages_that_are_all_used_leaves_none_unused(firmware, arch, tmp_path):
    run = run_emu("-m~v", "--prefault", "anon=15", firmware / arch / "sweep", "4", "4096", "2",
                  stats_path=tmp_path / "s.json", cwd=Path("/"))
    assert run.returncode == 0
    mm = run.stats["mm"]
    assert mm["prefaulted_pages"] > 900 and mm["prefaulted_unused"] < 20


def test_a_fixed_high_procnto_priority_halves_the_same_priority_penalty(firmware, arch, tmp_path):
    """The seed's effect: with two spinners at the toucher's priority a fault waits four
    time slices when procnto inherits the pulse's priority (two for procnto to get the CPU,
    two for the toucher made READY at the end of its queue). Served at a fixed priority
    above them, procnto runs at once, but the toucher still rejoins the end of its queue:
    two slices."""
    prog = firmware / arch / "fault_latency"
    args = (prog, "2", "4", "10", "10")
    inherit = run_emu(*args, stats_path=tmp_path / "i.json", cwd=Path("/"))
    fixed = run_emu("--mm-priority", "50", *args, stats_path=tmp_path / "f.json", cwd=Path("/"))
    assert inherit.returncode == fixed.returncode == 0
    touch_ns = lambda r: int(re.search(r"touch_ns mean=(\d+)", r.stdout).group(1))  # noqa: E731
    slice_ns = 4_000_000                              # the default profile's 4 ms
    assert 3.5 * slice_ns < touch_ns(inherit) < 4.5 * slice_ns
    assert 1.5 * slice_ns < touch_ns(fixed) < 2.5 * slice_ns


def test_bad_policy_options_of_emu_run(firmware):
    for args, message in ((["--prefault", "bogus=1"], "prefault"),
                          (["--mm-priority", "0"], "1-255"),
                          (["--tlb", "slow"], "invalid choice")):
        out = emu("run", *args, str(firmware / "x86_64" / "hello"))
        assert out.returncode == 125 and message in out.stderr, out.stderr


def test_a_device_driver_thread_stands_between_the_device_and_the_page_in(firmware, arch,
                                                                          tmp_path):
    prog = firmware / arch / "hello"
    plain = run_emu(prog, stats_path=tmp_path / "p.json", cwd=Path("/"))
    driven = run_emu("--device-driver", "50", prog, stats_path=tmp_path / "d.json", cwd=Path("/"))
    assert plain.returncode == driven.returncode == 0 and plain.stdout == driven.stdout
    page_ins = driven.stats["faults"]["by_cause"]["page_in"]
    assert page_ins == plain.stats["faults"]["by_cause"]["page_in"] > 10
    devb = next(t for t in driven.stats["threads"] if t["name"] == "devb")
    assert devb["priority"] == 50
    assert devb["cycles_by_state"]["RUNNING"] >= page_ins * 3000     # kernel.driver_interrupt
    p50 = lambda r: r.stats["fault_latency_cycles"]["p50"]          # noqa: E731
    assert p50(driven) >= p50(plain) + 3000
    assert not any(t["name"] == "devb" for t in plain.stats["threads"])
