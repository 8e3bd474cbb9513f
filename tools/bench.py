"""Speed benchmark (not a test): emu against native, qemu-user and bare Unicorn.

    python tools/bench.py [--iters N] [--runs K] [--arch x86_64|aarch64|both] [--json FILE]

For each architecture and each of firmware's compute_loop (register-only loop)
and store_loop (one store per iteration), every runner runs the same static
binary with the same arguments, --runs times at ITERS and --runs times at
ITERS=1 (the start-up run), interleaved round-robin. Runners:

  native       the binary itself (only when the host is that architecture)
  qemu-user    qemu-x86_64 / qemu-aarch64
  raw-unicorn  tools/raw_unicorn.py: bare Unicorn, default TLB mode, no hooks but syscalls
  emu          `python -m emu run --stats FILE`

Time per run: native and qemu-user, the wall time of the subprocess; emu,
`host.wall_seconds` from --stats; raw-unicorn, the same span measured the same
way inside tools/raw_unicorn.py (engine creation to guest exit; Python start-up
and imports are excluded for both Python runners). Instruction counts come
from emu's --stats for each argument list (they are deterministic), and are
used for every runner:

  MIPS      = instructions(ITERS) / median time(ITERS)
  net MIPS  = (instructions(ITERS) - instructions(1)) / (median time(ITERS) - median time(1))

Ratios are speed ratios (emu MIPS / other MIPS) on net MIPS, with raw MIPS in
brackets. Every runner's stdout must match emu's, or the benchmark fails.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRMWARE = os.path.join(ROOT, "firmware", "build")
RAW_UNICORN = os.path.join(ROOT, "tools", "raw_unicorn.py")
PROGRAMS = ("compute_loop", "store_loop")
DEFAULT_ITERS = 200_000_000          # about 1 s per emu run on a 2020s x86-64 server core
TARGETS = {"qemu-user": 0.5, "raw-unicorn": 5.0}      # emu speed / runner speed, from the issue
TARGET_PROGRAMS = {"qemu-user": PROGRAMS, "raw-unicorn": ("store_loop",)}


@dataclass
class Samples:
    """One runner's timings on one program."""

    times: list[float] = field(default_factory=list)          # at ITERS
    startup: list[float] = field(default_factory=list)        # at ITERS=1


