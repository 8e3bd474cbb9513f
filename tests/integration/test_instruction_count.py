"""Instruction counts you can trust: emu's `instructions` (--stats) against counts that do
not come from emu.

- firmware/exact_count (freestanding, every instruction written out in assembly) retires
  exactly the number its formula gives, on both architectures; and exactly what
  valgrind lackey counts on the native run (or perf, where there is a PMU), what
  qemu-user counts with one instruction per block, and what bare Unicorn counts with a
  per-instruction hook (tools/icount.py runs each counter).
- `rep` string instructions (firmware/rep_strings, x86-64): n + 1 for n iterations,
  as valgrind counts them (qemu -singlestep counts n, the hardware 1).
- `--max-instructions N` and Machine's AfterInstructions stop after exactly N, at the
  PC the per-instruction hook saw as the (N+1)-th.
- glibc programs are within 0.1 % of the native count (x86-64, valgrind) when their work
  dominates glibc's start-up, which runs other code natively (valgrind's CPUID and
  environment: about 10,700 instructions more), and the work itself counts exactly the
  same; and within 0.1 % of qemu-user run with the CPU model whose features make glibc
  pick the same string functions (IFUNCs) as under emu (qemu64, cortex-a76) on both
  architectures, with libc_work, whose work is glibc's own string functions.

A test is skipped only when its independent counter cannot run on this machine.
"""
from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import pytest

from emu.config import RunConfig
from emu.machine import AfterInstructions, Exited, Machine
from tests.conftest import REPO, run_emu


