"""Firmware programs run under emu on both architectures: output, exit status and stats."""
from __future__ import annotations

from pathlib import Path

from tests.conftest import EmuRun

STATS_KEYS = ("arch", "exit", "instructions", "tlb", "faults", "mm")


def test_hello_argv_env_and_exit_code(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    prog = firmware / arch / "hello"
    run: EmuRun = emu("--root", firmware, "-E", "EMU_GREETING=hi there", prog, "42", "two words",
                      env={"EMU_GREETING": "from host"})
    assert run.returncode == 42
    assert run.stdout.splitlines() == [            # argv[0]: the program's path in the guest
        f"hello from {arch}", "argc=3", f"argv[0]=/{arch}/hello", "argv[1]=42",
        "argv[2]=two words", "EMU_GREETING=hi there"]
    assert run.stderr == ""
    assert run.stats is not None
    assert run.stats["arch"] == arch
    assert run.stats["exit"] == {"code": 42, "signal": None, "reason": "exit"}


def test_exit_code_keeps_low_byte(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    assert emu(firmware / arch / "hello", "300").returncode == 44


def test_the_guest_environment_is_empty_unless_asked(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    prog = firmware / arch / "hello"
    for flags in ([], ["--clean-env"]):
        assert "EMU_GREETING" not in emu(*flags, prog, env={"EMU_GREETING": "leak"}).stdout
    inherited = emu("--inherit-env", prog, env={"EMU_GREETING": "passed"})
    assert "EMU_GREETING=passed" in inherited.stdout.splitlines()


def test_a_program_outside_the_root_is_named_proc_self_exe(firmware: Path, arch: str, emu,
                                                           tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = emu("--root", tmp_path, firmware / arch / "hello")
    assert "argv[0]=/proc/self/exe" in run.stdout.splitlines()       # not its host path


def test_stats_report_has_the_documented_keys(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    stats = emu(firmware / arch / "hello").stats
    assert stats is not None
    for key in STATS_KEYS:
        assert key in stats
    assert stats["instructions"] > 1000
    assert stats["tlb"]["fills"] > 0
    assert stats["faults"]["total"] == sum(stats["faults"]["by_cause"].values())
    assert stats["mm"]["frames_total"] == (256 << 20) // 4096
    assert 0 < stats["mm"]["frames_peak"] < stats["mm"]["frames_total"]
    assert set(stats["host"]) == {"wall_seconds"}


def test_page_touch_takes_one_fault_per_fresh_page(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    prog = firmware / arch / "page_touch"
    base, touched = emu(prog, "0"), emu(prog, "300")
    assert touched.returncode == 0 and "pages=300 " in touched.stdout
    assert base.stats is not None and touched.stats is not None
    by0, by1 = base.stats["faults"]["by_cause"], touched.stats["faults"]["by_cause"]
    assert by1["zero_fill"] - by0["zero_fill"] == 300
    assert touched.stats["faults"]["total"] - base.stats["faults"]["total"] == 300
    assert touched.stats["mm"]["frames_peak"] >= 300 + 10     # the pages plus the program itself


def test_page_touch_stride_faults_only_touched_pages(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    prog = firmware / arch / "page_touch"
    base, strided = emu(prog, "0"), emu(prog, "256", "4")
    assert strided.returncode == 0
    assert base.stats is not None and strided.stats is not None
    # writes touch every 4th page; the read-back pass reads all 256, so every page faults once
    assert (strided.stats["faults"]["by_cause"]["zero_fill"]
            - base.stats["faults"]["by_cause"]["zero_fill"]) == 256


def test_mmap_exercise(firmware: Path, arch: str, emu, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = emu("--root", tmp_path, firmware / arch / "mmap_exercise", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "all ok"
    assert not (tmp_path / "mmap_exercise.tmp").exists()


def test_loops_compute_the_right_values(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    assert emu(firmware / arch / "compute_loop", "1000").stdout == "result=0xb532d7df33f06386\n"
    assert emu(firmware / arch / "store_loop", "1000", "1").stdout == "checksum=0x96629d4a3fb97300\n"


def test_instruction_count_grows_with_the_loop(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    small = emu(firmware / arch / "compute_loop", "1000").stats
    large = emu(firmware / arch / "compute_loop", "101000").stats
    assert small is not None and large is not None
    per_iteration = (large["instructions"] - small["instructions"]) / 100_000
    assert 3 <= per_iteration <= 40


def test_file_syscalls_stay_inside_the_guest_root(firmware: Path, arch: str, emu, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "root"
    root.mkdir()
    (root / "fileio").write_bytes((firmware / arch / "fileio").read_bytes())
    (root / "fileio").chmod(0o755)
    run = emu("--root", root, root / "fileio", "scratch")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "all ok"
    assert sorted(p.name for p in root.iterdir()) == ["fileio"]


def test_unknown_syscall_is_enosys_and_named_once(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    run = emu(firmware / arch / "unknown_syscall")
    assert run.returncode == 0
    assert run.stdout == "first: -1 ENOSYS\nsecond: -1 ENOSYS\n"
    assert run.stderr.count("unimplemented system call") == 1
    assert "4000" in run.stderr


def test_runs_are_deterministic(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    first = emu(firmware / arch / "page_touch", "50").stats
    second = emu(firmware / arch / "page_touch", "50").stats
    assert first is not None and second is not None
    first.pop("host")
    second.pop("host")
    assert first == second
