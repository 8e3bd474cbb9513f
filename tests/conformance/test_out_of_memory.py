"""Semantics row: memory exhaustion a program survives. With little RAM, a program that
touches MAP_LAZY memory until none is left gets SIGBUS, its handler runs (its text and data
were committed at exec, as QNX allocates non-lazy mappings at mmap), it siglongjmps out,
unmaps the memory, prints and exits normally — on both architectures."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import run_emu

OOM_C = r"""
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#define MAP_LAZY 0x80          /* QNX: frames at first touch, SIGBUS when none is left */
static sigjmp_buf env;
static volatile long touched;
static void on_bus(int sig, siginfo_t *si, void *ctx) { (void)sig; (void)si; (void)ctx; siglongjmp(env, 1); }
int main(void) {
    struct sigaction sa; memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_bus; sa.sa_flags = SA_SIGINFO;
    sigaction(SIGBUS, &sa, NULL);
    size_t len = 1UL << 30;
    char *p = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_LAZY, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 1; }
    if (sigsetjmp(env, 1) == 0) {
        for (size_t off = 0; off < len; off += 4096) { p[off] = 1; touched++; }
        printf("never ran out\n");
        return 1;
    }
    printf("SIGBUS after %ld pages; recovered\n", (long)touched);
    munmap(p, len);
    printf("after munmap: still running\n");
    return 0;
}
"""


def test_lazy_memory_exhaustion_is_survivable(tmp_path: Path, arch: str) -> None:
    src = tmp_path / "oom.c"
    src.write_text(OOM_C)
    exe = tmp_path / "oom"
    cc = "gcc" if arch == "x86_64" else "aarch64-linux-gnu-gcc"
    subprocess.run([cc, "-static", "-O2", "-o", str(exe), str(src)], check=True)
    run = run_emu("--ram", "32M", "--root", tmp_path, exe)
    assert run.returncode == 0, run.stderr
    match = re.fullmatch(r"SIGBUS after (\d+) pages; recovered\nafter munmap: still running\n",
                         run.stdout)
    assert match, run.stdout
    pages = int(match.group(1))
    assert 5000 < pages < 8192            # most of 32 MiB, never more
