#!/usr/bin/env python3
"""Build, run and summarise the in-scope LTP syscall tests under native, qemu-user and emu.

Subcommands:

  build     configure and build LTP statically for x86-64 and/or AArch64, only the
            in-scope directories of testcases/kernel/syscalls
  run       run every built test under native (x86-64 only), qemu-user and emu,
            each in a fresh temporary root; writes JSON and a markdown table
  manifest  turn the JSON into docs/LTP.md: pass counts, the target percentage and
            a classified reason for every test that passes under qemu but not emu

The LTP source itself is never copied into this repository: ``build`` works in a
directory outside it (default /tmp/ltp-build).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as _dt
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable, Optional

REPO = Path(__file__).resolve().parent.parent
ARCHES = ("x86_64", "aarch64")
RUNNERS = ("native", "qemu", "emu")

# --------------------------------------------------------------------------------------
# Scope
# --------------------------------------------------------------------------------------

FAMILIES: dict[str, list[str]] = {
    "memory": (
        "mmap munmap mprotect madvise mincore mremap mlock mlock2 mlockall msync munlock "
        "munlockall brk shmget shmat shmdt shmctl"
    ).split(),
    "process": (
        "fork vfork clone execve execl execle execlp execv execvp wait wait4 waitpid "
        "waitid exit exit_group getpid getppid setpgid getpgid setsid getsid kill prctl "
        "getrlimit setrlimit getrusage sysinfo getuid geteuid getgid getegid setuid "
        "setgid setegid setreuid setregid setresuid setresgid getresuid getresgid "
        "setfsuid setfsgid getgroups setgroups personality sched_get_priority_max "
        "sched_get_priority_min sched_getaffinity sched_getattr sched_getparam "
        "sched_getscheduler sched_rr_get_interval sched_setaffinity sched_setattr "
        "sched_setparam sched_setscheduler sched_yield"
    ).split(),
    "signal": (
        "rt_sigaction sigaction sigprocmask rt_sigprocmask sigsuspend rt_sigsuspend "
        "sigpending sigaltstack pause alarm setitimer getitimer timer_create "
        "timer_settime timer_gettime timer_delete tgkill tkill rt_sigqueueinfo"
    ).split(),
    "file": (
        "open openat close read write pread pwrite preadv pwritev readv writev lseek dup "
        "dup2 dup3 pipe pipe2 fcntl fstat stat lstat access chmod chown fchown link "
        "unlink rename mkdir rmdir truncate ftruncate utime utimes utimensat statfs "
        "getdents poll select epoll_create epoll_create1 epoll_ctl epoll_wait epoll_pwait "
        "sendfile getcwd chdir umask"
    ).split(),
    "time": (
        "clock_gettime clock_getres clock_nanosleep nanosleep gettimeofday time"
    ).split(),
}
IN_SCOPE_DIRS: list[str] = [d for dirs in FAMILIES.values() for d in dirs]
DIR_FAMILY: dict[str, str] = {d: fam for fam, dirs in FAMILIES.items() for d in dirs}

# Test-source markers that put a test out of scope before it is ever run.
STATIC_OUT_OF_SCOPE: list[tuple[str, str]] = [
    (r"\.needs_device\s*=\s*1", "needs a block device"),
    (r"\.mount_device\s*=\s*1", "needs a block device (mount)"),
    (r"\.format_device\s*=\s*1", "needs a block device (mkfs)"),
    (r"\.all_filesystems\s*=\s*1", "needs a block device (all filesystems)"),
    (r"\.needs_drivers\s*=", "needs kernel modules"),
    (r"\.needs_cmds\s*=", "needs host commands"),
    (r"tst_get_hugepage|\.hugepages\s*=", "needs hugetlbfs"),
    (r"\.needs_rofs\s*=\s*1", "needs a block device (read-only fs)"),
]

LTP_EXIT = {0: "pass", 1: "fail", 2: "broken", 4: "warn", 32: "conf"}

# Tests that change the machine they run on (its clock): never run natively or under
# qemu-user, which would change the host's clock (under emu they reach only the simulated
# machine).
CHANGES_THE_HOST = frozenset({"leapsec01", "clock_settime01", "clock_settime02",
                              "clock_settime03", "settimeofday01", "settimeofday02",
                              "stime01", "stime02", "adjtimex01", "adjtimex02", "adjtimex03"})


def log(msg: str) -> None:
    """Print one progress line to stderr, flushed."""
    print(msg, file=sys.stderr, flush=True)


class Progress:
    """A progress bar: rich or tqdm when importable, else one plain line per step."""

    def __init__(self, total: int, desc: str) -> None:
        """Start a bar of `total` steps labelled `desc`."""
        self.total, self.desc, self.done = total, desc, 0
        self._lock = threading.Lock()
        self._impl: Any = None
        self._kind = "plain"
        try:
            from rich.progress import Progress as RichProgress  # type: ignore

            self._impl = RichProgress()
            self._impl.start()
            self._task = self._impl.add_task(desc, total=total)
            self._kind = "rich"
        except ImportError:
            try:
                from tqdm import tqdm  # type: ignore

                self._impl = tqdm(total=total, desc=desc)
                self._kind = "tqdm"
            except ImportError:
                pass

    def step(self, label: str = "") -> None:
        """Advance the bar by one step, noting `label`."""
        with self._lock:
            self.done += 1
            if self._kind == "rich":
                self._impl.update(self._task, advance=1, description=f"{self.desc} {label}")
            elif self._kind == "tqdm":
                self._impl.set_postfix_str(label)
                self._impl.update(1)
            else:
                log(f"[{self.desc} {self.done}/{self.total}] {label}")

    def close(self) -> None:
        """Finish the bar."""
        if self._kind == "rich":
            self._impl.stop()
        elif self._kind == "tqdm":
            self._impl.close()


# --------------------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------------------

def toolchain(arch: str) -> dict[str, str]:
    """Return the configure settings (host triple, CC) used for `arch`."""
    if arch == "x86_64":
        return {"host": "", "cc": "gcc"}
    return {"host": "aarch64-linux-gnu", "cc": "aarch64-linux-gnu-gcc"}


def sh(cmd: list[str], cwd: Path, logf: Path, env: Optional[dict[str, str]] = None) -> int:
    """Run `cmd` in `cwd`, appending its output to `logf`; return its exit status."""
    with open(logf, "ab") as fh:
        fh.write(("\n$ " + shlex.join(cmd) + "\n").encode())
        fh.flush()
        return subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                              env=env).returncode


def ensure_build_deps() -> None:
    """Install autoconf/automake/m4/pkg-config/make with apt-get when one is missing."""
    need = [p for p, exe in (("autoconf", "autoconf"), ("automake", "automake"),
                             ("m4", "m4"), ("pkg-config", "pkg-config"), ("make", "make"))
            if shutil.which(exe) is None]
    if need:
        log(f"installing {' '.join(need)} with apt-get")
        pre = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run(pre + ["apt-get", "install", "-y", *need], check=False)


def prepare_tree(src: Path, tree: Path, logf: Path) -> None:
    """Make `tree` a private copy of the LTP source `src` (git clone, else copy)."""
    if (tree / "configure.ac").exists():
        return
    tree.parent.mkdir(parents=True, exist_ok=True)
    if (src / ".git").exists() or (src / "HEAD").exists():
        rc = sh(["git", "clone", "-q", str(src), str(tree)], tree.parent, logf)
        if rc == 0:
            return
    shutil.copytree(src, tree, symlinks=True)


def configure_tree(arch: str, tree: Path, logf: Path, jobs: int) -> bool:
    """Run make autotools and ./configure for `arch` in `tree` unless already done."""
    if (tree / "include" / "mk" / "config.mk").exists() and (tree / "config.status").exists():
        return True
    if not (tree / "configure").exists():
        if sh(["make", "autotools"], tree, logf) != 0:
            return False
    tc = toolchain(arch)
    cmd = ["./configure", f"CC={tc['cc']}", "LDFLAGS=-static"]
    if tc["host"]:
        cmd.insert(1, f"--host={tc['host']}")
    return sh(cmd, tree, logf) == 0


def list_binaries(d: Path) -> list[str]:
    """Return the names of the ELF executables directly inside directory `d`."""
    out = []
    for p in sorted(d.iterdir()) if d.is_dir() else []:
        if p.is_file() and os.access(p, os.X_OK):
            with open(p, "rb") as fh:
                if fh.read(4) == b"\x7fELF":
                    out.append(p.name)
    return out


def parse_runtest(path: Path) -> list[tuple[str, list[str]]]:
    """Parse an LTP runtest file into (tag, argv) pairs, skipping comments."""
    entries = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) >= 2:
            entries.append((parts[0], parts[1:]))
    return entries


def static_scope(dirpath: Path, binary: str) -> Optional[str]:
    """Return why test `binary` is out of scope from its C source, or None if in scope."""
    src = dirpath / f"{binary}.c"
    if not src.exists():
        src = dirpath / f"{re.sub(r'_(64|16)$', '', binary)}.c"
    if not src.exists():
        return None
    text = src.read_text(errors="replace")
    for pat, why in STATIC_OUT_OF_SCOPE:
        if re.search(pat, text):
            return why
    return None


def build_arch(arch: str, src: Path, out: Path, jobs: int, dirs: list[str]) -> dict[str, Any]:
    """Configure and build LTP's library and the in-scope test directories for `arch`."""
    tree = out / arch / "src"
    logdir = out / arch / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    mainlog = logdir / "configure.log"
    t0 = time.time()
    prepare_tree(src, tree, mainlog)
    info: dict[str, Any] = {"arch": arch, "tree": str(tree), "dirs": {}, "tests": []}
    if not configure_tree(arch, tree, mainlog, jobs):
        info["error"] = f"configure failed, see {mainlog}"
        return info
    liblog = logdir / "lib.log"
    if sh(["make", f"-j{jobs}", "-C", "lib"], tree, liblog) != 0:
        info["error"] = f"building lib/ failed, see {liblog}"
        return info
    bar = Progress(len(dirs), f"build {arch}")
    for d in dirs:
        dpath = tree / "testcases/kernel/syscalls" / d
        dlog = logdir / f"{d}.log"
        if not dpath.is_dir():
            info["dirs"][d] = {"status": "missing", "log": str(dlog)}
            bar.step(d)
            continue
        rc = sh(["make", f"-j{jobs}", "-k", "-C", str(dpath)], tree, dlog)
        bins = list_binaries(dpath)
        info["dirs"][d] = {"status": "ok" if rc == 0 else ("partial" if bins else "failed"),
                           "rc": rc, "log": str(dlog), "binaries": bins}
        bar.step(d)
    bar.close()
    # Map runtest/syscalls entries onto the binaries we built.
    where = {b: d for d, v in info["dirs"].items() for b in v.get("binaries", [])}
    for tag, argv in parse_runtest(tree / "runtest" / "syscalls"):
        b = argv[0]
        if b not in where:
            continue
        d = where[b]
        dpath = tree / "testcases/kernel/syscalls" / d
        info["tests"].append({"test": tag, "dir": d, "family": DIR_FAMILY.get(d, "?"),
                              "binary": b, "argv": argv,
                              "out_of_scope": static_scope(dpath, b)})
    info["seconds"] = round(time.time() - t0, 1)
    return info


