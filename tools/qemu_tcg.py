#!/usr/bin/env python3
"""Run QEMU's linux-user TCG test programs under qemu-user and under emu, and compare.

The programs are QEMU's own: ``tests/tcg/multiarch/*.c`` and ``tests/tcg/multiarch/linux/*.c``
of a QEMU source tree (``--src``). They are selected and built the way
``tests/tcg/multiarch/Makefile.target`` does for a ``*-linux-user`` target without
plugins or gdb: every ``.c`` file is a test, with the common flags of
``tests/tcg/Makefile.target`` (``-Wall -Werror -O0 -g -fno-strict-aliasing``, ``-static``),
the per-target ``CFLAGS``/``LDFLAGS`` lines of the Makefile, and ``float_*`` linked with
``libs/float_helpers.c``. The AArch64 sha variants of ``tests/tcg/aarch64/meson.build``
(built from the multiarch sources) are added. Each program runs under ``qemu-ARCH`` and
under ``python -m emu run``, each in a fresh temporary guest root, with a timeout (QEMU's
``TIMEOUT``). Exit status and stdout (what QEMU's ``run-test`` captures) are compared;
stdout is also diffed against ``tests/tcg/ARCH/NAME.ref`` (``sha1.ref`` for sha1) when the
reference exists, as QEMU's ``conditional-diff-out`` does.

Writes OUT/results.json and a markdown table (default docs/QEMU_TCG.md).

    python3 tools/qemu_tcg.py --src QEMU_SRC --out /tmp/qemu-tcg --arch both
"""

from __future__ import annotations

import argparse
import concurrent.futures
import fnmatch
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
ARCHES = ("x86_64", "aarch64")
CC = {"x86_64": "gcc", "aarch64": "aarch64-linux-gnu-gcc"}
# tests/tcg/Makefile.target's common flags
COMMON_CFLAGS = ["-Wall", "-Werror", "-O0", "-g", "-fno-strict-aliasing"]
STATIC = ["-static"]                                                       # BUILD_STATIC=y
DEFAULT_TIMEOUT = 90.0                                                     # TIMEOUT=90 there
NOTES = "## Diagnoses"      # a hand-written section of the markdown that a rerun keeps

# Tests the Makefile would build but that only mean something with a TCG plugin loaded.
PLUGIN_ONLY = {"test-plugin-set-pc", "test-plugin-mem-access", "test-plugin-syscall-filter"}
# Extra arguments of a run, for tests whose Makefile rule passes some (none by default).
RUN_ARGS: dict[str, list[str]] = {}
# tests/tcg/Makefile.target runs every test as `env QEMU=$(QEMU) $(QEMU) test`;
# linux-sigrtminmax re-execs $QEMU with QEMU_RTSIG_MAP unless that is set. emu is not
# QEMU, so the mapping the test would compute for glibc (SIGRTMIN=34) is given to both.
RUN_ENV: dict[str, dict[str, str]] = {"linux-sigrtminmax": {"QEMU_RTSIG_MAP": "32 36 3,64 39 1"}}
# Tests whose stdout depends on timing or addresses: compared after normalisation.
MASK_ADDRESSES = {"test-mmap"}                  # prints the addresses mmap returned
SORT_LINES = {"testthread", "signals"}          # thread interleaving
MASK_NUMBERS = {"signals"}                      # counts of timer signals seen per thread


@dataclass
class Test:
    """One program to build: its name, sources, flags and optional reference output."""
    name: str
    sources: list[Path]
    cflags: list[str]
    ldflags: list[str]
    ref: Optional[Path] = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def makefile_vars(makefile: Path) -> list[tuple[str, str, str, list[str]]]:
    """The target-specific `PATTERN: CFLAGS|LDFLAGS [+]= VALUE` lines of a Makefile."""
    rx = re.compile(r"^([\w%.+-]+):\s*(CFLAGS|LDFLAGS)\s*(\+?=)\s*(.*?)\s*$")
    out = []
    for line in makefile.read_text().splitlines() if makefile.exists() else []:
        m = rx.match(line)
        if m:
            out.append((m[1], m[2], m[3], shlex.split(m[4])))
    return out


def target_flags(name: str, rules: list[tuple[str, str, str, list[str]]],
                 cflags: list[str], ldflags: list[str]) -> tuple[list[str], list[str]]:
    """Apply the Makefile's rules for target `name` to the given CFLAGS and LDFLAGS."""
    flags = {"CFLAGS": list(cflags), "LDFLAGS": list(ldflags)}
    for pattern, var, op, value in rules:
        if fnmatch.fnmatchcase(name, pattern.replace("%", "*")):
            flags[var] = (flags[var] + value) if op == "+=" else list(value)
    return flags["CFLAGS"], flags["LDFLAGS"]


