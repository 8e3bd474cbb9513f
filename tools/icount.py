"""Count a static program's instructions with emu and with counters that do not share emu's.

    python tools/icount.py [--counter NAME]... [--qemu-cpu CPU] [--root DIR]
                           PROGRAM [ARGS...]

prints, for each counter, the count and its difference from emu's `instructions`
(`emu run --stats`). The counters (each is skipped, with a note, when it cannot run here):

  emu       `python -m emu run --stats` (emu's C fast path: per-block counts from capstone,
            with what did not retire at a fault taken back)
  valgrind  `valgrind --tool=lackey` on the native run, its "guest instrs" (programs of
            the host's arch only)
  perf      `perf stat -e instructions:u` on the native run (the host's arch only; needs a
            PMU: a VM without one reports "<not supported>")
  qemu      `qemu-ARCH -cpu CPU -singlestep -d nochain,exec`: one translation block per
            instruction, one "Trace" log line per block executed (a different QEMU from
            Unicorn's, and no capstone). CPU defaults to the model whose features make
            glibc choose the same IFUNCs as under emu: qemu64 (x86-64), cortex-a76 (AArch64)
  unicorn   bare Unicorn (tools/raw_unicorn.py: no MMU of ours, minimal system calls) with a
            UC_HOOK_CODE hook counting every instruction (`--trace FILE` writes its PCs)

What each one counts differs only at the edges; emu's figures for them are measured in
tests/integration/test_instruction_count.py:
  - an x86 `rep` string instruction that runs n > 0 iterations: emu, valgrind and unicorn
    count n + 1, qemu -singlestep n, perf 1;
  - the native runs (valgrind, perf) see the host's CPU (valgrind's own CPUID), and
    valgrind adds LD_PRELOAD and a few more variables to the environment, so a glibc
    program's start-up (cache-size probing, tunables, IFUNC selection) runs other code
    than under emu: about 10,700 instructions more under valgrind on this project's
    machines, and string functions of other lengths;
  - the guest's environment (empty by default under emu; the other counters are run with
    an empty environment too), argv[0] (give emu `--root /` so that it is the program's
    host path, as for the others), the kind of file stdout is (run with stdout on a file
    here), the stack layout and auxv all steer glibc a little.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QEMU = {"x86_64": "qemu-x86_64", "aarch64": "qemu-aarch64"}
QEMU_CPU = {"x86_64": "qemu64", "aarch64": "cortex-a76"}
HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"
             }.get(platform.machine().lower(), platform.machine())
COUNTERS = ("emu", "valgrind", "perf", "qemu", "unicorn")


class Unavailable(Exception):
    """The counter cannot run on this machine (the message says why)."""


@dataclass(frozen=True)
class Count:
    """One counter's result for one run."""

    instructions: int
    returncode: int      # shell-style: 128+N when signal N killed the program
    stdout: bytes


def arch_of(program: str | os.PathLike[str]) -> str:
    """"x86_64" or "aarch64", from the ELF header."""
    with open(program, "rb") as f:
        header = f.read(20)
    machine = int.from_bytes(header[18:20], "little")
    arches = {62: "x86_64", 183: "aarch64"}
    if header[:4] != b"\x7fELF" or machine not in arches:
        raise ValueError(f"{program}: not an x86-64 or AArch64 ELF file")
    return arches[machine]


def _status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _run_native(cmd: list[str], workdir: Path) -> tuple[subprocess.CompletedProcess[bytes], bytes]:
    """Run `cmd` with an empty environment, stdout on a file; (process, stdout bytes)."""
    out = workdir / "stdout"
    with open(out, "wb") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.PIPE, env={}, cwd=workdir,
                              timeout=600, check=False)
    return proc, out.read_bytes()


# ---- emu ----