def cmd_build(a: argparse.Namespace) -> int:
    """Entry point of `ltp.py build`."""
    src = Path(a.src).resolve()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if str(out).startswith(str(REPO) + os.sep):
        log("refusing to build inside the emu checkout (LTP code must not be committed)")
        return 2
    ensure_build_deps()
    arches = ARCHES if a.arch == "both" else (a.arch,)
    dirs = IN_SCOPE_DIRS if not a.dirs else a.dirs.split(",")
    manifest_path = out / "build.json"
    manifest: dict[str, Any] = {}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
    manifest.update({"src": str(src), "out": str(out), "command": shlex.join(sys.argv)})
    manifest.setdefault("arches", {})
    for arch in arches:
        log(f"== building LTP for {arch} in {out / arch}")
        info = build_arch(arch, src, out, a.jobs, dirs)
        manifest["arches"][arch] = info
        manifest_path.write_text(json.dumps(manifest, indent=1))
        bad = [d for d, v in info["dirs"].items() if v["status"] != "ok"]
        log(f"{arch}: {len(info['tests'])} runtest entries built; "
            f"{len(bad)} dirs not fully built: {' '.join(bad)}"
            + (f"; ERROR {info['error']}" if "error" in info else ""))
    log(f"wrote {manifest_path}")
    return 0