def _load_icount() -> ModuleType:
    """tools/icount.py (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("icount", REPO / "tools" / "icount.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["icount"] = module          # for its dataclasses
    spec.loader.exec_module(module)
    return module


icount = _load_icount()

SIGXCPU = 24
MASK64 = (1 << 64) - 1

# exact_count's instructions, part by part (the table in firmware/exact_count.S)
PARTS = {
    #           no arg, parse+, per digit, set-up, iteration, odd, i%16==0, output+exit
    "x86_64": dict(no_arg=4, parse=10, digit=8, setup=605, iteration=26, odd=1, sys=2, tail=139),
    "aarch64": dict(no_arg=4, parse=10, digit=7, setup=605, iteration=20, odd=1, sys=2, tail=110),
}


def exact_count_instructions(arch: str, arg: str | None) -> int:
    """exact_count's instruction count by construction, for argv[1] = `arg` (or none)."""
    p = PARTS[arch]
    if arg is None:
        n, parse = 1000, p["no_arg"]
    else:
        n, parse = int(arg), p["parse"] + p["digit"] * len(arg)
    return parse + p["setup"] + p["iteration"] * n + p["odd"] * (n // 2) \
        + p["sys"] * ((n + 15) // 16) + p["tail"]


def exact_count_output(n: int) -> str:
    """exact_count's output: its state after n iterations (the model in exact_count.S)."""
    s = 0x9E3779B97F4A7C15
    for i in range(n):
        s ^= (s << 13) & MASK64
        s ^= s >> 7
        s = (s + i) & MASK64
        s = ((s >> 17) | (s << 47)) & MASK64
        if i & 1:
            s ^= 0xFF00
    return f"{s:016x}\n"


def emu_count(tmp_path: Path, program: Path, *args: str, options: tuple[str, ...] = ()
              ) -> tuple[int, int, str]:
    """(instructions, exit status, stdout) of an in-process `emu run --root / ...`: argv[0]
    is then the program's host path, as in the native and qemu runs."""
    stats = tmp_path / "stats.json"
    stats.unlink(missing_ok=True)
    run = run_emu("--root", "/", *options, program, *args, stats_path=stats)
    assert run.stats is not None, run.stderr
    return run.stats["instructions"], run.returncode, run.stdout


def counted(counter: Callable[..., icount.Count], *args: object) -> icount.Count:
    """counter(*args), or skip the test with the counter's reason when it cannot run here."""
    try:
        return counter(*args)
    except icount.Unavailable as exc:
        pytest.skip(str(exc))


@lru_cache(maxsize=None)
def _native_counter(probe: Path) -> tuple[Callable[..., icount.Count] | None, str]:
    """The first native counter that runs `probe`, or None and why none does."""
    reasons = []
    for name, counter in (("valgrind", icount.valgrind), ("perf", icount.perf)):
        try:
            counter(probe, ["0"])
        except icount.Unavailable as exc:
            reasons.append(f"{name}: {exc}")
            continue
        return counter, name
    return None, "; ".join(reasons)


def native_counter(firmware: Path) -> Callable[..., icount.Count]:
    """x86-64's native counter: valgrind lackey, or else perf stat (skip if neither runs)."""
    counter, why = _native_counter(firmware / "x86_64" / "exact_count")
    if counter is None:
        pytest.skip(f"no native instruction counter: {why}")
    return counter


# ---- exact_count: by construction and by three independent counters ----

@pytest.mark.parametrize("arg", [None, "0", "1", "17", "1000", "00042"])
def test_exact_count_retires_the_instructions_its_code_has(firmware: Path, arch: str,
                                                           tmp_path: Path,
                                                           arg: str | None) -> None:
    args = () if arg is None else (arg,)
    instructions, status, stdout = emu_count(tmp_path, firmware / arch / "exact_count", *args)
    assert (status, stdout) == (0, exact_count_output(1000 if arg is None else int(arg)))
    assert instructions == exact_count_instructions(arch, arg)


@pytest.mark.parametrize("n", ["0", "1000"])
def test_exact_count_equals_the_native_count(firmware: Path, tmp_path: Path, n: str) -> None:
    program = firmware / "x86_64" / "exact_count"
    native = native_counter(firmware)(program, [n])
    instructions, status, stdout = emu_count(tmp_path, program, n)
    assert (native.returncode, native.stdout.decode()) == (status, stdout)
    assert stdout == exact_count_output(int(n))
    assert instructions == native.instructions == exact_count_instructions("x86_64", n)


def test_exact_count_equals_qemu_one_instruction_per_block(firmware: Path, arch: str,
                                                          tmp_path: Path) -> None:
    program = firmware / arch / "exact_count"
    ref = counted(icount.qemu, program, ["1000"])
    instructions, _, stdout = emu_count(tmp_path, program, "1000")
    assert ref.stdout.decode() == stdout
    assert instructions == ref.instructions == exact_count_instructions(arch, "1000")


def test_exact_count_equals_a_per_instruction_hook(firmware: Path, arch: str,
                                                   tmp_path: Path) -> None:
    program = firmware / arch / "exact_count"
    ref = icount.unicorn(program, ["1000"])
    instructions, _, stdout = emu_count(tmp_path, program, "1000")
    assert ref.stdout.decode() == stdout
    assert instructions == ref.instructions == exact_count_instructions(arch, "1000")


# ---- rep string instructions (x86-64) ----

REP_STRINGS = 4564      # the sum in firmware/rep_strings.S: n + 1 per rep with n iterations


def test_rep_strings_count_one_per_iteration_plus_the_last_check(firmware: Path,
                                                                 tmp_path: Path) -> None:
    program = firmware / "x86_64" / "rep_strings"
    instructions, status, _ = emu_count(tmp_path, program)
    assert (instructions, status) == (REP_STRINGS, 0)
    assert icount.unicorn(program, []).instructions == REP_STRINGS


def test_rep_strings_count_as_valgrind_counts_them(firmware: Path, tmp_path: Path) -> None:
    program = firmware / "x86_64" / "rep_strings"
    native = counted(icount.valgrind, program, [])
    instructions, _, _ = emu_count(tmp_path, program)
    assert instructions == native.instructions == REP_STRINGS


# ---- stopping after exactly N instructions ----

def hook_trace(program: Path, *args: str) -> list[int]:
    """The PC of every instruction the program executes, from bare Unicorn's code hook."""
    pcs: list[int] = []
    icount.unicorn(program, list(args), pcs)
    return pcs


def test_stepping_stops_where_the_per_instruction_hook_saw_each_instruction(
        firmware: Path, arch: str) -> None:
    """Single steps through the whole run (faults, system calls, the code page crossing),
    then strides of 97 through a second run: after k instructions the PC is the
    (k+1)-th the hook saw."""
    program = firmware / arch / "exact_count"
    pcs = hook_trace(program, "70")
    machine = Machine(RunConfig(program=str(program), args=("70",)))
    for k in range(1, len(pcs)):
        stop = machine.run(AfterInstructions(1))
        assert not isinstance(stop, Exited) and (stop.instructions, stop.pc) == (k, pcs[k])
    assert isinstance(machine.run(AfterInstructions(1)), Exited)
    assert machine.result().report["instructions"] == len(pcs)

    machine = Machine(RunConfig(program=str(program), args=("70",)))
    for k in range(97, len(pcs), 97):
        stop = machine.run(AfterInstructions(97))
        assert not isinstance(stop, Exited) and (stop.instructions, stop.pc) == (k, pcs[k])
    assert machine.result().report["instructions"] == len(pcs)


def test_max_instructions_stops_after_exactly_n(firmware: Path, arch: str,
                                                tmp_path: Path) -> None:
    program = firmware / arch / "exact_count"
    pcs = hook_trace(program, "70")
    total = len(pcs)
    assert total == exact_count_instructions(arch, "70")
    for limit in (1, 2, 37, total // 2, total - 1):
        stats = tmp_path / f"stats-{limit}.json"
        run = run_emu("--max-instructions", str(limit), program, "70", stats_path=stats)
        assert run.stats is not None
        assert (run.returncode, run.stats["exit"]["signal"]) == (128 + SIGXCPU, "SIGXCPU")
        assert run.stats["instructions"] == limit
        assert f"reached at pc {pcs[limit]:#x}" in run.stderr
    # the N-th instruction is the exit_group call: the guest has exited, nothing is over
    run = run_emu("--max-instructions", str(total), program, "70",
                  stats_path=tmp_path / "stats-total.json")
    assert run.stats is not None and (run.returncode, run.stats["instructions"]) == (0, total)


# ---- glibc programs ----

NATIVE_GLIBC = [("compute_loop", "1000000"), ("compute_loop", "2000000")]


def test_glibc_program_within_0_1_percent_of_the_native_count(firmware: Path,
                                                              tmp_path: Path) -> None:
    """compute_loop, 13 and 26 million instructions, against the native run. glibc's
    start-up differs by a constant (valgrind's CPUID and environment); the loop, the
    output and the exit count exactly alike: the two runs' difference is the same."""
    counter = native_counter(firmware)
    ours, theirs = [], []
    for name, arg in NATIVE_GLIBC:
        program = firmware / "x86_64" / name
        native = counter(program, [arg])
        instructions, status, stdout = emu_count(tmp_path, program, arg)
        assert (status, stdout) == (native.returncode, native.stdout.decode())
        gap = instructions - native.instructions
        assert abs(gap) <= native.instructions / 1000, \
            f"{name} {arg}: emu {instructions}, native {native.instructions}"
        ours.append(instructions)
        theirs.append(native.instructions)
    assert ours[1] - ours[0] == theirs[1] - theirs[0]


QEMU_GLIBC = [("libc_work", ("300", "2")), ("compute_loop", ("100000",)),
              ("store_loop", ("100000", "64"))]


@pytest.mark.parametrize("name,args", QEMU_GLIBC, ids=[n for n, _ in QEMU_GLIBC])
def test_glibc_program_within_0_1_percent_of_qemu(firmware: Path, arch: str, tmp_path: Path,
                                                  name: str, args: tuple[str, ...]) -> None:
    program = firmware / arch / name
    ref = counted(icount.qemu, program, list(args))
    instructions, status, stdout = emu_count(tmp_path, program, *args)
    assert (status, stdout) == (ref.returncode, ref.stdout.decode())
    assert abs(instructions - ref.instructions) <= ref.instructions / 1000, \
        f"{name} {' '.join(args)}: emu {instructions}, qemu {ref.instructions}"
