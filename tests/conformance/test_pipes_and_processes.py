"""Semantics rows: pipes block only their thread (Linux's capacity, EOF, EPIPE/SIGPIPE, atomic
writes, poll/select/epoll), and processes start and end as libc and shells expect (posix_spawn
on a shared-memory vfork, SIGCHLD, interruptible wait, process groups and sessions).

Each case runs a firmware program on both guest architectures and compares what it prints
with the same program run natively on this x86-64 host, where Linux itself answers."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_emu

PIPE_MODES = ["threads", "capacity", "eof", "epipe", "big", "poll", "atomic", "eintr"]
SPAWN_MODES = ["sigchld", "wait-eintr", "groups"]


def _native(program: Path, *args: str) -> tuple[int, str]:
    done = subprocess.run([str(program), *args], capture_output=True, text=True, timeout=60)
    code = 128 - done.returncode if done.returncode < 0 else done.returncode   # killed: 128+N
    return code, done.stdout


def _emu(firmware: Path, arch: str, name: str, *args: str) -> tuple[int, str, str]:
    run = run_emu("--root", firmware, firmware / arch / name, *args)
    return run.returncode, run.stdout, run.stderr


CAPACITY_ON_LINUX = ("F_GETPIPE_SZ 65536\nfilled 65536 bytes, then EAGAIN\nshrink to 4096: EBUSY\n"
                     "grow to 100000: 131072\nwrite now 100\nF_GETPIPE_SZ on a file: EBADF\n"
                     "read of an empty pipe: EAGAIN\nlseek on a pipe: ESPIPE\n")


def _host_pipes_limited(firmware: Path) -> bool:
    """Whether this host gives one-page pipes now (its user went past pipe-user-pages-soft,
    e.g. while LTP runs beside the tests): its answers are then not Linux's defaults."""
    return not _native(firmware / "x86_64" / "pipes", "capacity")[1].startswith(
        "F_GETPIPE_SZ 65536")


@pytest.mark.parametrize("mode", PIPE_MODES)
def test_pipe_behaves_as_on_linux(firmware: Path, arch: str, mode: str) -> None:
    expected = _native(firmware / "x86_64" / "pipes", mode)
    if mode == "capacity" and _host_pipes_limited(firmware):
        expected = (0, CAPACITY_ON_LINUX)
    code, out, err = _emu(firmware, arch, "pipes", mode)
    assert (code, out) == expected, err
    assert "unimplemented" not in err and "deadlock" not in err


def test_pipe_outputs_are_what_linux_documents(firmware: Path) -> None:
    """The native answers themselves, so that the comparison above compares something."""
    if _host_pipes_limited(firmware):
        pytest.skip("this host's pipes are limited to one page now (pipe-user-pages-soft)")
    out = {mode: _native(firmware / "x86_64" / "pipes", mode)[1] for mode in PIPE_MODES}
    assert out["threads"] == "read 4 'late' after >= 10 ms\n"
    assert "F_GETPIPE_SZ 65536\nfilled 65536 bytes, then EAGAIN\n" in out["capacity"]
    assert "shrink to 4096: EBUSY\ngrow to 100000: 131072\nwrite now 100\n" in out["capacity"]
    assert out["eof"] == "read 'from child' then 0 (EOF)\n"
    assert out["epipe"] == "write: -1 EPIPE, SIGPIPE caught\n"   # then killed by SIGPIPE
    assert out["big"] == "received 1048576 bytes, 0 wrong, writer exited 0\n"
    assert out["atomic"] == "80 records, 0 mixed\n"
    assert out["eintr"] == ("without SA_RESTART: -1 EINTR\nthen: 2 'ok'\n"
                            "with SA_RESTART: 2 're'\n")


def test_sigpipe_kills_by_default(firmware: Path, arch: str) -> None:
    code, out, _ = _emu(firmware, arch, "pipes", "epipe")
    assert code == 128 + 13 and "still alive" not in out


@pytest.mark.parametrize("mode", SPAWN_MODES)
def test_process_calls_behave_as_on_linux(firmware: Path, arch: str, mode: str) -> None:
    expected = _native(firmware / "x86_64" / "spawn", mode)
    code, out, err = _emu(firmware, arch, "spawn", mode)
    assert (code, out) == expected, err
    assert "unimplemented" not in err


def test_posix_spawn_runs_the_child_on_its_own_stack(firmware: Path, arch: str) -> None:
    code, out, err = _emu(firmware, arch, "spawn", "posix_spawn", f"/{arch}/spawn")
    assert code == 0, err
    assert out == ("posix_spawn: ok\nhello from the spawned child\nchild exited 3\n"
                   "posix_spawn of a missing file: ENOENT\n")