# --------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------

KEEP_LINE = re.compile(r"TFAIL|TBROK|TWARN|TCONF|^emu:|Traceback|Error|error:|"
                       r"unimplemented|deadlock|Summary|timed out|Killed", re.I)


def digest_output(text: str, limit: int = 6000) -> str:
    """Keep the informative lines of a test's output plus its tail, within `limit` chars."""
    lines = text.splitlines()
    keep = [ln for ln in lines if KEEP_LINE.search(ln)]
    tail = lines[-25:]
    body = "\n".join(dict.fromkeys(keep[:120] + ["-- tail --"] + tail))
    return body[:limit]


# A minimal static /bin/sh for the emu root: LTP's safe_cp() runs system("cp \"A\" \"B\"").
MINI_SH_C = r"""
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
static int words(char *s, char **w, int max) {
    int n = 0;
    while (*s && n < max) {
        while (*s == ' ') s++;
        if (!*s) break;
        char *o = s, *start = s;
        while (*s && *s != ' ') {
            if (*s == '"' || *s == '\'') {
                char q = *s++;
                while (*s && *s != q) *o++ = *s++;
                if (*s) s++;
            } else *o++ = *s++;
        }
        if (*s) s++;
        *o = 0;
        w[n++] = start;
    }
    return n;
}
static int cp(const char *src, const char *dst) {
    char path[4096];
    int in = open(src, O_RDONLY), out;
    if (in < 0) return 1;
    out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0755);
    if (out < 0) {
        const char *b = strrchr(src, '/');
        b = b ? b + 1 : src;
        if (strlen(dst) + strlen(b) + 2 > sizeof(path)) return 1;
        strcpy(path, dst); strcat(path, "/"); strcat(path, b);
        out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0755);
        if (out < 0) return 1;
    }
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        if (write(out, buf, n) != n) return 1;
    return n < 0 || close(out) != 0;
}
int main(int argc, char **argv) {
    char *w[16];
    if (argc < 3 || strcmp(argv[1], "-c") != 0) return 127;
    int n = words(argv[2], w, 16);
    if (n == 3 && strcmp(w[0], "cp") == 0) return cp(w[1], w[2]);
    if (n >= 1 && strcmp(w[0], "true") == 0) return 0;
    return 127;
}
"""


def mini_sh(build: Path, arch: str) -> Optional[Path]:
    """Compile (once) the minimal static /bin/sh for `arch` into the build directory."""
    exe = build / arch / "mini-sh"
    with _MINI_SH_LOCK:
        return _mini_sh_locked(build, arch, exe)


_MINI_SH_LOCK = threading.Lock()


def _mini_sh_locked(build: Path, arch: str, exe: Path) -> Optional[Path]:
    """Compile the minimal /bin/sh to `exe` unless it exists (caller holds the lock)."""
    if exe.exists():
        return exe
    src = build / f"mini-sh-{arch}.c"
    src.write_text(MINI_SH_C)
    cc = toolchain(arch)["cc"]
    if subprocess.run([cc, "-static", "-O2", "-o", str(exe), str(src)]).returncode != 0:
        return None
    return exe