def _run(cmd: list[str], env: dict[str, str], stats: str | None = None) -> tuple[str, float, dict]:
    """Run `cmd`; (stdout, wall seconds, parsed stats file or {})."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} exited {proc.returncode}: "
                         f"{proc.stderr.decode(errors='replace').strip()}")
    report = {}
    if stats:
        with open(stats) as f:
            report = json.load(f)
    return proc.stdout.decode(errors="replace"), wall, report


def _python_env() -> dict[str, str]:
    """Environment of the Python runners (their guests get none: --clean-env, raw_unicorn's [])."""
    keep = ("PATH", "HOME", "PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH")
    return {k: os.environ[k] for k in keep if k in os.environ}


class Runner:
    """How to run one program one way and time it."""

    def __init__(self, name: str, arch: str, tmp: str) -> None:
        self.name, self.arch = name, arch
        self.stats = os.path.join(tmp, f"{name}-{arch}.json")

    def command(self, program: str, args: list[str]) -> list[str]:
        if self.name == "native":
            return [program, *args]
        if self.name == "qemu-user":
            return [shutil.which(f"qemu-{self.arch}") or f"qemu-{self.arch}", program, *args]
        if self.name == "raw-unicorn":
            return [sys.executable, RAW_UNICORN, "--stats", self.stats, program, *args]
        return [sys.executable, "-m", "emu", "run", "--clean-env", "--stats", self.stats,
                program, *args]

    def measure(self, program: str, args: list[str]) -> tuple[str, float, dict]:
        """(stdout, seconds, stats report) of one run."""
        in_process = self.name in ("raw-unicorn", "emu")
        env = _python_env() if in_process else {}          # native and qemu guests: empty env
        out, wall, report = _run(self.command(program, args), env,
                                 self.stats if in_process else None)
        if self.name == "emu":
            report["process_seconds"] = wall
            return out, report["host"]["wall_seconds"], report
        if self.name == "raw-unicorn":
            return out, report["wall_seconds"], report
        return out, wall, report


def _runners(arch: str, tmp: str) -> list[Runner]:
    names = []
    if platform.machine() in (arch, {"aarch64": "arm64"}.get(arch)):
        names.append("native")
    if shutil.which(f"qemu-{arch}"):
        names.append("qemu-user")
    else:
        print(f"bench: qemu-{arch} not found; skipping qemu-user", file=sys.stderr)
    names += ["raw-unicorn", "emu"]
    return [Runner(n, arch, tmp) for n in names]


def bench_program(arch: str, name: str, iters: int, runs: int, tmp: str) -> dict:
    """Measure every runner on one program; returns the result record."""
    program = os.path.join(FIRMWARE, arch, name)
    if not os.access(program, os.X_OK):
        raise SystemExit(f"bench: {program} missing; build it with `make -C firmware`")
    runners = _runners(arch, tmp)
    samples = {r.name: Samples() for r in runners}
    outputs: dict[tuple[str, int], str] = {}
    insns: dict[int, int] = {}
    emu_process: list[float] = []
    for _ in range(runs):
        for n, bucket in ((iters, "times"), (1, "startup")):
            for r in runners:
                out, seconds, report = r.measure(program, [str(n)])
                getattr(samples[r.name], bucket).append(seconds)
                if r.name == "emu":
                    if insns.setdefault(n, report["instructions"]) != report["instructions"]:
                        raise SystemExit(f"bench: emu instruction count of {name} {n} varies")
                    if n == iters:
                        emu_process.append(report["process_seconds"] - seconds)
                key = (r.name, n)
                if outputs.setdefault(key, out) != out:
                    raise SystemExit(f"bench: {r.name} {name} {n}: output differs between runs")
    for (runner, n), out in outputs.items():
        if out != outputs[("emu", n)]:
            raise SystemExit(f"bench: {runner} {name} {n} printed {out!r}, "
                             f"emu printed {outputs[('emu', n)]!r}")
    result = {"arch": arch, "program": name, "args": [str(iters)],
              "instructions": insns[iters], "instructions_startup": insns[1],
              "emu_python_startup_seconds": statistics.median(emu_process), "runners": {}}
    for r in runners:
        t = statistics.median(samples[r.name].times)
        s = statistics.median(samples[r.name].startup)
        net = t - s
        result["runners"][r.name] = {
            "seconds": t, "startup_seconds": s, "net_seconds": net,
            "mips": insns[iters] / t / 1e6,
            "net_mips": (insns[iters] - insns[1]) / net / 1e6 if net > 0 else float("nan"),
            "samples": samples[r.name].times, "startup_samples": samples[r.name].startup,
        }
    emu = result["runners"]["emu"]
    result["ratios"] = {
        other: {"net": emu["net_mips"] / rec["net_mips"], "raw": emu["mips"] / rec["mips"]}
        for other, rec in result["runners"].items() if other != "emu"}
    return result


def machine_info() -> dict[str, str]:
    """CPU, OS and tool versions of this host."""
    import unicorn

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    qemu = "not installed"
    if shutil.which("qemu-x86_64"):
        qemu = subprocess.run(["qemu-x86_64", "--version"], capture_output=True,
                              text=True).stdout.splitlines()[0]
    return {"date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "cpu": f"{cpu} ({os.cpu_count()} CPUs)",
            "os": f"{platform.system()} {platform.release()} {platform.machine()}",
            "python": platform.python_version(), "unicorn": unicorn.__version__, "qemu": qemu}


def _num(value: float, width: int, spec: str) -> str:
    """`value` formatted, or n/a when ITERS is too small for a net figure."""
    return f"{value:{width}{spec}}" if value == value else f"{'n/a':>{width}}"


def print_report(info: dict, iters: int, runs: int, results: list[dict]) -> None:
    """The human-readable table."""
    print(f"date {info['date']}   cpu {info['cpu']}")
    print(f"os {info['os']}   python {info['python']}   unicorn {info['unicorn']}   {info['qemu']}")
    print(f"ITERS={iters:,}  median of {runs} runs; start-up = median of {runs} runs at ITERS=1; "
          "time = seconds, net = time - start-up\n")
    for res in results:
        print(f"== {res['arch']} {res['program']} {res['args'][0]}: "
              f"{res['instructions']:,} instructions ({res['instructions_startup']:,} at ITERS=1)")
        print(f"   {'runner':<12} {'time':>8} {'start-up':>9} {'net':>8} {'MIPS':>8} {'net MIPS':>9}")
        for name, rec in res["runners"].items():
            print(f"   {name:<12} {rec['seconds']:8.3f} {rec['startup_seconds']:9.3f} "
                  f"{rec['net_seconds']:8.3f} {rec['mips']:8.0f} {_num(rec['net_mips'], 9, '.0f')}")
        for other, ratio in res["ratios"].items():
            line = f"   emu/{other:<12} speed {_num(ratio['net'], 5, '.2f')}x net  ({ratio['raw']:.2f}x raw)"
            if res["program"] in TARGET_PROGRAMS.get(other, ()):
                goal = TARGETS[other]
                line += f"   target >= {goal}x: {'met' if ratio['net'] >= goal else 'NOT met'}"
            print(line)
        print(f"   (emu's Python start-up and imports, outside host.wall_seconds: "
              f"{res['emu_python_startup_seconds']:.3f} s)\n")


def _no_nan(value):
    """`value` with NaN (no net figure) replaced by None, so the JSON is standard."""
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return None if isinstance(value, float) and value != value else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="MIPS of emu against native, qemu-user and "
                                     "bare Unicorn on firmware's compute_loop and store_loop.")
    parser.add_argument("--iters", type=int, default=DEFAULT_ITERS,
                        help=f"loop iterations (default {DEFAULT_ITERS:,})")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement; medians "
                        "are reported (default 3)")
    parser.add_argument("--arch", choices=("x86_64", "aarch64", "both"), default="both")
    parser.add_argument("--json", metavar="FILE", help="also write all results as JSON")
    opts = parser.parse_args(argv)
    if opts.iters < 2 or opts.runs < 1:
        parser.error("--iters must be at least 2 and --runs at least 1")
    arches = ("x86_64", "aarch64") if opts.arch == "both" else (opts.arch,)
    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="emu-bench-") as tmp:
        results = [bench_program(arch, name, opts.iters, opts.runs, tmp)
                   for arch in arches for name in PROGRAMS]
    print_report(info, opts.iters, opts.runs, results)
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(_no_nan({"machine": info, "iters": opts.iters, "runs": opts.runs,
                               "results": results}), f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
