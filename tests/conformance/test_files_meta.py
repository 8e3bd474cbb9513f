"""Semantics rows: file metadata: chown & co, utimensat & co, statfs, truncate, mknod, and
what cp -p does with them (the guest root's protection, /proc/self links and the memory
calls are in tests/integration/test_bad_input.py).

Each guest program is C compiled here for both architectures; it prints one line per call
with its result and errno, run under emu with a fresh --root. Where the program only uses
relative paths and nothing privileged, the same binary runs natively (x86-64) or under
qemu-user (AArch64) in a copy of the same directory, and the outputs must agree.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_emu

CC = {"x86_64": ["gcc"], "aarch64": ["aarch64-linux-gnu-gcc"]}
REFERENCE = {"x86_64": [], "aarch64": ["qemu-aarch64"]}
PRELUDE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>
static void show(const char *what, long r) {
    int e = errno;
    if (r < 0) printf("%s = %ld errno %d\n", what, r, e); else printf("%s = %ld\n", what, r);
    errno = 0;
}
#define T(call) show(#call, (long)(call))
"""


def build(tmp_path: Path, arch: str, name: str, source: str) -> Path:
    """`source` (after the prelude) compiled static for `arch` into tmp_path/name."""
    if shutil.which(CC[arch][0]) is None:
        pytest.skip(f"{CC[arch][0]} is not installed")
    src = tmp_path / f"{name}.c"
    src.write_text(PRELUDE + source)
    exe = tmp_path / f"{name}-{arch}"
    subprocess.run([*CC[arch], "-static", "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def reference(exe: Path, arch: str, cwd: Path) -> str:
    """stdout of the program run natively / under qemu-user in `cwd`."""
    if REFERENCE[arch] and shutil.which(REFERENCE[arch][0]) is None:
        pytest.skip(f"{REFERENCE[arch][0]} is not installed")
    return subprocess.run([*REFERENCE[arch], str(exe)], cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=True).stdout


def emu_out(exe: Path, root: Path, *options: str) -> str:
    """stdout of the program under emu with guest root `root` (exit 0, nothing on stderr
    but unimplemented-call notes)."""
    run = run_emu("--root", root, *options, exe)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    return run.stdout


# ---- chown ----

CHOWN = r"""
int main(void) {
    struct stat st;
    close(open("f", O_CREAT | O_WRONLY, 0644));
    mkdir("d", 0755);
    symlink("f", "l");
    T(chown("f", 1234, 5678));
    stat("f", &st); printf("f %d %d\n", st.st_uid, st.st_gid);
    T(chown("f", -1, 42));
    stat("f", &st); printf("f %d %d\n", st.st_uid, st.st_gid);
    int fd = open("f", O_RDONLY);
    T(fchown(fd, 7, -1));
    fstat(fd, &st); printf("fstat f %d %d\n", st.st_uid, st.st_gid);
    T(lchown("l", 11, 12));
    lstat("l", &st); printf("l %d %d\n", st.st_uid, st.st_gid);
    stat("l", &st); printf("l->f %d %d\n", st.st_uid, st.st_gid);
    T(fchownat(AT_FDCWD, "l", 13, 14, AT_SYMLINK_NOFOLLOW));
    lstat("l", &st); printf("l %d %d\n", st.st_uid, st.st_gid);
    T(chown("d", 1000, 1001));
    int dfd = open("d", O_RDONLY | O_DIRECTORY);
    T(fchownat(dfd, "", 1002, -1, AT_EMPTY_PATH));
    struct statx sx;
    statx(AT_FDCWD, "d", 0, STATX_BASIC_STATS, &sx); printf("statx d %u %u\n", sx.stx_uid, sx.stx_gid);
    T(chown("nope", 0, 0));
    T(chown("f/x", 0, 0));
    T(syscall(SYS_fchownat, AT_FDCWD, NULL, 0, 0, 0));
    T(fchown(99, 0, 0));
    T(fchownat(AT_FDCWD, "f", 0, 0, 0x4));
    return 0;
}
"""


@pytest.mark.parametrize("host_chown", [True, False], ids=["host-root", "owner-table"])
def test_chown_family(tmp_path: Path, arch: str, host_chown: bool,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    if host_chown and os.geteuid() != 0:
        pytest.skip("needs a root host")
    import emu.kernel.syscalls.fsextra as fsextra
    monkeypatch.setattr(fsextra, "host_can_chown", lambda: host_chown)
    exe = build(tmp_path, arch, "chown", CHOWN)
    root = tmp_path / "root"
    root.mkdir()
    ours = emu_out(exe, root)
    assert "f 1234 5678\n" in ours and "f 1234 42\n" in ours and "fstat f 7 42\n" in ours
    assert "l 11 12\nl->f 7 42\n" in ours and "l 13 14\n" in ours and "statx d 1002 1001\n" in ours
    assert "chown(\"nope\", 0, 0) = -1 errno 2\n" in ours
    assert "chown(\"f/x\", 0, 0) = -1 errno 20\n" in ours
    assert "NULL, 0, 0, 0) = -1 errno 14\n" in ours
    assert "fchown(99, 0, 0) = -1 errno 9\n" in ours
    assert "0x4) = -1 errno 22\n" in ours
    host = os.stat(root / "f")
    if host_chown:
        assert (host.st_uid, host.st_gid) == (7, 42)
        if os.geteuid() == 0:
            native = tmp_path / "native"
            native.mkdir()
            assert ours == reference(exe, arch, native)
    else:
        assert (host.st_uid, host.st_gid) == (os.geteuid(), os.getegid())


CHOWN_USER = r"""
int main(void) {
    struct stat st;
    T(mkdir("mine", 0755));
    stat("mine", &st); printf("mine %d %d\n", st.st_uid, st.st_gid);
    T(mknod("minef", S_IFREG | 0644, 0));
    T(chown("mine", 1000, -1));
    T(chown("mine", -1, 1000));
    T(chown("mine", 0, -1));
    T(chown("mine", -1, 0));
    T(chown("rootfile", 1000, -1));
    T(chown("rootfile", -1, -1));
    T(chown(".", -1, getgid()));
    return 0;
}
"""


def test_chown_by_an_unprivileged_guest(tmp_path: Path, arch: str) -> None:
    exe = build(tmp_path, arch, "chown_user", CHOWN_USER)
    root = tmp_path / "root"
    root.mkdir()
    (root / "rootfile").write_text("x")
    out = emu_out(exe, root, "--uid", "1000")
    assert out.splitlines() == [
        'mkdir("mine", 0755) = 0', "mine 1000 1000", 'mknod("minef", S_IFREG | 0644, 0) = 0',
        'chown("mine", 1000, -1) = 0', 'chown("mine", -1, 1000) = 0',
        'chown("mine", 0, -1) = -1 errno 1', 'chown("mine", -1, 0) = -1 errno 1',
        'chown("rootfile", 1000, -1) = -1 errno 1', 'chown("rootfile", -1, -1) = 0',
        'chown(".", -1, getgid()) = -1 errno 1']


# ---- times ----

UTIMES = r"""
static struct timespec t0;
static void times_of(const char *what, const char *path, int flags) {
    struct stat st;
    fstatat(AT_FDCWD, path, &st, flags);
    printf("%s a=%ld.%09ld m=%ld.%09ld\n", what, (long)st.st_atim.tv_sec, st.st_atim.tv_nsec,
           (long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
}
static void now_check(const char *what, const char *path) {
    struct stat st; struct timespec t1;
    stat(path, &st);
    clock_gettime(CLOCK_REALTIME, &t1);
    int a = st.st_atim.tv_sec >= t0.tv_sec - 1 && st.st_atim.tv_sec <= t1.tv_sec + 1;
    int m = st.st_mtim.tv_sec >= t0.tv_sec - 1 && st.st_mtim.tv_sec <= t1.tv_sec + 1;
    printf("%s atime-now=%d mtime-now=%d\n", what, a, m);
}
int main(void) {
    clock_gettime(CLOCK_REALTIME, &t0);
    int fd = open("t", O_CREAT | O_RDWR, 0644);
    struct timespec ts[2] = {{1000, 500}, {2000, 600}};
    T(utimensat(AT_FDCWD, "t", ts, 0)); times_of("set", "t", 0);
    ts[0].tv_nsec = UTIME_OMIT; ts[1].tv_sec = 3000; ts[1].tv_nsec = 0;
    T(utimensat(AT_FDCWD, "t", ts, 0)); times_of("omit-a", "t", 0);
    ts[0].tv_nsec = UTIME_NOW; ts[1].tv_nsec = UTIME_OMIT;
    T(utimensat(AT_FDCWD, "t", ts, 0)); now_check("now-a", "t");
    T(utimensat(AT_FDCWD, "t", NULL, 0)); now_check("null", "t");
    struct timespec fx[2] = {{4000, 1}, {5000, 2}};
    T(futimens(fd, fx)); times_of("futimens", "t", 0);
    fx[1].tv_sec = 6000;
    T(syscall(SYS_utimensat, fd, NULL, fx, 0)); times_of("null-path", "t", 0);
    T(syscall(SYS_utimensat, AT_FDCWD, NULL, fx, 0));
    T(syscall(SYS_utimensat, fd, NULL, fx, AT_SYMLINK_NOFOLLOW));
    symlink("t", "l");
    struct timespec lx[2] = {{7000, 0}, {8000, 0}};
    T(utimensat(AT_FDCWD, "l", lx, AT_SYMLINK_NOFOLLOW));
    times_of("link", "l", AT_SYMLINK_NOFOLLOW); times_of("target", "t", 0);
    lx[0].tv_nsec = 1000000000;
    T(utimensat(AT_FDCWD, "t", lx, 0));
    lx[0].tv_nsec = 0;
    T(utimensat(AT_FDCWD, "t", lx, 0x1));
    T(utimensat(AT_FDCWD, "nope", lx, 0));
    struct timespec omit[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};
    T(utimensat(AT_FDCWD, "nope", omit, 0));
    close(open("new", O_CREAT | O_WRONLY, 0644));           /* touch newfile */
    T(utimensat(AT_FDCWD, "new", NULL, 0)); now_check("touch", "new");
#ifdef SYS_utime
    long ub[2] = {9000, 9001};
    T(syscall(SYS_utime, "t", ub)); times_of("utime", "t", 0);
    long tv[4] = {100, 5, 200, 1000000};
    T(syscall(SYS_utimes, "t", tv));
    tv[3] = 7;
    T(syscall(SYS_utimes, "t", tv)); times_of("utimes", "t", 0);
    T(syscall(SYS_utimes, "t", NULL)); now_check("utimes-null", "t");
#endif
    return 0;
}
"""


def test_utimensat_and_friends(tmp_path: Path, arch: str) -> None:
    exe = build(tmp_path, arch, "utimes", UTIMES)
    root = tmp_path / "root"
    root.mkdir()
    ours = emu_out(exe, root)
    for line in ("set a=1000.000000500 m=2000.000000600", "omit-a a=1000.000000500 m=3000.000000000",
                 "now-a atime-now=1 mtime-now=0", "null atime-now=1 mtime-now=1",
                 "futimens a=4000.000000001 m=5000.000000002",
                 "null-path a=4000.000000001 m=6000.000000002",
                 "link a=7000.000000000 m=8000.000000000",
                 "target a=4000.000000001 m=6000.000000002", "touch atime-now=1 mtime-now=1"):
        assert line + "\n" in ours, ours
    assert "fx, 0) = -1 errno 14\n" in ours and "AT_SYMLINK_NOFOLLOW) = -1 errno 22\n" in ours
    assert 'utimensat(AT_FDCWD, "t", lx, 0) = -1 errno 22\n' in ours
    assert '"nope", lx, 0) = -1 errno 2\n' in ours and '"nope", omit, 0) = 0\n' in ours
    if arch == "x86_64":
        assert "utime a=9000.000000000 m=9001.000000000\n" in ours
        assert "utimes a=100.000005000 m=200.000007000\n" in ours
        assert "utimes-null atime-now=1 mtime-now=1\n" in ours
    # the simulated clock, not the host's: a run's times are its own
    assert (root / "new").stat().st_mtime > 1_767_225_600 - 1
    native = tmp_path / "native"
    native.mkdir()
    assert ours == reference(exe, arch, native)


# ---- statfs, truncate, mknod ----

STATFS = r"""
int main(void) {
    struct statfs s, f;
    T(statfs(".", &s));
    printf("type %lx bsize %ld blocks %ld files %ld namelen %ld frsize %ld valid %d\n",
           (long)s.f_type, (long)s.f_bsize, (long)s.f_blocks, (long)s.f_files,
           (long)s.f_namelen, (long)s.f_frsize, (int)!!(s.f_flags & 0x20));
    T(statfs("tmp", &s)); printf("tmp type %lx\n", (long)s.f_type);
    int fd = open(".", O_RDONLY | O_DIRECTORY);
    T(fstatfs(fd, &f)); printf("fstatfs type %lx same %d\n", (long)f.f_type,
                               f.f_blocks == s.f_blocks && f.f_bsize == s.f_bsize);
    int p[2]; pipe(p);
    T(fstatfs(p[0], &f)); printf("pipe type %lx\n", (long)f.f_type);
    T(statfs("nope", &s));
    T(statfs(NULL, &s));
    T(statfs(".", NULL));
    T(fstatfs(99, &s));
    return 0;
}
"""


def test_statfs(tmp_path: Path, arch: str) -> None:
    exe = build(tmp_path, arch, "statfs", STATFS)
    root = tmp_path / "root"
    (root / "tmp").mkdir(parents=True)
    out = emu_out(exe, root)
    vfs = os.statvfs(root)
    assert (f"type ef53 bsize {vfs.f_bsize} blocks {vfs.f_blocks} files {vfs.f_files} "
            f"namelen {vfs.f_namemax} frsize {vfs.f_frsize} valid 1\n") in out
    assert "tmp type ef53\n" in out and "fstatfs type ef53 same 1\n" in out   # /tmp: a host dir
    assert "pipe type 50495045\n" in out
    for call, err in (('statfs("nope", &s)', 2), ("statfs(NULL, &s)", 14),
                      ('statfs(".", NULL)', 14), ("fstatfs(99, &s)", 9)):
        assert f"{call} = -1 errno {err}\n" in out


TRUNC_MKNOD = r"""
int main(void) {
    struct stat st;
    int fd = open("f", O_CREAT | O_RDWR, 0644);
    write(fd, "hello world", 11);
    T(truncate("f", 5)); stat("f", &st); printf("size %ld\n", (long)st.st_size);
    T(truncate("f", 8192)); stat("f", &st); printf("size %ld\n", (long)st.st_size);
    T(truncate("f", -1));
    mkdir("d", 0755);
    T(truncate("d", 0));
    T(truncate("nope", 0));
    T(truncate("f/x", 0));
    T(ftruncate(fd, -1));
    T(ftruncate(fd, 3)); fstat(fd, &st); printf("size %ld\n", (long)st.st_size);
    int ro = open("f", O_RDONLY);
    T(ftruncate(ro, 0));
    umask(0);
    T(mknod("fifo", S_IFIFO | 0666, 0));
    stat("fifo", &st); printf("fifo %d %o\n", S_ISFIFO(st.st_mode), st.st_mode & 07777);
    T(mknod("reg", S_IFREG | 0640, 0));
    stat("reg", &st); printf("reg %d %o size %ld\n", S_ISREG(st.st_mode), st.st_mode & 07777,
                             (long)st.st_size);
    T(mknod("reg", S_IFREG | 0640, 0));
    int dfd = open("d", O_RDONLY | O_DIRECTORY);
    T(mknodat(dfd, "plain", 0600, 0));
    fstatat(dfd, "plain", &st, 0); printf("plain %d %o\n", S_ISREG(st.st_mode), st.st_mode & 07777);
    T(mknod("chr", S_IFCHR | 0600, makedev(1, 3)));
    T(mknod("dir", S_IFDIR | 0700, 0));
    T(mknod("bad", 0170000 | 0600, 0));
    T(mknod("nodir/x", S_IFIFO | 0600, 0));
    return 0;
}
"""


def test_truncate_and_mknod(tmp_path: Path, arch: str) -> None:
    exe = build(tmp_path, arch, "trunc", TRUNC_MKNOD)
    root = tmp_path / "root"
    root.mkdir()
    out = emu_out(exe, root)
    assert out.splitlines() == [
        'truncate("f", 5) = 0', "size 5", 'truncate("f", 8192) = 0', "size 8192",
        'truncate("f", -1) = -1 errno 22', 'truncate("d", 0) = -1 errno 21',
        'truncate("nope", 0) = -1 errno 2', 'truncate("f/x", 0) = -1 errno 20',
        "ftruncate(fd, -1) = -1 errno 22", "ftruncate(fd, 3) = 0", "size 3",
        "ftruncate(ro, 0) = -1 errno 22",
        'mknod("fifo", S_IFIFO | 0666, 0) = 0', "fifo 1 666",
        'mknod("reg", S_IFREG | 0640, 0) = 0', "reg 1 640 size 0",
        'mknod("reg", S_IFREG | 0640, 0) = -1 errno 17',
        'mknodat(dfd, "plain", 0600, 0) = 0', "plain 1 600",
        'mknod("chr", S_IFCHR | 0600, makedev(1, 3)) = -1 errno 1',
        'mknod("dir", S_IFDIR | 0700, 0) = -1 errno 1',
        'mknod("bad", 0170000 | 0600, 0) = -1 errno 22',
        'mknod("nodir/x", S_IFIFO | 0600, 0) = -1 errno 2']
    assert stat.S_ISFIFO(os.stat(root / "fifo").st_mode)


CP_P = r"""
int main(void) {               /* what cp -p does, then what ls -l shows of both */
    int src = open("src", O_CREAT | O_WRONLY, 0640);
    write(src, "payload", 7);
    struct timespec when[2] = {{1600000000, 123}, {1500000000, 456}};
    futimens(src, when);
    fchown(src, 321, 654);
    close(src);
    struct stat s, d;
    src = open("src", O_RDONLY);
    fstat(src, &s);
    int dst = open("dst", O_CREAT | O_WRONLY | O_TRUNC, 0600);
    char buf[64]; long n = read(src, buf, sizeof buf); write(dst, buf, n);
    T(fchown(dst, s.st_uid, s.st_gid));
    T(fchmod(dst, s.st_mode & 07777));
    struct timespec copy[2] = {s.st_atim, s.st_mtim};
    T(futimens(dst, copy));
    close(dst);
    stat("dst", &d);
    printf("src %o %d %d %ld %ld.%09ld\n", s.st_mode, s.st_uid, s.st_gid, (long)s.st_size,
           (long)s.st_mtim.tv_sec, s.st_mtim.tv_nsec);
    printf("dst %o %d %d %ld %ld.%09ld\n", d.st_mode, d.st_uid, d.st_gid, (long)d.st_size,
           (long)d.st_mtim.tv_sec, d.st_mtim.tv_nsec);
    return 0;
}
"""


@pytest.mark.parametrize("host_chown", [True, False], ids=["host-root", "owner-table"])
def test_cp_p_keeps_owner_mode_and_times(tmp_path: Path, arch: str, host_chown: bool,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    if host_chown and os.geteuid() != 0:
        pytest.skip("needs a root host")
    import emu.kernel.syscalls.fsextra as fsextra
    monkeypatch.setattr(fsextra, "host_can_chown", lambda: host_chown)
    exe = build(tmp_path, arch, "cp_p", CP_P)
    root = tmp_path / "root"
    root.mkdir()
    out = emu_out(exe, root)
    assert "src 100640 321 654 7 1500000000.000000456\n" in out
    assert "dst 100640 321 654 7 1500000000.000000456\n" in out
    if host_chown:
        native = tmp_path / "native"
        native.mkdir()
        assert out == reference(exe, arch, native)
