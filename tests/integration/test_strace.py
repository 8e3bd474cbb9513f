"""`emu run --strace`: system calls with decoded arguments and results on stderr, as strace
shows them, and a traced run is the same run (identical --stats)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_emu

PROGRAM_C = r"""
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void on_usr1(int sig) { (void)sig; }

int main(void) {
    if (open("/no/such/file", O_RDONLY | O_CLOEXEC) >= 0) return 1;
    int fd = openat(AT_FDCWD, "/data.txt", O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (write(fd, "line\twith \"quotes\"\n\001\002", 21) != 21) return 2;
    char buf[64];
    lseek(fd, 0, SEEK_SET);
    if (read(fd, buf, sizeof buf) != 21) return 3;
    close(fd);
    void *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(p, 8192);
    signal(SIGUSR1, on_usr1);
    raise(SIGUSR1);
    int pipefd[2];
    if (pipe(pipefd) != 0) return 4;
    pid_t child = fork();
    if (child == 0) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
        write(pipefd[1], "x", 1);
        _exit(0);
    }
    char c;
    if (read(pipefd[0], &c, 1) != 1) return 5;       /* blocks until the child writes */
    waitpid(child, NULL, 0);
    printf("done\n");
    return 0;
}
"""


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """The strace lines of PROGRAM_C on each architecture that has a compiler."""
    out = {}
    for arch, cc in (("x86_64", "gcc"), ("aarch64", "aarch64-linux-gnu-gcc")):
        if shutil.which(cc) is None:
            continue
        d = tmp_path_factory.mktemp(f"strace-{arch}")
        (d / "prog.c").write_text(PROGRAM_C)
        subprocess.run([cc, "-static", "-O2", "-o", str(d / "prog"), str(d / "prog.c")],
                       check=True)
        run = run_emu("--strace", "--root", d, d / "prog")
        assert run.returncode == 0, run.stderr
        assert run.stdout == "done\n"
        out[arch] = run.stderr.splitlines()
    return out


def _lines(traced: dict[str, list[str]], arch: str) -> list[str]:
    if arch not in traced:
        pytest.skip(f"no compiler for {arch}")
    lines = traced[arch]
    assert all(line.startswith("[pid ") for line in lines), lines
    return [re.sub(r"^\[pid \d+\] ", "", line) for line in lines]


def test_open_write_read_and_errors(traced: dict[str, list[str]], arch: str) -> None:
    lines = _lines(traced, arch)
    assert 'openat(AT_FDCWD, "/no/such/file", O_RDONLY|O_CLOEXEC) = -1 ENOENT ' \
           "(No such file or directory)" in lines
    assert 'openat(AT_FDCWD, "/data.txt", O_RDWR|O_CREAT|O_TRUNC, 0644) = 3' in lines
    assert 'write(3, "line\\twith \\"quotes\\"\\n\\1\\2", 21) = 21' in lines
    assert "lseek(3, 0, SEEK_SET) = 0" in lines
    assert any(re.fullmatch(r"read\(3, 0x[0-9a-f]+, 64\) = 21", line) for line in lines)
    assert "close(3) = 0" in lines


def test_mmap_flags_signals_and_exit(traced: dict[str, list[str]], arch: str) -> None:
    lines = _lines(traced, arch)
    assert any(re.fullmatch(r"mmap\(NULL, 8192, PROT_READ\|PROT_WRITE, "
                            r"MAP_PRIVATE\|MAP_ANONYMOUS, -1, 0x0\) = 0x[0-9a-f]+", line)
               for line in lines)
    assert any(line.startswith("rt_sigaction(SIGUSR1, ") for line in lines)
    assert "--- SIGUSR1 {si_signo=SIGUSR1, si_code=SI_TKILL} ---" in lines
    assert "exit_group(0) = ?" in lines
    assert lines[-1] == "+++ exited with 0 +++"
    assert "--- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED} ---" in lines


def test_blocked_call_is_unfinished_then_resumed(traced: dict[str, list[str]], arch: str) -> None:
    lines = _lines(traced, arch)
    start = next(i for i, line in enumerate(lines)
                 if re.fullmatch(r"read\(\d+, 0x[0-9a-f]+, 1 <unfinished \.\.\.>", line))
    assert "<... read resumed>) = 1" in lines[start + 1:]
    assert any(line.startswith("clone(") or line.startswith("fork(") for line in lines[:start])


def test_tracing_does_not_change_the_run(firmware: Path, arch: str, tmp_path: Path) -> None:
    exe = firmware / arch / "fileio"
    root = tmp_path / "root"
    root.mkdir()
    plain = run_emu("--root", root, exe, "/a", stats_path=tmp_path / "plain.json")
    traced = run_emu("--strace", "--root", root, exe, "/b", stats_path=tmp_path / "traced.json")
    assert plain.returncode == traced.returncode == 0
    assert plain.stdout.replace("/a", "/b") == traced.stdout
    assert any(line.endswith("exit_group(0) = ?") for line in traced.stderr.splitlines())
    assert plain.stats is not None and traced.stats is not None
    for key in ("cycles", "instructions"):
        assert _find(plain.stats, key) == _find(traced.stats, key), key


def _find(report: object, key: str) -> object:
    """The first value named `key` anywhere in the --stats report."""
    if isinstance(report, dict):
        if key in report:
            return report[key]
        for value in report.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None