def make_root(tree: Path, test: dict[str, Any], arch: str) -> Path:
    """Create a fresh temporary root holding the test's directory under /testcases/bin."""
    root = Path(tempfile.mkdtemp(prefix=f"ltp-{arch}-{test['test']}-", dir="/tmp"))
    bindir = root / "testcases" / "bin"
    bindir.mkdir(parents=True)
    for sub in ("tmp", "bin", "dev/shm", "etc"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    dpath = tree / "testcases/kernel/syscalls" / test["dir"]
    for p in dpath.iterdir():
        if p.is_file() and not re.search(r"\.(c|h|o|d|mk|in)$|^Makefile|^\.", p.name):
            shutil.copy2(p, bindir / p.name)
        elif p.is_dir() and p.name == "datafiles":
            shutil.copytree(p, root / "testcases" / "data" / test["test"])
            shutil.copytree(p, bindir / "datafiles")
    # LTP looks users and groups up (nobody, bin, daemon) for the uid tests.
    for f in ("passwd", "group"):
        if os.path.exists(f"/etc/{f}"):
            shutil.copy2(f"/etc/{f}", root / "etc" / f)
    busybox = REPO / ".cache" / "guests" / arch / "busybox"    # (tools/setup.sh fetches it)
    if busybox.exists():        # a real static shell and the commands tests run (/bin/true)
        shutil.copy2(busybox, root / "bin" / "busybox")
        for applet in BUSYBOX_APPLETS:
            os.symlink("busybox", root / "bin" / applet)
    elif (sh_exe := mini_sh(tree.parent.parent, arch)) is not None:
        shutil.copy2(sh_exe, root / "bin" / "sh")
    return root


BUSYBOX_APPLETS = ("sh", "true", "false", "cp", "cat", "echo", "ls", "rm", "mkdir", "sleep", "zcat",
                   "gzip")


def runner_cmd(runner: str, arch: str, root: Path, test: dict[str, Any],
               emu_python: str, emu_args: list[str]) -> tuple[list[str], dict[str, str], str]:
    """Return (argv, environment, cwd) to run `test` under `runner` in `root`."""
    binpath = root / "testcases" / "bin" / test["binary"]
    args = test["argv"][1:]
    base = {"TMPDIR": "/tmp", "LTP_COLORIZE_OUTPUT": "0", "LANG": "C"}
    if runner == "emu":
        genv = dict(base, PATH="/testcases/bin:/bin", LTPROOT="/", HOME="/")
        argv = [emu_python, "-m", "emu", "run", "--root", str(root), *emu_args]
        for k, v in genv.items():
            argv += ["-E", f"{k}={v}"]
        argv += [str(binpath), *args]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        return argv, env, "/"
    env = dict(base, PATH=f"{root}/testcases/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               LTPROOT=str(root), HOME=str(root))
    if runner == "native":
        return [str(binpath), *args], env, str(root)
    return [f"qemu-{arch}", str(binpath), *args], env, str(root)


def classify_rc(rc: Optional[int], runner: str, timed_out: bool, output: str) -> str:
    """Map an exit status onto pass/conf/fail/broken/warn/timeout/signal/emu-error."""
    if timed_out:
        return "timeout"
    assert rc is not None
    if rc < 0:
        return f"signal{-rc}"
    if runner == "emu" and rc == 125:
        return "emu-error"
    if runner == "emu" and rc > 128 and rc - 128 < 65:
        return f"signal{rc - 128}"
    if rc in LTP_EXIT:
        return LTP_EXIT[rc]
    if rc & 2:
        return "broken"
    if rc & 1:
        return "fail"
    if rc & 4:
        return "warn"
    return f"rc{rc}"


def run_one(tree: Path, arch: str, runner: str, test: dict[str, Any], timeout: float,
            emu_python: str, emu_args: list[str], keep: bool) -> dict[str, Any]:
    """Run one test under one runner in a fresh root; return its result record."""
    root = make_root(tree, test, arch)
    argv, env, cwd = runner_cmd(runner, arch, root, test, emu_python, emu_args)
    t0 = time.time()
    timed_out = False
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            out = b""
    else:
        # Reap anything the test left behind in its own session.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    dur = time.time() - t0
    text = out.decode(errors="replace")
    status = classify_rc(proc.returncode, runner, timed_out, text)
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    return {"arch": arch, "runner": runner, "test": test["test"], "dir": test["dir"],
            "family": test["family"], "binary": test["binary"], "argv": test["argv"],
            "out_of_scope": test.get("out_of_scope"), "status": status,
            "rc": proc.returncode, "seconds": round(dur, 2),
            "command": shlex.join(argv), "output": digest_output(text)}


def result_key(r: dict[str, Any]) -> tuple[str, str, str]:
    """Key of a result: (arch, test, runner)."""
    return (r["arch"], r["test"], r["runner"])


def write_results(path: Path, meta: dict[str, Any], results: dict[tuple, dict],
                  table: Optional[Path] = None) -> None:
    """Write all results to `path` as JSON and a markdown table (default: next to it)."""
    rows = sorted(results.values(), key=lambda r: (r["arch"], r["family"], r["test"],
                                                   RUNNERS.index(r["runner"])))
    data = {"meta": meta, "counts": count_results(rows), "results": rows}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
    (table or path.with_suffix(".md")).write_text(results_table(rows, data["counts"]))


def count_results(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, int]]]:
    """Count statuses per arch per runner."""
    c: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for r in rows:
        c[r["arch"]][r["runner"]][r["status"]] += 1
        c[r["arch"]][r["runner"]]["total"] += 1
    return {a: {rn: dict(v) for rn, v in d.items()} for a, d in c.items()}