def discover(src: Path, arch: str) -> tuple[list[Test], dict[str, str]]:
    """The tests of tests/tcg/multiarch for `arch` as the Makefile selects them, and the
    skipped ones with the reason."""
    tcg = src / "tests" / "tcg"
    multi = tcg / "multiarch"
    if not multi.is_dir():
        raise SystemExit(f"qemu_tcg: {multi} is not a directory (is --src a QEMU tree?)")
    rules = makefile_vars(multi / "Makefile.target")
    helpers = next((p for p in (multi / "libs" / "float_helpers.c", multi / "float_helpers.c")
                    if p.exists()), None)
    tests, skipped = [], {}
    for c in sorted(list(multi.glob("*.c")) + list((multi / "linux").glob("*.c"))):
        name = c.stem
        if name in PLUGIN_ONLY:
            skipped[name] = "plugin-only test (CONFIG_PLUGIN=n)"
            continue
        cflags, ldflags = target_flags(name, rules, COMMON_CFLAGS, STATIC)
        srcs = [c]
        ref = None
        if name.startswith("float_") and helpers and c.parent == multi:
            srcs.append(helpers)
            if "-lm" not in ldflags:
                ldflags.append("-lm")
            ref = tcg / arch / f"{name}.ref"
        elif (multi / f"{name}.ref").exists():      # sha1.ref (meson's expected_output)
            ref = multi / f"{name}.ref"
        tests.append(Test(name, srcs, cflags, ldflags, ref if ref and ref.exists() else None,
                          RUN_ARGS.get(name, []), RUN_ENV.get(name, {})))
    if arch == "aarch64":   # tests/tcg/aarch64/meson.build: vector builds of multiarch code
        for name, base, cflags in (("sha1-vector", "sha1", ["-O3", "-Wno-stringop-overread"]),
                                   ("sha512-vector", "sha512", ["-O3"]),
                                   ("sha512-sve", "sha512", ["-O3", "-march=armv8.1-a+sve"])):
            if (multi / f"{base}.c").exists():
                ref = multi / f"{base}.ref"
                tests.append(Test(name, [multi / f"{base}.c"], cflags, STATIC,
                                  ref if ref.exists() else None))
    return tests, skipped


def build(test: Test, arch: str, outdir: Path) -> tuple[Optional[Path], str]:
    """Compile `test` for `arch` into outdir; (binary or None, compiler messages)."""
    outdir.mkdir(parents=True, exist_ok=True)
    exe = outdir / test.name
    cmd = [CC[arch], *test.cflags, *map(str, test.sources), "-o", str(exe), *test.ldflags]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None, f"$ {shlex.join(cmd)}\n{proc.stderr}"
    return exe, shlex.join(cmd)


def status_of(rc: Optional[int], runner: str, timed_out: bool) -> str:
    """Normalise an exit status: 'exit N', 'signal N (NAME)', 'timeout' or 'emu error'."""
    if timed_out:
        return "timeout"
    assert rc is not None
    sig = -rc if rc < 0 else (rc - 128 if runner == "emu" and 128 < rc < 193 else 0)
    if runner == "emu" and rc == 125:
        return "emu error"
    if sig:
        try:
            return f"signal {sig} ({signal.Signals(sig).name})"
        except ValueError:
            return f"signal {sig}"
    return f"exit {rc}"


def run(test: Test, exe: Path, arch: str, runner: str, timeout: float,
        emu_python: str, emu_args: list[str], mem_limit: int = 0) -> dict[str, Any]:
    """Run `exe` under `runner` (qemu, emu or native) in a fresh guest root; its status,
    stdout and stderr."""
    root = Path(tempfile.mkdtemp(prefix=f"qtcg-{arch}-{test.name}-"))
    try:
        (root / "bin").mkdir()
        (root / "tmp").mkdir(mode=0o1777)
        os.chmod(root / "tmp", 0o1777)
        prog = root / "bin" / test.name
        shutil.copy2(exe, prog)
        qemu = shutil.which(f"qemu-{arch}") or f"qemu-{arch}"
        genv = {"QEMU": qemu, **test.env}
        if runner == "emu":
            argv = [emu_python, "-m", "emu", "run", "--arch", arch, "--root", str(root),
                    *emu_args]
            for k, v in genv.items():
                argv += ["-E", f"{k}={v}"]
            argv += [str(prog), *test.args]
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            env["PYTHONPATH"] = str(REPO)
            cwd = "/"
        else:
            argv = [qemu] * (runner == "qemu") + [str(prog), *test.args]
            env = {"PATH": "/usr/bin:/bin", **genv}
            cwd = str(root)
        if mem_limit and shutil.which("prlimit"):    # RLIMIT_DATA: qemu 7.2 can eat all RAM
            argv = ["prlimit", f"--data={mem_limit}", "--", *argv]
        t0 = time.time()
        timed_out = False
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        else:
            try:
                os.killpg(proc.pid, signal.SIGKILL)   # reap what the test left behind
            except (ProcessLookupError, PermissionError):
                pass
        return {"status": status_of(proc.returncode, runner, timed_out), "rc": proc.returncode,
                "seconds": round(time.time() - t0, 2), "command": shlex.join(argv),
                "stdout": out.decode(errors="replace"), "stderr": err.decode(errors="replace")}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def normalise(name: str, text: str) -> list[str]:
    """stdout as compared: addresses masked; timing-dependent tests sorted/masked."""
    if name in MASK_ADDRESSES:
        text = re.sub(r"0x[0-9a-f]+", "0x…", text)
    if name in MASK_NUMBERS:
        text = re.sub(r"\d+", "N", text)
    lines = text.splitlines()
    return sorted(lines) if name in SORT_LINES else lines