def emu(program: str | os.PathLike[str], args: Sequence[str],
        emu_options: Sequence[str] = ()) -> Count:
    """emu's count, `python -m emu run --stats FILE [EMU_OPTIONS] PROGRAM ARGS`."""
    with tempfile.TemporaryDirectory(prefix="icount-") as tmp:
        stats = Path(tmp) / "stats.json"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        out = Path(tmp) / "stdout"
        with open(out, "wb") as f:
            proc = subprocess.run([sys.executable, "-m", "emu", "run", "--stats", str(stats),
                                   *emu_options, str(program), *args], stdout=f,
                                  stderr=subprocess.PIPE, env=env, cwd=tmp, timeout=600,
                                  check=False)
        if not stats.exists() or not stats.stat().st_size:
            raise RuntimeError(f"emu wrote no stats: {proc.stderr.decode(errors='replace')}")
        report = json.loads(stats.read_text())
        return Count(report["instructions"], proc.returncode, out.read_bytes())


# ---- valgrind lackey ----

_LACKEY = re.compile(rb"guest instrs:\s+([\d,]+)")


def valgrind(program: str | os.PathLike[str], args: Sequence[str]) -> Count:
    """`valgrind --tool=lackey` on the native run: its "guest instrs" figure."""
    if arch_of(program) != HOST_ARCH:
        raise Unavailable(f"valgrind runs only programs of the host's arch ({HOST_ARCH})")
    tool = shutil.which("valgrind")
    if tool is None:
        raise Unavailable("valgrind is not installed (tools/setup.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="icount-") as tmp:
        log = Path(tmp) / "lackey.log"
        proc, stdout = _run_native([tool, "--tool=lackey", f"--log-file={log}",
                                    str(program), *args], Path(tmp))
        found = _LACKEY.search(log.read_bytes()) if log.exists() else None
        if found is None:
            raise RuntimeError(f"valgrind printed no 'guest instrs': {proc.stderr[-500:]!r}")
        return Count(int(found.group(1).replace(b",", b"")), _status(proc.returncode), stdout)


# ---- perf stat ----

def perf(program: str | os.PathLike[str], args: Sequence[str]) -> Count:
    """`perf stat -e instructions:u` on the native run."""
    if arch_of(program) != HOST_ARCH:
        raise Unavailable(f"perf counts only programs of the host's arch ({HOST_ARCH})")
    tool = shutil.which("perf")
    if tool is None:
        raise Unavailable("perf is not installed")
    with tempfile.TemporaryDirectory(prefix="icount-") as tmp:
        report = Path(tmp) / "perf.csv"
        proc, stdout = _run_native([tool, "stat", "-x,", "-e", "instructions:u", "-o",
                                    str(report), "--", str(program), *args], Path(tmp))
        text = report.read_text() if report.exists() else ""
        for line in text.splitlines():
            fields = line.split(",")
            if len(fields) > 2 and fields[2].startswith("instructions"):
                if not fields[0].strip().isdigit():
                    raise Unavailable(f"perf stat -e instructions:u: {fields[0].strip()} "
                                      "(no hardware counter on this machine)")
                return Count(int(fields[0]), _status(proc.returncode), stdout)
        raise Unavailable(f"perf stat printed no instruction count: {text.strip()[-300:]}"
                          f"{proc.stderr.decode(errors='replace')[-300:]}")


# ---- qemu-user, one instruction per translation block ----

def _qemu_singlestep_option(qemu: str) -> str:
    """QEMU 8.1 renamed -singlestep to -one-insn-per-tb."""
    usage = subprocess.run([qemu, "-h"], capture_output=True, text=True, check=False).stdout
    return "-one-insn-per-tb" if "-one-insn-per-tb" in usage else "-singlestep"


def qemu(program: str | os.PathLike[str], args: Sequence[str], cpu: str | None = None
         ) -> Count:
    """qemu-user's count: the "Trace" lines of `-d nochain,exec` with one instruction per
    translation block (a block that faults is logged too: fine for programs that do not
    fault)."""
    arch = arch_of(program)
    tool = shutil.which(QEMU[arch])
    if tool is None:
        raise Unavailable(f"{QEMU[arch]} is not installed (tools/setup.sh installs qemu-user)")
    cmd = [tool, "-cpu", cpu or QEMU_CPU[arch], _qemu_singlestep_option(tool),
           "-d", "nochain,exec", "-D", "/dev/stderr", str(program), *args]
    with tempfile.TemporaryDirectory(prefix="icount-") as tmp:
        out = Path(tmp) / "stdout"
        with open(out, "wb") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.PIPE, env={}, cwd=tmp)
            assert proc.stderr is not None
            count, tail = 0, b"\n"            # the log's first line counts too
            while chunk := proc.stderr.read(1 << 20):
                data = tail + chunk
                count += data.count(b"\nTrace ")
                tail = data[-6:]
            proc.wait(timeout=600)
        return Count(count, _status(proc.returncode), out.read_bytes())