def results_table(rows: list[dict[str, Any]], counts: dict[str, Any]) -> str:
    """Render results as markdown: counts per runner per arch, then one row per test."""
    out = ["# LTP results", "", "| arch | runner | total | pass | conf | fail | broken |"
           " warn | timeout | skipped (out of scope) | other |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for arch, d in sorted(counts.items()):
        for rn in RUNNERS:
            if rn not in d:
                continue
            v = d[rn]
            known = sum(v.get(k, 0) for k in ("pass", "conf", "fail", "broken", "warn",
                                               "timeout", "skipped"))
            out.append(f"| {arch} | {rn} | {v['total']} | {v.get('pass', 0)} | "
                       f"{v.get('conf', 0)} | {v.get('fail', 0)} | {v.get('broken', 0)} | "
                       f"{v.get('warn', 0)} | {v.get('timeout', 0)} | {v.get('skipped', 0)} | "
                       f"{v['total'] - known} |")
    out += ["", "| arch | test | dir | native | qemu | emu |", "|---|---|---|---|---|---|"]
    by: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    meta: dict[tuple[str, str], dict] = {}
    for r in rows:
        by[(r["arch"], r["test"])][r["runner"]] = r
        meta[(r["arch"], r["test"])] = r
    for key in sorted(by):
        m = meta[key]
        cells = [by[key][rn]["status"] if rn in by[key] else "-" for rn in RUNNERS]
        out.append(f"| {key[0]} | {key[1]} | {m['dir']} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def cmd_run(a: argparse.Namespace) -> int:
    """Entry point of `ltp.py run`."""
    build = Path(a.build).resolve()
    bj = json.loads((build / "build.json").read_text())
    arches = ARCHES if a.arch == "both" else (a.arch,)
    runners = RUNNERS if a.runner == "all" else tuple(a.runner.split(","))
    outp = Path(a.out).resolve()
    table = Path(a.table).resolve() if a.table else None
    results: dict[tuple, dict] = {}
    if outp.exists():
        for r in json.loads(outp.read_text()).get("results", []):
            results[result_key(r)] = r
    pat = re.compile(a.tests) if a.tests else None
    jobs: list[tuple[Path, str, str, dict]] = []
    for arch in arches:
        info = bj["arches"].get(arch)
        if not info:
            log(f"no build for {arch}; skipping")
            continue
        tree = Path(info["tree"])
        for t in info["tests"]:
            if pat and not pat.search(t["test"]):
                continue
            # Re-derive the static scope so that rule changes need no rebuild.
            t = dict(t, out_of_scope=static_scope(
                tree / "testcases/kernel/syscalls" / t["dir"], t["binary"]))
            for rn in runners:
                if rn == "native" and arch != os.uname().machine:
                    continue
                if rn != "emu" and t["test"] in CHANGES_THE_HOST:
                    continue            # qemu-user passes clock_settime to the host too
                if a.skip_out_of_scope and t.get("out_of_scope"):
                    results[(arch, t["test"], rn)] = {
                        "arch": arch, "runner": rn, "test": t["test"], "dir": t["dir"],
                        "family": t["family"], "binary": t["binary"], "argv": t["argv"],
                        "out_of_scope": t["out_of_scope"], "status": "skipped", "rc": None,
                        "seconds": 0.0, "command": "", "output": ""}
                    continue
                key = (arch, t["test"], rn)
                if a.resume and key in results:
                    continue
                if a.only_status and key in results and \
                        not re.fullmatch(a.only_status, results[key]["status"]):
                    continue
                jobs.append((tree, arch, rn, t))
    # Slow runners first so the pool drains evenly.
    jobs.sort(key=lambda j: {"emu": 0, "qemu": 1, "native": 2}[j[2]])
    meta = {"command": shlex.join([sys.executable, *sys.argv]),
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "timeout": a.timeout, "jobs": a.jobs, "emu_args": a.emu_arg,
            "emu_revision": emu_revision(), "build": str(build),
            "ltp_revision": bj.get("ltp_revision") or ltp_revision(bj)}
    log(f"{len(jobs)} runs ({', '.join(runners)} on {', '.join(arches)}), "
        f"timeout {a.timeout}s, {a.jobs} jobs -> {outp}")
    bar = Progress(len(jobs), "run")
    lock = threading.Lock()
    last_write = [time.time()]

    def done(r: dict[str, Any]) -> None:
        """Store one finished result, saving the files every 30 s."""
        with lock:
            results[result_key(r)] = r
            if time.time() - last_write[0] > 30:
                write_results(outp, meta, results, table)
                last_write[0] = time.time()
        bar.step(f"{r['arch']} {r['runner']} {r['test']}: {r['status']} ({r['seconds']}s)")

    with concurrent.futures.ThreadPoolExecutor(max_workers=a.jobs) as pool:
        futs = [pool.submit(run_one, tree, arch, rn, t, a.timeout, a.emu_python,
                            a.emu_arg, a.keep) for tree, arch, rn, t in jobs]
        for f in concurrent.futures.as_completed(futs):
            done(f.result())
    bar.close()
    write_results(outp, meta, results, table)
    counts = count_results(list(results.values()))
    for arch, d in sorted(counts.items()):
        for rn, v in d.items():
            log(f"{arch} {rn}: " + ", ".join(f"{k} {n}" for k, n in sorted(v.items())))
    log(f"wrote {outp} and {table or outp.with_suffix('.md')}")
    return 0


def emu_revision() -> str:
    """Return the emu checkout's git revision, with '+dirty' when its tree is modified."""
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "emu"],
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except OSError:
        return "?"


def ltp_revision(bj: dict[str, Any]) -> str:
    """Return the LTP source revision the build used."""
    for info in bj.get("arches", {}).values():
        try:
            return subprocess.run(["git", "-C", info["tree"], "log", "-1",
                                   "--format=%h %s"], capture_output=True,
                                  text=True).stdout.strip()
        except OSError:
            pass
    return "?"


# --------------------------------------------------------------------------------------
# manifest
# --------------------------------------------------------------------------------------

NOISE_SYSCALLS = {"socket", "connect"}
RE_UNIMPL = re.compile(r"emu: unimplemented system call (\S+)")
RE_PATH = re.compile(r"(/(?:proc|dev|sys)/[\w./\-]*)")


def first_line(out: str, tags: Iterable[str]) -> Optional[str]:
    """Return the first output line containing one of `tags`, trimmed."""
    for ln in out.splitlines():
        if any(t in ln for t in tags):
            return ln.strip()[:240]
    return None


def strip_loc(line: str) -> str:
    """Drop the 'file.c:123: ' prefix from an LTP result line."""
    return re.sub(r"^\S+\.[ch]:\d+:\s*", "", line)


SYSCALL_HEADERS = {
    "x86_64": ["/usr/include/x86_64-linux-gnu/asm/unistd_64.h"],
    "aarch64": ["/usr/aarch64-linux-gnu/include/asm-generic/unistd.h"],
}
_SYSCALL_NAMES: dict[str, dict[int, str]] = {}


def syscall_names(arch: str) -> dict[int, str]:
    """Return {number: name} of `arch`'s system calls, read from the kernel headers."""
    if arch not in _SYSCALL_NAMES:
        names: dict[int, str] = {}
        for h in SYSCALL_HEADERS.get(arch, []):
            if os.path.exists(h):
                text = Path(h).read_text(errors="replace")
                for m in re.finditer(r"#define __NR(?:3264)?_(\w+)\s+(\d+)\b", text):
                    names.setdefault(int(m.group(2)), m.group(1))
        _SYSCALL_NAMES[arch] = names
    return _SYSCALL_NAMES[arch]


def syscall_label(arch: str, name: str) -> str:
    """Turn emu's 'syscall_N' into the syscall's name for `arch` (other names unchanged)."""
    m = re.fullmatch(r"syscall_(\d+)", name)
    if not m:
        return name
    return syscall_names(arch).get(int(m.group(1)), name)


def classify_failure(r: dict[str, Any]) -> tuple[str, str]:
    """Return (cause, detail) explaining why the emu result `r` is not a pass."""
    out = r.get("output", "")
    st = r["status"]
    unimpl = list(dict.fromkeys(syscall_label(r["arch"], n) for n in RE_UNIMPL.findall(out)))
    bad = first_line(out, ("TBROK", "TFAIL")) or ""
    detail = strip_loc(bad)
    if "Traceback" in out or st == "emu-error" or re.search(r"emu: (internal|error)", out):
        last = first_line(out, ("Error:", "error:", "emu:")) or st
        return (f"emulator error: {last[:120]}", detail or last)
    # glibc's static getpwnam() tries nscd over a socket first; that ENOSYS is harmless.
    real = [n for n in unimpl if n not in NOISE_SYSCALLS]
    if unimpl:
        detail = (detail + " " if detail else "") + f"[unimplemented: {', '.join(unimpl)}]"
    if "Failed to acquire device" in bad:
        return ("needs a block device (loop device)", detail)
    if "kernel .config" in bad or "config.gz" in bad:
        return ("missing /proc or /dev file /proc/config.gz", detail)
    named = [n for n in unimpl if re.search(rf"\b{re.escape(n)}\b", bad)]
    if not named and "ENOSYS" in bad:
        named = real[:1] or unimpl[:1]
    if named or (real and (not bad or st in ("timeout", "emu-error")
                           or st.startswith("signal"))):
        return (f"missing syscall {(named or real)[0]}", detail)
    if "deadlock" in out.lower():
        dl = first_line(out, ("deadlock",)) or ""
        state = re.search(r"blocked \(tid \d+ (\w+)", dl)
        return (f"deadlock reported by emu (a thread blocked in {state.group(1) if state else '?'})",
                (detail + " " if detail else "") + dl)
    if st == "timeout":
        return ("timeout/hang", detail or f"no exit within {r.get('seconds')} s")
    if st.startswith("signal"):
        return (f"killed by {st}", detail or st)
    if st == "conf":
        c = strip_loc(first_line(out, ("TCONF",)) or "TCONF")
        c = re.sub(r"\d+", "N", c)[:110]
        return (f"TCONF under emu only: {c}", strip_loc(first_line(out, ("TCONF",)) or ""))
    m = RE_PATH.search(bad)
    if m and re.search(r"ENOENT|No such file|Failed to open|open\(", bad):
        return (f"missing /proc or /dev file {m.group(1)}", detail)
    if re.search(r"EPERM|EACCES|CAP_|capabilit|root", bad):
        return ("needs root/capability or wrong permission check", detail)
    if "tst_checkpoint" in bad:
        return ("LTP checkpoint (futex on a MAP_SHARED page across processes) timed out",
                detail)
    if "Failed to copy" in bad:
        return ("harness: resource copy via system(\"cp\") failed", detail)
    m = re.search(r"TBROK: (?:SAFE_)?(\w+)\(.*failed: (E[A-Z0-9]+)", bad)
    if m:
        return (f"setup call {m.group(1)}() fails with {m.group(2)}", detail)
    if bad:
        # Group by the syscall/case named in the line, with numbers normalised.
        norm = re.sub(r"0x[0-9a-f]+|\d+", "N", strip_loc(bad))
        norm = re.sub(r"'[^']*'|\"[^\"]*\"", "S", norm)
        kind = "wrong errno" if re.search(r"expected.*\bE[A-Z]{3,}|\bE[A-Z]{3,}.*expected|"
                                          r"errno", detail) else "wrong result"
        return (f"{kind}: {norm[:110]}", detail)
    return (f"status {st} without TFAIL/TBROK line", (out.strip().splitlines() or [""])[-1][:200])


def scope_of(test_rows: dict[str, dict[str, Any]], arch: str) -> Optional[str]:
    """Return why a test is out of scope on `arch` (static reason or TCONF natively), else None."""
    any_r = next(iter(test_rows.values()))
    if any_r.get("out_of_scope"):
        return any_r["out_of_scope"]
    if arch != "x86_64" and "qemu" in test_rows and "native" not in test_rows and \
            test_rows["qemu"]["status"] == "conf":
        return "TCONF under qemu-user"
    refs = [test_rows[rn]["status"] for rn in ("native", "qemu") if rn in test_rows]
    if refs and all(s == "conf" for s in refs):
        return "TCONF under native and qemu"
    return None


def cmd_manifest(a: argparse.Namespace) -> int:
    """Entry point of `ltp.py manifest`."""
    data = json.loads(Path(a.results).read_text())
    rows = data["results"]
    meta = data.get("meta", {})
    by: dict[str, dict[str, dict[str, dict]]] = defaultdict(lambda: defaultdict(dict))
    trees = {}
    if meta.get("build") and Path(meta["build"], "build.json").exists():
        bj = json.loads(Path(meta["build"], "build.json").read_text())
        trees = {arch: Path(i["tree"]) for arch, i in bj.get("arches", {}).items()}
    for r in rows:
        if r["arch"] in trees:  # re-derive the static scope with the current rules
            r["out_of_scope"] = static_scope(
                trees[r["arch"]] / "testcases/kernel/syscalls" / r["dir"], r["binary"])
        by[r["arch"]][r["test"]][r["runner"]] = r
    lines = ["# LTP syscall tests under emu", "",
             "Generated by `tools/ltp.py manifest`; do not edit by hand.", "",
             f"- Results: `{a.results}` ({len(rows)} runs)",
             f"- Run command: `{meta.get('command', '?')}`",
             f"- Run date: {meta.get('date', '?')}; manifest written "
             f"{_dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
             f"- Manifest command: `{shlex.join([os.path.basename(sys.executable), *sys.argv])}`",
             f"- LTP revision: {meta.get('ltp_revision', '?')}; emu revision: "
             f"{meta.get('emu_revision', '?')}; per-test timeout {meta.get('timeout', '?')} s",
             "",
             "Scope: the memory, process, signal, file and time syscall directories of "
             "`testcases/kernel/syscalls` (see `FAMILIES` in `tools/ltp.py`), every "
             "`runtest/syscalls` entry whose binary they build. A test is out of scope when "
             "its source needs a block device, modules, kernel configs, host commands, "
             "hugetlbfs or networking, or when it reports TCONF under both native and "
             "qemu-user (on AArch64, under qemu-user alone).", "",
             "Reproduce: `python3 tools/ltp.py build --src LTP_SRC --out /tmp/ltp-build "
             "--arch both`, then `python3 tools/ltp.py run --build /tmp/ltp-build --arch both "
             "--runner all --jobs 2 --out docs/ltp_results.json`, then "
             "`python3 tools/ltp.py manifest --results docs/ltp_results.json -o docs/LTP.md`.",
             ""]
    lines += ["## Pass counts", "",
              "| arch | runner | runs | pass | TCONF | fail | broken | warn | timeout | "
              "skipped (out of scope) | other (signal, emu error) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    counts = count_results(rows)
    for arch in sorted(counts):
        for rn in RUNNERS:
            v = counts[arch].get(rn)
            if not v:
                continue
            known = sum(v.get(k, 0) for k in ("pass", "conf", "fail", "broken", "warn",
                                               "timeout", "skipped"))
            lines.append(f"| {arch} | {rn} | {v['total']} | {v.get('pass', 0)} | "
                         f"{v.get('conf', 0)} | {v.get('fail', 0)} | {v.get('broken', 0)} |"
                         f" {v.get('warn', 0)} | {v.get('timeout', 0)} | "
                         f"{v.get('skipped', 0)} | {v['total'] - known} |")
    lines += ["", "## Target", ""]
    failures: list[tuple[str, str, str, str, str]] = []
    scope_rows: list[str] = []
    summary = {}
    for arch in sorted(by):
        tests = by[arch]
        in_scope = {t: rr for t, rr in tests.items() if scope_of(rr, arch) is None}
        oos = Counter(scope_of(rr, arch) for rr in tests.values() if scope_of(rr, arch))
        qpass = [t for t, rr in in_scope.items() if rr.get("qemu", {}).get("status") == "pass"]
        epass = [t for t in qpass if in_scope[t].get("emu", {}).get("status") == "pass"]
        npass = [t for t, rr in in_scope.items() if rr.get("native", {}).get("status") == "pass"]
        emu_any = [t for t, rr in in_scope.items() if rr.get("emu", {}).get("status") == "pass"]
        pct = 100.0 * len(epass) / len(qpass) if qpass else 0.0
        summary[arch] = (len(qpass), len(epass), pct)
        erun = [t for t in qpass if "emu" in in_scope[t]]
        partial = "" if len(erun) == len(qpass) else (
            f" **Incomplete:** only {len(erun)} of the {len(qpass)} have an emu result so "
            f"far; {len(epass)}/{len(erun)} = "
            f"{100.0 * len(epass) / len(erun) if erun else 0:.1f} % of those run. Continue "
            "with `tools/ltp.py run ... --runner emu --resume`.")
        lines.append(f"- **{arch}**: in-scope LTP tests that pass under qemu-user: "
                     f"**{len(qpass)}**; of those pass under emu: **{len(epass)} "
                     f"({pct:.1f} %)**. ({len(tests)} runtest entries, {len(in_scope)} in "
                     "scope; " + (f"native passes {len(npass)}; " if npass else "")
                     + f"emu passes {len(emu_any)} in scope in all.){partial}")
        lines.append("  Out of scope: " + "; ".join(f"{why}: {n}" for why, n in
                                                   oos.most_common()))
        for t in sorted(qpass):
            e = in_scope[t].get("emu")
            if e is None:
                failures.append((arch, t, "not (yet) run under emu", "", ""))
            elif e["status"] != "pass":
                cause, detail = classify_failure(e)
                failures.append((arch, t, cause, e["status"], detail))
        for t, rr in sorted(tests.items()):
            why = scope_of(rr, arch)
            if why:
                scope_rows.append(f"| {arch} | {t} | {why} |")
    lines += ["", "## Causes of emu failures (tests passing under qemu-user)", "",
              "| cause | tests | arches | examples |", "|---|---|---|---|"]
    causes: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for arch, t, cause, st, detail in failures:
        causes[cause].append((arch, t))
    for cause, lst in sorted(causes.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        names = list(dict.fromkeys(t for _, t in lst))
        arches = ",".join(sorted({a_ for a_, _ in lst}))
        lines.append(f"| {md(cause)} | {len(lst)} | {arches} | {', '.join(names[:4])}"
                     f"{' ...' if len(names) > 4 else ''} |")
    lines += ["", "## Every test that passes under qemu-user but not under emu", "",
              "| arch | test | emu status | reason | first TFAIL/TBROK line / detail |",
              "|---|---|---|---|---|"]
    for arch, t, cause, st, detail in failures:
        lines.append(f"| {arch} | {t} | {st} | {md(cause)} | {md(detail)} |")
    lines += ["", "## Out-of-scope tests", "", "| arch | test | reason |", "|---|---|---|"]
    lines += scope_rows
    Path(a.o).parent.mkdir(parents=True, exist_ok=True)
    Path(a.o).write_text("\n".join(lines) + "\n")
    for arch, (q, e, p) in summary.items():
        log(f"{arch}: qemu passes {q}; emu passes {e} of those ({p:.1f} %)")
    log(f"wrote {a.o}")
    return 0


def cmd_merge(a: argparse.Namespace) -> int:
    """Entry point of `ltp.py merge`: combine result files, later files winning."""
    results: dict[tuple, dict] = {}
    metas = []
    for f in a.inputs:
        d = json.loads(Path(f).read_text())
        metas.append(d.get("meta", {}))
        for r in d.get("results", []):
            results[result_key(r)] = r
    meta = dict(metas[-1]) if metas else {}
    meta["command"] = " ; ".join(dict.fromkeys(m.get("command", "?") for m in metas))
    meta["date"] = " / ".join(dict.fromkeys(m.get("date", "?") for m in metas))
    meta["merged_from"] = [str(f) for f in a.inputs]
    write_results(Path(a.o), meta, results, Path(a.table) if a.table else None)
    log(f"wrote {a.o} ({len(results)} results)")
    return 0


def md(s: str) -> str:
    """Escape a string for a markdown table cell."""
    return s.replace("|", "\\|").replace("\n", " ")


# --------------------------------------------------------------------------------------

def main(argv: Optional[list[str]] = None) -> int:
    """Parse the command line and dispatch to a subcommand."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sp = p.add_subparsers(dest="cmd", required=True)
    b = sp.add_parser("build", help="configure and build LTP statically")
    b.add_argument("--src", required=True, help="LTP source directory (or git repository)")
    b.add_argument("--out", default="/tmp/ltp-build", help="build directory (outside emu)")
    b.add_argument("--arch", choices=[*ARCHES, "both"], default="both")
    b.add_argument("--jobs", "-j", type=int, default=2)
    b.add_argument("--dirs", help="comma-separated syscall directories (default: all in scope)")
    b.set_defaults(fn=cmd_build)
    r = sp.add_parser("run", help="run the built tests")
    r.add_argument("--build", required=True, help="the --out directory of `build`")
    r.add_argument("--arch", choices=[*ARCHES, "both"], default="both")
    r.add_argument("--runner", default="all",
                   help="native|qemu|emu|all, or a comma-separated list")
    r.add_argument("--timeout", type=float, default=60.0, help="per-test timeout, seconds")
    r.add_argument("--jobs", type=int, default=2)
    r.add_argument("--out", default="docs/ltp_results.json",
                   help="JSON results (merged with an existing file); a .md table is "
                        "written next to it")
    r.add_argument("--table", help="markdown table path (default: --out with .md)")
    r.add_argument("--tests", help="regular expression selecting test names")
    r.add_argument("--resume", action="store_true",
                   help="skip (arch, test, runner) runs already in --out")
    r.add_argument("--only-status", help="re-run only runs whose stored status matches "
                                         "this regular expression (e.g. 'fail|broken')")
    r.add_argument("--skip-out-of-scope", action="store_true",
                   help="do not run tests whose source puts them out of scope")
    r.add_argument("--emu-python", default=sys.executable, help="python that runs emu")
    r.add_argument("--emu-arg", action="append", default=[],
                   help="extra argument for `emu run` (repeatable), e.g. --emu-arg=--ram=1G")
    r.add_argument("--keep", action="store_true", help="keep each test's temporary root")
    r.set_defaults(fn=cmd_run)
    m = sp.add_parser("manifest", help="write docs/LTP.md from the results")
    m.add_argument("--results", required=True)
    m.add_argument("-o", required=True, help="output markdown file")
    m.set_defaults(fn=cmd_manifest)
    g = sp.add_parser("merge", help="merge result JSON files (later ones win)")
    g.add_argument("inputs", nargs="+")
    g.add_argument("-o", required=True)
    g.add_argument("--table", help="markdown table path (default: next to -o)")
    g.set_defaults(fn=cmd_merge)
    a = p.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
