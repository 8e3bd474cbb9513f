"""`emu campaign`: golden runs first, experiments as rows of a SQLite database, local
worker processes or a real Dask LocalCluster, fast-forward by forking, and resuming after
a SIGKILL with no lost or repeated row. The example campaigns of examples/ run too.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

EXAMPLES = REPO / "examples"


def emu_campaign(*args: object, cwd: Path | None = None, timeout: float = 600
                 ) -> subprocess.CompletedProcess[str]:
    """`python -m emu campaign ARGS` in a process of its own (it starts worker processes)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "emu", "campaign", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def results(db: Path) -> dict[str, tuple[object, ...]]:
    """key -> (outcome, exit, signal, reason, cycles, instructions, fired, record)."""
    with sqlite3.connect(db) as conn:
        return {row[0]: row[1:] for row in conn.execute(
            "SELECT key, outcome, exit_code, signal, reason, cycles, instructions, fired, "
            "json_extract(record, '$.stdout') || json_extract(record, '$.stderr') "
            "|| json_extract(record, '$.files') "
            "FROM result")}


def small_campaign(tmp_path: Path, firmware: Path, name: str = "c.toml") -> Path:
    """Bit flips in the checksum loop, latency spikes at random page-ins (p=, drawn with the
    runs' --seed 5), and skips in the password check, both arches."""
    path = tmp_path / name
    programs = "".join(
        f'[[program]]\nname = "{prog}-{arch}"\npath = "{firmware}/{arch}/{prog}"\n'
        f'args = ["{arg}"]\noptions = "{options}"\n\n'
        for arch in ("x86_64", "aarch64") for prog, arg, options in (
            ("checksum", "20", "--seed 5"), ("password", "guess", "")))
    path.write_text(
        '[campaign]\nseed = 3\n\n' + programs +
        '[[sweep]]\nname = "flips"\nkind = "bitflip"\n'
        'programs = ["checksum-x86_64", "checksum-aarch64"]\n'
        'cycle = { samples = 12, from = 0, to = "golden" }\n'
        'reg = { x86_64 = ["rax", "rsi", "rsp"], aarch64 = ["x0", "x1", "sp"] }\n'
        'bit = [0, 7, 40]\nsamples = 14\n\n'
        '[[sweep]]\nname = "data flips"\nkind = "bitflip"\n'
        'programs = ["checksum-x86_64", "checksum-aarch64"]\n'
        'pc = "sum_by_index"\nnth = { from = 1, to = "golden", step = 4 }\n'
        'vaddr = "data+24"\nbit = 2\n\n'
        '[[sweep]]\nname = "slow reads"\nkind = "latency"\ncycles = 3000000\n'
        'programs = ["checksum-x86_64", "checksum-aarch64"]\np = [0.05, 0.2, 0.5]\n\n'
        '[[sweep]]\nname = "glitch"\nkind = "skip"\n'
        'programs = ["password-x86_64", "password-aarch64"]\n'
        'pc = { symbol = "check_password" }\n')
    return path


def test_a_campaign_runs_golden_runs_first_and_classifies_every_experiment(
        firmware: Path, tmp_path: Path) -> None:
    campaign = small_campaign(tmp_path, firmware)
    done = emu_campaign("run", campaign, "--workers", "2")
    assert done.returncode == 0, done.stderr
    db = tmp_path / "c.db"                            # beside the campaign file
    status = json.loads(emu_campaign("status", "--db", db, "--json").stdout)
    assert status["total"] == status["done"] > 50 and status["left"] == 0
    assert len(status["golden"]) == 4
    assert {g["exit"] for g in status["golden"]} == {0, 1}     # password denies
    outcomes = status["outcomes"]
    assert sum(outcomes.values()) == status["total"]
    assert outcomes.get("detected", 0) > 0 and outcomes.get("benign", 0) > 0
    assert status["by_sweep"]["data flips"] == {"detected": 10}   # 5 per arch: caught
    glitch = status["by_sweep"]["glitch"]
    assert glitch.get("sdc", 0) >= 1                   # a skip granted access
    text = emu_campaign("status", "--db", db).stdout
    assert "outcomes by kind" in text and "bitflip" in text and "skip" in text
    report = emu_campaign("report", "--db", db, "-o", tmp_path / "report")
    assert report.returncode == 0, report.stderr
    md = (tmp_path / "report" / "REPORT.md").read_text()
    assert "| glitch | password-x86_64 | default |" in md and "## Golden runs" in md
    assert (tmp_path / "report" / "outcomes.png").stat().st_size > 10_000
    again = emu_campaign("run", campaign, "--workers", "2")     # nothing left to do
    assert again.returncode == 0 and "0 experiment(s) run now" in again.stdout


def test_outcomes_are_the_same_with_or_without_fast_forward_and_on_any_worker_count(
        firmware: Path, tmp_path: Path) -> None:
    campaign = small_campaign(tmp_path, firmware)
    runs = {}
    for name, args in (("ff2", ("--workers", "2")),
                       ("plain1", ("--workers", "1", "--no-fast-forward", "--group", "3"))):
        db = tmp_path / f"{name}.db"
        done = emu_campaign("run", campaign, "--db", db, *args)
        assert done.returncode == 0, done.stderr
        runs[name] = results(db)
    assert runs["ff2"] == runs["plain1"]
    with sqlite3.connect(tmp_path / "ff2.db") as conn:
        fast = conn.execute("SELECT count(*) FROM result WHERE fast_forward").fetchone()[0]
    assert fast > len(runs["ff2"]) // 2


