"""Semantics rows: file I/O as LTP found it: whole reads and writes of regular files,
RLIMIT_FSIZE, fallocate, exact creation modes, edge-triggered epoll, O_TMPFILE named
through /proc/self/fd, and /proc/self/pagemap.

The program runs under emu on both architectures and, where it uses only relative paths,
natively (x86-64) or under qemu-user (AArch64); the outputs must agree.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conformance.test_files_meta import build, emu_out, reference

IO = r"""
#include <linux/falloc.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
int main(void) {
    static char buf[3 << 20];
    struct stat st;
    int fd = open("big", O_CREAT | O_RDWR | O_TRUNC, 0644);
    memset(buf, 'x', sizeof buf);
    T(write(fd, buf, sizeof buf));                  /* whole, not cut at 1 MiB */
    lseek(fd, 0, SEEK_SET);
    memset(buf, 0, sizeof buf);
    T(read(fd, buf, sizeof buf));
    printf("last byte %c\n", buf[sizeof buf - 1]);
    T(pread(fd, buf, sizeof buf, 4096));
    close(fd);

    fd = open("falloc", O_CREAT | O_RDWR | O_TRUNC, 0644);
    T(fallocate(fd, 0, 0, 65536));
    fstat(fd, &st); printf("size %ld\n", (long)st.st_size);
    T(fallocate(fd, FALLOC_FL_KEEP_SIZE, 65536, 65536));
    fstat(fd, &st); printf("size %ld\n", (long)st.st_size);
    T(pwrite(fd, "hello", 5, 0));
    T(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096));
    char c = 1; pread(fd, &c, 1, 0); printf("after punch %d\n", c);
    T(fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 4096));
    T(fallocate(fd, 0, -1, 4096));
    T(fallocate(fd, 0, 0, 0));
    int ro = open("falloc", O_RDONLY);
    T(fallocate(ro, 0, 0, 4096));
    int p[2]; pipe(p);
    T(fallocate(p[1], 0, 0, 4096));

    umask(0);
    close(open("m777", O_CREAT | O_WRONLY, 0777));
    stat("m777", &st); printf("mode %o\n", st.st_mode & 07777);
    umask(027);
    close(open("m750", O_CREAT | O_WRONLY, 0777));
    stat("m750", &st); printf("mode %o\n", st.st_mode & 07777);
    mkdir("d750", 0777);
    stat("d750", &st); printf("mode %o\n", st.st_mode & 07777);

    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.fd = p[0]}, out;
    T(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev));
    T(write(p[1], "0123456789", 10));
    T(epoll_wait(ep, &out, 1, 0));
    T(read(p[0], buf, 5));
    T(epoll_wait(ep, &out, 1, 0));                  /* data left, but no new edge */
    T(write(p[1], "x", 1));
    T(epoll_wait(ep, &out, 1, 0));
    int z = open("/dev/zero", O_RDONLY);
    T(epoll_ctl(ep, EPOLL_CTL_ADD, z, &ev));

    int tf = open(".", O_TMPFILE | O_RDWR, 0600);
    T(write(tf, "tmp", 3));
    char path[64]; snprintf(path, sizeof path, "/proc/self/fd/%d", tf);
    T(linkat(AT_FDCWD, path, AT_FDCWD, "named", AT_SYMLINK_FOLLOW));
    stat("named", &st); printf("named size %ld\n", (long)st.st_size);

    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {10000, 10000};
    T(setrlimit(RLIMIT_FSIZE, &rl));
    fd = open("limited", O_CREAT | O_RDWR | O_TRUNC, 0644);
    T(write(fd, buf, 8192));
    T(write(fd, buf, 8192));                        /* short: up to the limit */
    T(write(fd, buf, 8192));                        /* EFBIG */
    T(ftruncate(fd, 20000));
    T(ftruncate(fd, 5000));
    return 0;
}
"""

PAGEMAP = r"""
#include <stdint.h>
int main(void) {
    char *p = mmap(0, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    p[0] = 1; p[2 * 4096] = 1;
    int fd = open("/proc/self/pagemap", O_RDONLY);
    for (int i = 0; i < 4; i++) {
        uint64_t e = 0;
        pread(fd, &e, 8, ((uintptr_t)p / 4096 + i) * 8);
        printf("page %d present %d\n", i, (int)(e >> 63));
    }
    char line[128]; FILE *f = fopen("/proc/self/status", "r");
    mlock(p, 2 * 4096);
    f = fopen("/proc/self/status", "r");
    while (fgets(line, sizeof line, f)) if (!strncmp(line, "VmLck", 5)) fputs(line, stdout);
    return 0;
}
"""


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_file_io_is_what_linux_does(tmp_path: Path, arch: str) -> None:
    """Whole reads and writes, fallocate, modes, EPOLLET, O_TMPFILE links and RLIMIT_FSIZE
    give what the native run (x86-64) or qemu-user (AArch64) gives."""
    exe = build(tmp_path, arch, "io", IO)
    native_dir, root = tmp_path / "native", tmp_path / "root"
    native_dir.mkdir()
    root.mkdir()
    shutil.copy(exe, native_dir / "io")
    expected = reference(native_dir / "io", arch, native_dir)
    got = emu_out(exe, root)
    assert got == expected
    assert "write(fd, buf, sizeof buf) = 3145728" in got       # not cut at 1 MiB
    assert "errno 27" in got                                    # EFBIG from RLIMIT_FSIZE
    assert (root / "named").read_bytes() == b"tmp"


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_pagemap_and_locked_memory_show_the_guest_pages(tmp_path: Path, arch: str) -> None:
    """/proc/self/pagemap reports the touched pages present and the others not;
    /proc/self/status counts mlock'ed memory in VmLck."""
    exe = build(tmp_path, arch, "pagemap", PAGEMAP)
    root = tmp_path / "root"
    root.mkdir()
    got = emu_out(exe, root)
    assert got.splitlines()[:4] == ["page 0 present 1", "page 1 present 0",
                                    "page 2 present 1", "page 3 present 0"]
    assert got.splitlines()[4].split() == ["VmLck:", "8", "kB"]
