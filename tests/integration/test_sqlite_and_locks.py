"""Third-party code: SQLite (Debian's static library, linked by the stock compilers) computes
and stores as on Linux, on both guest architectures — its floating-point digits (the x87
state a new image starts with) and a database file (fcntl record locks). And record locks
themselves, between processes, against the native answers."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_emu

GUESTS = Path(__file__).resolve().parents[2] / ".cache" / "guests"

SQLITE_C = r"""
#include <stdio.h>
#include <sqlite3.h>
static int row(void *u, int n, char **v, char **c) {
    (void)u; (void)c;
    for (int i = 0; i < n; i++) printf("%s%s", v[i] ? v[i] : "NULL", i + 1 < n ? "|" : "\n");
    return 0;
}
int main(int argc, char **argv) {
    sqlite3 *db;
    char *err = 0;
    if (sqlite3_open(argv[1], &db)) { printf("open: %s\n", sqlite3_errmsg(db)); return 1; }
    for (int i = 2; i < argc; i++)
        if (sqlite3_exec(db, argv[i], row, 0, &err)) { printf("error: %s\n", err); return 1; }
    sqlite3_close(db);
    return 0;
}
"""

LOCKS_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static int lk(int fd, int cmd, short type, off_t start, off_t len) {
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    return fcntl(fd, cmd, &fl);
}
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int fd = open("/lockfile", O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { perror("open"); return 1; }
    printf("parent lock [0,100): %d\n", lk(fd, F_SETLK, F_WRLCK, 0, 100));
    pid_t parent = getpid(), pid = fork();
    if (pid == 0) {
        int r = lk(fd, F_SETLK, F_WRLCK, 50, 10);
        printf("child overlapping: %s\n", r < 0 && (errno == EAGAIN || errno == EACCES) ? "busy" : "granted");
        printf("child beside it: %d\n", lk(fd, F_SETLK, F_WRLCK, 100, 10));
        struct flock q = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 10, .l_len = 1};
        fcntl(fd, F_GETLK, &q);
        printf("F_GETLK: type %s, by the parent %d, [%ld, +%ld)\n", q.l_type == F_WRLCK ? "write" : "?",
               q.l_pid == parent, (long)q.l_start, (long)q.l_len);
        printf("child waits: %d\n", lk(fd, F_SETLKW, F_RDLCK, 0, 10));
        _exit(0);
    }
    struct timespec ts = {0, 20 * 1000000};
    nanosleep(&ts, NULL);
    printf("parent unlocks [0,50)\n");
    if (lk(fd, F_SETLK, F_UNLCK, 0, 50) != 0) perror("unlock");
    waitpid(pid, NULL, 0);
    int fd2 = open("/lockfile", O_RDWR);
    struct flock o = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    printf("OFD lock: %d\n", fcntl(fd2, F_OFD_SETLK, &o));
    o.l_pid = 1;
    printf("OFD with l_pid: %s\n", fcntl(fd2, F_OFD_SETLK, &o) < 0 && errno == EINVAL ? "EINVAL" : "ok");
    printf("bad type: %s\n", lk(fd, F_SETLK, 7, 0, 1) < 0 && errno == EINVAL ? "EINVAL" : "ok");
    printf("negative start: %s\n", lk(fd, F_SETLK, F_RDLCK, -5, 1) < 0 && errno == EINVAL ? "EINVAL" : "ok");
    return 0;
}
"""


def _compile(tmp_path: Path, arch: str, source: str, name: str, libs: list[str]) -> Path:
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    exe = tmp_path / "root" / f"{name}-{arch}"
    exe.parent.mkdir(exist_ok=True)
    cc = "gcc" if arch == "x86_64" else "aarch64-linux-gnu-gcc"
    extra = [] if arch == "x86_64" else [f"-L{GUESTS / 'aarch64'}"]
    if "-lsqlite3" in libs and arch == "aarch64" and not (GUESTS / "aarch64" /
                                                           "libsqlite3.a").exists():
        pytest.fail("the arm64 SQLite library is missing: run tools/setup.sh")
    subprocess.run([cc, "-static", "-O2", "-w", "-o", str(exe), str(src), *extra, *libs],
                   check=True, capture_output=True)
    return exe


@pytest.fixture(scope="module")
def native_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _compile(tmp_path_factory.mktemp("native"), "x86_64", SQLITE_C, "sqlite",
                    ["-lsqlite3", "-lm"])


def test_sqlite_digits(tmp_path: Path, arch: str, native_sqlite: Path) -> None:
    query = "select 2504.5, 1.0/3, 1e300*10, round(2.675, 2), 0.1+0.2, 1e-310, 123456789.123;"
    exe = _compile(tmp_path, arch, SQLITE_C, "sqlite", ["-lsqlite3", "-lm"])
    native = subprocess.run([str(native_sqlite), ":memory:", query], capture_output=True,
                            text=True, check=True).stdout
    assert native.startswith("2504.5|0.333333333333333|")
    run = run_emu("--root", exe.parent, exe, ":memory:", query)
    assert (run.returncode, run.stdout) == (0, native), run.stderr


def test_sqlite_database_file(tmp_path: Path, arch: str) -> None:
    exe = _compile(tmp_path, arch, SQLITE_C, "sqlite", ["-lsqlite3", "-lm"])
    root = exe.parent
    run = run_emu("--root", root, exe, "/data.db", "create table t(k integer primary key, v);",
                  "begin; insert into t(v) values ('a'), ('b'), (2.5); commit;",
                  "select count(*), sum(v) from t;")
    assert (run.returncode, run.stdout) == (0, "3|2.5\n"), run.stderr
    again = run_emu("--root", root, exe, "/data.db", "select v from t order by k;")
    assert again.stdout == "a\nb\n2.5\n", again.stderr
    check = subprocess.run(["sqlite3", str(root / "data.db"), "pragma integrity_check;"],
                           capture_output=True, text=True) if shutil.which("sqlite3") else None
    if check is not None:
        assert check.stdout == "ok\n"


def test_record_locks_between_processes(tmp_path: Path, arch: str) -> None:
    exe = _compile(tmp_path, arch, LOCKS_C, "locks", [])
    native_root = tmp_path / "native"
    native_root.mkdir()
    native_exe = _compile(tmp_path, "x86_64", LOCKS_C.replace('"/lockfile"',
                                                              f'"{native_root}/lockfile"'),
                          "locks-native", [])
    expected = subprocess.run([str(native_exe)], capture_output=True, text=True, timeout=30)
    assert "child waits: 0" in expected.stdout
    run = run_emu("--root", exe.parent, exe)
    assert (run.returncode, run.stdout) == (expected.returncode, expected.stdout), run.stderr