def test_a_campaign_killed_at_any_moment_resumes_with_nothing_lost_or_repeated(
        firmware: Path, tmp_path: Path) -> None:
    campaign = small_campaign(tmp_path, firmware)
    db = tmp_path / "c.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "emu", "campaign", "run", str(campaign),
                             "--workers", "2", "--group", "2"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while True:
        assert time.monotonic() < deadline, "the campaign never got going"
        if db.exists():
            try:
                with sqlite3.connect(db) as conn:
                    if conn.execute("SELECT count(*) FROM result").fetchone()[0] >= 8:
                        break
            except sqlite3.OperationalError:
                pass                                # the tables are being created
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)             # the coordinator and its workers
    proc.wait()
    before = results(db)
    with sqlite3.connect(db) as conn:
        planned = conn.execute("SELECT count(*) FROM plan").fetchone()[0]
    assert 8 <= len(before) < planned
    done = emu_campaign("run", campaign, "--workers", "2")
    assert done.returncode == 0, done.stderr
    after = results(db)
    assert len(after) == planned
    assert all(after[key] == value for key, value in before.items())     # kept, not redone
    with sqlite3.connect(db) as conn:
        runs = dict(conn.execute("SELECT run, count(*) FROM result GROUP BY run").fetchall())
    assert runs == {1: len(before), 2: planned - len(before)}
    clean = tmp_path / "clean.db"
    assert emu_campaign("run", campaign, "--db", clean, "--workers", "2").returncode == 0
    assert results(clean) == after                  # the same outcomes as in one go


def test_a_campaign_runs_on_a_dask_local_cluster_with_the_same_outcomes(
        firmware: Path, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    campaign = small_campaign(tmp_path, firmware)
    local = tmp_path / "local.db"
    assert emu_campaign("run", campaign, "--db", local, "--workers", "2").returncode == 0
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        done = emu_campaign("run", campaign, "--db", tmp_path / "dask.db", "--dask",
                            cluster.scheduler_address)
    assert done.returncode == 0, done.stderr
    assert results(tmp_path / "dask.db") == results(local)


@pytest.mark.parametrize("example", ["lazy_sigbus", "msync_errors", "checksum_bitflips",
                                     "password_glitch"])
def test_the_example_campaigns_run(example: str, tmp_path: Path, firmware: Path) -> None:
    """Each example from a copy of examples/ (its database lands beside its file), with
    the same outcomes, cycles and outputs without fast-forward."""
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    (tmp_path / "firmware").symlink_to(firmware.parent)
    campaign = tmp_path / "examples" / example / "campaign.toml"
    done = emu_campaign("run", campaign, "--workers", "2")
    assert done.returncode == 0, done.stderr
    plain = emu_campaign("run", campaign, "--workers", "2", "--no-fast-forward", "--db",
                         tmp_path / "plain.db")
    assert plain.returncode == 0, plain.stderr
    assert results(tmp_path / "plain.db") == results(campaign.parent / "campaign.db")
    status = json.loads(emu_campaign("status", "--db", campaign.parent / "campaign.db",
                                     "--json").stdout)
    assert status["done"] == status["total"] > 20
    assert "emulator_error" not in status["outcomes"]
    expected = {"lazy_sigbus": {"detected", "crash"}, "msync_errors": {"sdc", "detected"},
                "checksum_bitflips": {"benign", "crash", "detected"},
                "password_glitch": {"sdc", "benign"}}[example]
    assert expected <= set(status["outcomes"])


def test_the_example_campaigns_run_on_a_dask_local_cluster(tmp_path: Path,
                                                           firmware: Path) -> None:
    distributed = pytest.importorskip("distributed")
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    (tmp_path / "firmware").symlink_to(firmware.parent)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        for example in ("lazy_sigbus", "msync_errors", "checksum_bitflips", "password_glitch"):
            campaign = tmp_path / "examples" / example / "campaign.toml"
            done = emu_campaign("run", campaign, "--dask", cluster.scheduler_address)
            assert done.returncode == 0, done.stderr
            status = json.loads(emu_campaign("status", "--db", campaign.parent / "campaign.db",
                                             "--json").stdout)
            assert status["done"] == status["total"] and "emulator_error" not in \
                status["outcomes"]


def test_bad_campaign_use_is_one_line(firmware: Path, tmp_path: Path) -> None:
    missing = emu_campaign("run", tmp_path / "missing.toml")
    assert missing.returncode == 125 and "cannot read campaign" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    nodb = emu_campaign("status", "--db", tmp_path / "none.db")
    assert nodb.returncode == 125 and "no campaign database" in nodb.stderr
    bad_options = tmp_path / "o.toml"
    bad_options.write_text(f'[[program]]\npath = "{firmware}/x86_64/hello"\noptions = "--bogus"\n'
                           '[[sweep]]\nkind = "latency"\ncycles = 1\n')
    run = emu_campaign("run", bad_options, "--workers", "1")
    assert run.returncode == 125 and "--bogus" in run.stderr and "Traceback" not in run.stderr
    dask = emu_campaign("run", small_campaign(tmp_path, firmware), "--dask",
                        "tcp://127.0.0.1:9")
    assert dask.returncode == 125 and "Dask scheduler" in dask.stderr
