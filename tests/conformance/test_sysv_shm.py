"""System V shared memory: shmget keys and errors, shmat (chosen, fixed, SHM_RND, SHM_RDONLY),
shmdt, shmctl IPC_STAT/IPC_SET/IPC_RMID with shm_nattch, and pages shared between processes
and across fork (first touched after fork too) — both architectures, against native Linux.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conformance.guest_programs import COMPILERS, build_for_each_arch, program
from tests.conftest import run_emu

SOURCE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

static int rc(long r) { return r < 0 ? -errno : (int)r; }
int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    int id = shmget(IPC_PRIVATE, 10000, IPC_CREAT | 0600);
    struct shmid_ds ds;
    shmctl(id, IPC_STAT, &ds);
    printf("private: id>=0:%d segsz=%zu mode=%o nattch=%lu cpid_ok=%d\n", id >= 0, (size_t)ds.shm_segsz,
           ds.shm_perm.mode & 0777, (unsigned long)ds.shm_nattch, ds.shm_cpid == getpid());
    char *p = shmat(id, NULL, 0);
    printf("shmat_ok=%d aligned=%d zero=%d", p != (void *)-1, ((unsigned long)p & 4095) == 0, p[9999] == 0);
    shmctl(id, IPC_STAT, &ds);
    printf(" nattch=%lu lpid_ok=%d\n", (unsigned long)ds.shm_nattch, ds.shm_lpid == getpid());
    /* a child writes pages it touches first (after fork) and attaches again itself */
    int fds[2]; pipe(fds);
    pid_t child = fork();
    if (child == 0) {
        char c; read(fds[0], &c, 1);
        strcpy(p + 4096, "from child");
        char *q = shmat(id, NULL, SHM_RDONLY);
        shmctl(id, IPC_STAT, &ds);
        printf("child: second attach sees parent=%s nattch=%lu\n", q + 100, (unsigned long)ds.shm_nattch);
        _exit(0);
    }
    strcpy(p + 100, "from parent");
    write(fds[1], "x", 1);
    int st; waitpid(child, &st, 0);
    printf("parent sees: %s\n", p + 4096);
    shmctl(id, IPC_STAT, &ds);
    printf("after child exit: nattch=%lu\n", (unsigned long)ds.shm_nattch);
    /* keys */
    key_t key = 0x1234;
    int k1 = shmget(key, 4096, IPC_CREAT | 0640);
    printf("key: create_ok=%d same=%d", k1 >= 0, shmget(key, 100, 0) == k1);
    printf(" excl=%d", rc(shmget(key, 4096, IPC_CREAT | IPC_EXCL | 0640)));
    printf(" too_big=%d", rc(shmget(key, 8192, 0)));
    printf(" noent=%d", rc(shmget(0x5678, 4096, 0)));
    printf(" size0=%d\n", rc(shmget(IPC_PRIVATE, 0, IPC_CREAT | 0600)));
    /* IPC_SET */
    shmctl(k1, IPC_STAT, &ds);
    ds.shm_perm.mode = 0604;
    printf("ipc_set=%d", rc(shmctl(k1, IPC_SET, &ds)));
    shmctl(k1, IPC_STAT, &ds);
    printf(" mode=%o key=%#x\n", ds.shm_perm.mode & 0777, ds.shm_perm.__key);
    /* SHM_RND, fixed address, errors */
    char *fixed = shmat(k1, (void *)0x200000001000UL + 123, SHM_RND);
    printf("rnd=%d", fixed == (void *)0x200000001000UL);
    printf(" unaligned=%d", rc((long)shmat(k1, (void *)0x200000005123UL, 0)));
    printf(" overlap=%d", rc((long)shmat(k1, fixed, 0)));
    printf(" badid=%d", rc((long)shmat(123456, NULL, 0)));
    printf(" shmdt_bad=%d", rc(shmdt(fixed + 1)));
    printf(" shmdt_none=%d", rc(shmdt((void *)0x300000000000UL)));
    printf(" shmdt=%d\n", rc(shmdt(fixed)));
    /* read-only attach: a write faults */
    printf("badcmd=%d stat_badid=%d\n", rc(shmctl(k1, 77, &ds)), rc(shmctl(999999, IPC_STAT, &ds)));
    /* IPC_RMID: the segment lives on while attached */
    printf("rmid=%d", rc(shmctl(id, IPC_RMID, NULL)));
    shmctl(id, IPC_STAT, &ds);
    printf(" still=%s dest=%d key=%d", p + 100, (ds.shm_perm.mode & SHM_DEST) != 0, ds.shm_perm.__key);
    printf(" shmdt=%d", rc(shmdt(p)));
    printf(" gone=%d\n", rc(shmctl(id, IPC_STAT, &ds)));
    shmctl(k1, IPC_RMID, NULL);
    printf("key after rmid=%d\n", rc(shmget(key, 4096, 0)));
    return 0;
}
"""


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The guest program, built for each architecture whose compiler is installed."""
    return build_for_each_arch(tmp_path_factory.mktemp("prog"), "prog", SOURCE)


EXPECTED = """\
private: id>=0:1 segsz=10000 mode=600 nattch=0 cpid_ok=1
shmat_ok=1 aligned=1 zero=1 nattch=1 lpid_ok=1
child: second attach sees parent=from parent nattch=3
parent sees: from child
after child exit: nattch=1
key: create_ok=1 same=1 excl=-17 too_big=-22 noent=-2 size0=-22
ipc_set=0 mode=604 key=0x1234
rnd=1 unaligned=-22 overlap=-22 badid=-22 shmdt_bad=-22 shmdt_none=-22 shmdt=0
badcmd=-22 stat_badid=-22
rmid=0 still=from parent dest=1 key=0 shmdt=0 gone=-22
key after rmid=-2
"""


def test_sysv_shm(programs: dict[str, Path], arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    run = emu("--ram", "16M", program(programs, arch))
    assert (run.returncode, run.stderr) == (0, "")
    assert run.stdout == EXPECTED
    # pages first touched after fork are shared: the parent's and the child's are the same
    # frames of the segment, mapped without I/O (cached), never zero-filled per process
    assert run.stats["faults"]["by_cause"]["cached"] >= 4


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="native runs need an x86-64 host")
def test_native_linux_agrees(programs: dict[str, Path]) -> None:
    native = subprocess.run([str(program(programs, "x86_64"))], capture_output=True, text=True,
                            timeout=60)
    assert native.stdout == EXPECTED


SEGMENT_FRAMES_C = r"""
#include <stdio.h>
#include <sys/shm.h>
#include <sys/sysinfo.h>
int main(void) {
    struct sysinfo a, b, c;
    sysinfo(&a);
    int id = shmget(IPC_PRIVATE, 1 << 20, IPC_CREAT | 0600);
    sysinfo(&b);
    char *p = shmat(id, NULL, 0);
    p[0] = 1;
    shmctl(id, IPC_RMID, NULL);
    shmdt(p);
    sysinfo(&c);
    printf("taken=%ld given_back=%d\n", (long)(a.freeram - b.freeram) / 4096,
           c.freeram >= a.freeram - 4096 * 4);
    printf("huge=%d\n", shmget(IPC_PRIVATE, 1UL << 40, IPC_CREAT | 0600) < 0);
    return 0;
}
"""


def test_segment_frames_are_taken_and_given_back(tmp_path: Path, arch: str) -> None:
    cc = COMPILERS[arch]
    if shutil.which(cc[0]) is None:
        pytest.skip(f"no compiler for {arch}")
    (tmp_path / "frames.c").write_text(SEGMENT_FRAMES_C)
    exe = tmp_path / "frames"
    subprocess.run([*cc, "-o", str(exe), str(tmp_path / "frames.c")], check=True)
    run = run_emu("--ram", "16M", exe)
    assert (run.returncode, run.stderr) == (0, "")
    assert run.stdout == "taken=256 given_back=1\nhuge=1\n"