# ---- bare Unicorn with a per-instruction hook ----

def unicorn(program: str | os.PathLike[str], args: Sequence[str],
            trace: list[int] | None = None) -> Count:
    """Run on bare Unicorn (tools/raw_unicorn.py) and count every instruction with a
    UC_HOOK_CODE hook; the PC of each goes to `trace` when given."""
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import unicorn as uc_module

        from raw_unicorn import RawRun
    finally:
        sys.path.remove(str(REPO / "tools"))
    run = RawRun(str(program), list(args), [])
    count = [0]
    if trace is None:
        def hook(_uc: object, _address: int, _size: int, _user: object) -> None:
            count[0] += 1
    else:
        def hook(_uc: object, address: int, _size: int, _user: object) -> None:
            count[0] += 1
            trace.append(address)
    run.uc.hook_add(uc_module.UC_HOOK_CODE, hook)
    out, err = io.TextIOWrapper(io.BytesIO()), io.TextIOWrapper(io.BytesIO())
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run.run()
    out.flush()
    stdout = out.buffer.getvalue()          # type: ignore[attr-defined]
    return Count(count[0], code, stdout)


COUNT = {"emu": emu, "valgrind": valgrind, "perf": perf, "qemu": qemu, "unicorn": unicorn}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counter", action="append", choices=COUNTERS,
                        help="a counter to run (repeatable; default: all)")
    parser.add_argument("--qemu-cpu", help="qemu's -cpu (default: qemu64 / cortex-a76)")
    parser.add_argument("--root", default="/", help="emu's --root (default: /, so that "
                        "argv[0] is the program's path, as in the other counters)")
    parser.add_argument("--trace", metavar="FILE", help="unicorn: write each PC, in hex")
    parser.add_argument("program")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    opts = parser.parse_args(argv)
    program = str(Path(opts.program).resolve())
    try:
        arch_of(program)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    counters = opts.counter or list(COUNTERS)
    if "emu" not in counters:
        counters.insert(0, "emu")
    results: dict[str, Count] = {}
    print(f"{'counter':10} {'instructions':>14} {'- emu':>10} {'%':>9}  status")
    for name in counters:
        try:
            if name == "emu":
                count = emu(program, opts.args, ["--root", opts.root])
            elif name == "qemu":
                count = qemu(program, opts.args, opts.qemu_cpu)
            elif name == "unicorn" and opts.trace:
                pcs: list[int] = []
                count = unicorn(program, opts.args, pcs)
                Path(opts.trace).write_text("".join(f"{pc:x}\n" for pc in pcs))
            else:
                count = COUNT[name](program, opts.args)
        except Unavailable as exc:
            print(f"{name:10} {'-':>14} {'':>10} {'':>9}  unavailable: {exc}")
            continue
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"{name:10} {'-':>14} {'':>10} {'':>9}  failed: {exc}".rstrip())
            if name == "emu":
                return 1
            continue
        results[name] = count
        ref = results["emu"].instructions
        diff = count.instructions - ref
        share = f"{100 * diff / ref:+.4f}" if ref else ""
        same = "" if count.stdout == results["emu"].stdout else ", stdout differs from emu's"
        print(f"{name:10} {count.instructions:>14,} {diff:>+10,} {share:>9}  "
              f"exit {count.returncode}{same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