FIFO_C = r"""
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    unlink("/fifo");
    if (mkfifo("/fifo", 0600)) { perror("mkfifo"); return 1; }
    int w = open("/fifo", O_WRONLY | O_NONBLOCK);
    printf("writer without reader: %s\n", w < 0 && errno == ENXIO ? "ENXIO" : "opened");
    int r = open("/fifo", O_RDONLY | O_NONBLOCK);
    printf("nonblocking reader: %s\n", r >= 0 ? "opened" : strerror(errno));
    close(r);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open("/fifo", O_WRONLY);
        write(fd, "through the fifo", 16);
        close(fd);
        _exit(0);
    }
    int fd = open("/fifo", O_RDONLY);
    char buf[64] = {0};
    ssize_t n, total = 0;
    while ((n = read(fd, buf + total, sizeof buf - 1 - total)) > 0) total += n;
    struct stat st;
    fstat(fd, &st);
    printf("read '%s', then EOF; S_ISFIFO %d\n", buf, S_ISFIFO(st.st_mode));
    waitpid(pid, NULL, 0);
    int rw = open("/fifo", O_RDWR);
    printf("O_RDWR: %s\n", rw >= 0 ? "opened" : strerror(errno));
    unlink("/fifo");
    return 0;
}
"""

SHARED_ANON_C = r"""
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fcntl.h>
int main(void){
  char *p = mmap(0, 1<<20, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_ANONYMOUS, -1, 0);
  p[0] = 1;
  int fd = open("/dev/zero", O_RDWR);
  char *z = mmap(0, 8192, PROT_READ|PROT_WRITE, MAP_SHARED, fd, 0);
  char *zp = mmap(0, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE, fd, 0);
  if (z == MAP_FAILED || zp == MAP_FAILED) { perror("mmap /dev/zero"); return 1; }
  zp[0] = 9;
  pid_t pid = fork();
  if (pid == 0) { p[0] = 2; p[4096] = 3; p[900000] = 4; z[100] = 5; zp[0] = 7; _exit(0); }
  waitpid(pid, 0, 0);
  printf("%d %d %d %d %d\n", p[0], p[4096], p[900000], z[100], zp[0]);
  for (int i = 0; i < 80; i++) { char *q = mmap(0, 1<<20, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_ANONYMOUS, -1, 0); for (int j = 0; j < 1<<20; j += 4096) q[j] = 1; munmap(q, 1<<20); }
  printf("80 MiB through shared mappings: ok\n");
  return 0;
}
"""


def _build(tmp_path: Path, arch: str, source: str, name: str) -> Path:
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    exe = root / name
    cc = "gcc" if arch == "x86_64" else "aarch64-linux-gnu-gcc"
    subprocess.run([cc, "-static", "-O2", "-w", "-o", str(exe), str(src)], check=True)
    return exe


def test_named_fifo(tmp_path: Path, arch: str) -> None:
    """A reader's open waits for a writer (in REPLY, the writer's process runs meanwhile);
    O_NONBLOCK writers get ENXIO without a reader; O_RDWR never waits."""
    exe = _build(tmp_path, arch, FIFO_C, "fifo")
    run = run_emu("--root", exe.parent, exe)
    assert (run.returncode, run.stdout) == (0, (
        "writer without reader: ENXIO\nnonblocking reader: opened\n"
        "read 'through the fifo', then EOF; S_ISFIFO 1\nO_RDWR: opened\n")), run.stderr
    assert not (exe.parent / "fifo").exists()


def test_shared_anonymous_memory_across_fork(tmp_path: Path, arch: str) -> None:
    """MAP_SHARED|MAP_ANONYMOUS and shared /dev/zero pages are shared with a forked child
    even when first touched after the fork; private /dev/zero is private; the frames of
    unmapped shared memory come back (80 MiB through 32 MiB of RAM)."""
    exe = _build(tmp_path, arch, SHARED_ANON_C, "shared")
    run = run_emu("--ram", "32M", "--root", exe.parent, exe)
    assert (run.returncode, run.stdout) == (
        0, "2 3 4 5 9\n80 MiB through shared mappings: ok\n"), run.stderr


KERNEL_COW_C = r"""
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>
static char data[3 * 4096] = {1, 2, 3};   /* file-backed .data: copy-on-write after fork */
int main(void) {
    struct stat st;
    fstat(1, &st);
    char *at = data + 2 * 4096 - 40;          /* a struct stat across a page boundary */
    at[8] = 5; at[100] = 6;                  /* the parent has its own copies of both pages */
    pid_t pid = fork();
    if (pid == 0) {
        volatile char a = at[8], b = at[100];  /* the CPU now caches both shared frames */
        fstat(1, (struct stat *)at);            /* the kernel writes: copies are made */
        struct stat got;
        memcpy(&got, at, sizeof got);
        printf("child: same inode %d, mode %d (were %d %d)\n", got.st_ino == st.st_ino,
               got.st_mode == st.st_mode, a, b);
        fflush(stdout);
        _exit(0);
    }
    waitpid(pid, NULL, 0);
    printf("parent keeps %d\n", at[100]);
    return 0;
}
"""


def test_a_system_call_writing_a_copy_on_write_page_is_seen(tmp_path: Path, arch: str) -> None:
    """A forked child reads two pages it shares copy-on-write with its parent (the CPU
    caches those frames), then fstat(2) writes a struct across them: the kernel makes the
    copies, and the child must see the new bytes, not the frames it cached (a copy drops
    the page's cached translations). Found by LTP's dup01."""
    exe = _build(tmp_path, arch, KERNEL_COW_C, "cowk")
    run = run_emu("--root", exe.parent, exe)
    assert (run.returncode, run.stdout) == (
        0, "child: same inode 1, mode 1 (were 5 6)\nparent keeps 6\n"), run.stderr