def first_diff(a: list[str], b: list[str]) -> str:
    """The first differing line of two line lists, as one short phrase."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"stdout line {i + 1}: qemu {x[:70]!r}, emu {y[:70]!r}"
    if len(a) != len(b):
        i = min(len(a), len(b))
        longer, who = (a, "qemu") if len(a) > len(b) else (b, "emu")
        return f"stdout line {i + 1}: only {who} has {longer[i][:70]!r}"
    return ""


def emu_note(err: str) -> str:
    """The most telling line of emu's stderr: a traceback's last line, an unknown system
    call, or the last line."""
    lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
    if not lines:
        return ""
    if any(ln.startswith("Traceback") for ln in lines):
        return "traceback: " + lines[-1]
    unknown = [ln for ln in lines if "unknown" in ln.lower() or "ENOSYS" in ln]
    return (unknown or lines)[-1][:160]


def compare(test: Test, q: dict[str, Any], e: dict[str, Any]) -> tuple[bool, str]:
    """Whether emu's run matches qemu's (status and normalised stdout), and why not."""
    qs, es = q["status"], e["status"]
    if es in ("emu error", "timeout") or qs != es:
        note = emu_note(e["stderr"])
        why = f"{qs} under qemu, {es} under emu" + (f"; emu stderr: {note}" if note else "")
        return False, why
    d = first_diff(normalise(test.name, q["stdout"]), normalise(test.name, e["stdout"]))
    return (not d), d


def ref_check(test: Test, out: str) -> Optional[bool]:
    """Whether `out` equals the test's reference output (None when it has none)."""
    return None if test.ref is None else out == test.ref.read_text()


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Build and run every test on the chosen arches; the results as a dict."""
    arches = ARCHES if args.arch == "both" else (args.arch,)
    out = Path(args.out)
    results: list[dict[str, Any]] = []
    skipped: dict[str, dict[str, str]] = {}
    jobs: list[tuple[Test, Path, str]] = []
    for arch in arches:
        tests, skipped[arch] = discover(Path(args.src), arch)
        if args.tests:
            tests = [t for t in tests if t.name in args.tests]
        for t in tests:
            exe, log = build(t, arch, out / "build" / arch)
            if exe is None:
                results.append({"test": t.name, "arch": arch, "qemu": "build failed",
                                "emu": "build failed", "match": False,
                                "reason": "build failed: " + log.splitlines()[-1][:150],
                                "build": log})
            else:
                jobs.append((t, exe, arch))
    runs: dict[tuple[str, str, str], dict[str, Any]] = {}
    host = platform.machine()       # the host arch also runs natively, as a tie-breaker
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(args.jobs, 2))) as ex:
        futs = {ex.submit(run, t, exe, arch, rn, args.timeout, args.emu_python, args.emu_arg,
                          args.mem_limit << 20):
                (t.name, arch, rn) for t, exe, arch in jobs
                for rn in ("qemu", "emu", "native") if rn != "native" or arch == host}
        for f in concurrent.futures.as_completed(futs):
            runs[futs[f]] = f.result()
            print(f"  {futs[f][1]:8} {futs[f][0]:22} {futs[f][2]:5} {runs[futs[f]]['status']}",
                  file=sys.stderr, flush=True)
    for t, exe, arch in jobs:
        q, e = runs[(t.name, arch, "qemu")], runs[(t.name, arch, "emu")]
        match, reason = compare(t, q, e)
        n = runs.get((t.name, arch, "native"))
        if n and not match:
            same = n["status"] == q["status"] and not compare(t, q, n)[1]
            reason += f" (native: {n['status']}, {'as qemu' if same else 'unlike qemu'})"
        results.append({"test": t.name, "arch": arch, "qemu": q["status"], "emu": e["status"],
                        "native": n["status"] if n else None, "match": match, "reason": reason,
                        "ref": str(t.ref.relative_to(args.src)) if t.ref else None,
                        "qemu_ref_ok": ref_check(t, q["stdout"]),
                        "emu_ref_ok": ref_check(t, e["stdout"]),
                        "runs": {"qemu": q, "emu": e, **({"native": n} if n else {})}})
    results.sort(key=lambda r: (ARCHES.index(r["arch"]), r["test"]))
    qemu_version = subprocess.run([f"qemu-{arches[0]}", "--version"], capture_output=True,
                                  text=True, check=False).stdout.splitlines()[:1]
    return {"meta": {"src": str(args.src), "arches": list(arches), "timeout": args.timeout,
                     "mem_limit_mib": args.mem_limit,
                     "qemu": qemu_version[0] if qemu_version else "?",
                     "date": time.strftime("%Y-%m-%d %H:%M:%S")},
            "skipped": skipped, "results": results}


def markdown(data: dict[str, Any]) -> str:
    """The results as a markdown document: totals per arch, then one row per test."""
    res = data["results"]
    lines = ["# QEMU's linux-user TCG tests under qemu-user and emu", "",
             "Generated by `tools/qemu_tcg.py` from QEMU's `tests/tcg/multiarch` "
             f"(qemu-user: {data['meta']['qemu']}; timeout {data['meta']['timeout']:g} s and "
             f"RLIMIT_DATA {data['meta']['mem_limit_mib']} MiB per run). "
             "A test matches when emu's exit status and stdout equal qemu-user's "
             "(`test-mmap` with addresses masked; `testthread` and `signals` as sorted "
             "lines, the latter with numbers masked). "
             "`ref` is the reference output QEMU diffs against (qemu/emu: equal or not). "
             "Programs of the host's arch also run natively, to tell whose result is wrong.",
             "",
             "| arch | tests | match | mismatch |", "|---|---|---|---|"]
    for arch in data["meta"]["arches"]:
        rs = [r for r in res if r["arch"] == arch]
        n = sum(r["match"] for r in rs)
        lines.append(f"| {arch} | {len(rs)} | {n} | {len(rs) - n} |")
    lines += ["", "| test | arch | qemu-user | emu | match | native | ref (qemu/emu) | reason |",
              "|---|---|---|---|---|---|---|---|"]
    yn = {True: "yes", False: "no", None: "-"}
    for r in res:
        ref = "-" if not r.get("ref") else f"{yn[r['qemu_ref_ok']]}/{yn[r['emu_ref_ok']]}"
        reason = r["reason"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r['test']} | {r['arch']} | {r['qemu']} | {r['emu']} | "
                     f"{yn[r['match']]} | {r.get('native') or '-'} | {ref} | {reason} |")
    skipped = {(n, why) for d in data["skipped"].values() for n, why in d.items()}
    if skipped:
        lines += ["", "Not run: " + "; ".join(f"`{n}` ({why})" for n, why in sorted(skipped))
                  + ". The gdbstub runs need gdb and are not part of this comparison."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True, type=Path, help="QEMU source tree (tests/tcg)")
    p.add_argument("--out", default="/tmp/qemu-tcg", help="build and results directory")
    p.add_argument("--arch", choices=(*ARCHES, "both"), default="both")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per run")
    p.add_argument("--jobs", type=int, default=2, help="parallel runs (at most 2)")
    p.add_argument("--mem-limit", type=int, default=4096, metavar="MIB",
                   help="RLIMIT_DATA of every run (0: none; default 4096)")
    p.add_argument("--tests", nargs="*", help="only these tests")
    p.add_argument("--md", type=Path, default=REPO / "docs" / "QEMU_TCG.md",
                   help="markdown output (default docs/QEMU_TCG.md)")
    venv = REPO / ".venv" / "bin" / "python"
    p.add_argument("--emu-python", default=str(venv) if venv.exists() else sys.executable,
                   help="python that runs emu (default: the checkout's .venv)")
    p.add_argument("--emu-arg", action="append", default=[],
                   help="extra argument for `emu run` (repeatable)")
    args = p.parse_args(argv)
    args.src = args.src.resolve()
    data = run_all(args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(data, indent=1))
    notes = args.md.read_text().partition(NOTES)[1:] if args.md.exists() else ()
    args.md.write_text(markdown(data) + ("\n" + "".join(notes) if notes and notes[0] else ""))
    for arch in data["meta"]["arches"]:
        rs = [r for r in data["results"] if r["arch"] == arch]
        print(f"{arch}: {sum(r['match'] for r in rs)}/{len(rs)} match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
