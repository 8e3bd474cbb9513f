"""Hermetic runs: a result is a function of (program bytes, arguments, options) alone.

Neither the caller's environment, nor the working directory or the binary's host
path, nor Python's hash seed, nor whether faults are completed in place, changes a
single number of `--stats` or a single event.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_emu

ENV_SIZES = (0, 1000, 2500, 4000, 8192)      # bytes of extra guest environment


def _stats(run_dir: Path, program: Path, *flags: str, hash_seed: str, pad: int,
           caller_env: dict[str, str] | None = None) -> dict:  # type: ignore[type-arg]
    """--stats (without `host`) of `program`, copied into `run_dir`, run from there."""
    run_dir.mkdir(parents=True, exist_ok=True)
    exe = run_dir / program.name
    if not exe.exists():
        shutil.copy2(program, exe)
    extra = ["-E", "PAD=" + "x" * pad] if pad else []
    run = run_emu("--root", run_dir, *flags, *extra, exe, "200",
                  stats_path=run_dir / f"stats-{hash_seed}-{len(flags)}.json", cwd=run_dir,
                  env={"PYTHONHASHSEED": hash_seed, "NOISE": "y" * (pad + 17), **(caller_env or {})})
    assert run.returncode == 0, run.stderr
    assert run.stats is not None
    run.stats.pop("host")
    return run.stats


@pytest.mark.parametrize("pad", ENV_SIZES)
def test_same_stats_from_two_directories_any_hash_seed_in_place_or_not(
        firmware: Path, arch: str, tmp_path: Path, pad: int) -> None:
    program = firmware / arch / "page_touch"
    reference = _stats(tmp_path / "a", program, hash_seed="0", pad=pad)
    assert reference["faults"]["total"] > 200
    elsewhere = _stats(tmp_path / "deep" / "er" / "b", program, hash_seed="5", pad=pad,
                       caller_env={"HOME": "/nowhere", "EXTRA": "z" * 3000})
    stopping = _stats(tmp_path / "a", program, "--stop-on-every-fault", hash_seed="3", pad=pad)
    assert elsewhere == reference
    assert stopping == reference


def test_the_environment_size_really_changes_the_run(firmware: Path, tmp_path: Path) -> None:
    """The check above is not vacuous: the guest's environment is on its stack."""
    program = firmware / "x86_64" / "page_touch"
    small = _stats(tmp_path / "a", program, hash_seed="0", pad=0)
    large = _stats(tmp_path / "a", program, hash_seed="0", pad=8192)
    assert small["instructions"] != large["instructions"]


@pytest.mark.parametrize("hash_seed", ["0", "1", "77"])
def test_events_are_byte_identical_under_any_hash_seed(firmware: Path, arch: str, tmp_path: Path,
                                                       hash_seed: str) -> None:
    outputs = []
    for i in range(2):
        events = tmp_path / f"events{i}.jsonl"
        run = run_emu("--events", events, firmware / arch / "pthreads", "3", "200",
                      stats_path=tmp_path / f"s{i}.json",
                      env={"PYTHONHASHSEED": hash_seed if i == 0 else "0"})
        assert run.returncode == 0, run.stderr
        assert run.stats is not None
        run.stats.pop("host")
        outputs.append((json.dumps(run.stats, sort_keys=True), events.read_bytes()))
    assert outputs[0] == outputs[1]


def _randomness(firmware: Path, arch: str, root: Path, *flags: str) -> str:
    run = run_emu("--root", root, *flags, firmware / arch / "cpu_features")
    assert run.returncode == 0, run.stdout
    (line,) = [ln for ln in run.stdout.splitlines() if ln.startswith("at_random=")]
    return line


def test_randomness_comes_from_the_seed(firmware: Path, arch: str, tmp_path: Path) -> None:
    default = _randomness(firmware, arch, firmware)
    assert _randomness(firmware, arch, tmp_path) == default     # not from the program's path
    assert _randomness(firmware, arch, firmware, "--seed", "0") == default
    assert _randomness(firmware, arch, firmware, "--seed", "1") != default
