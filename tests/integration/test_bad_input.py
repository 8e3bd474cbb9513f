"""Bad input emu must refuse cleanly: malformed ELF segment layouts (one line on stderr, exit
125, within seconds); bad arguments to the memory calls (madvise, mincore, mremap, the
mmap family's range checks) that must give Linux's errno and never damage the address
space; attempts to remove or rename the guest root, or to learn host paths through
/proc/self. The memory program also exercises mremap's and mincore's normal paths; its output,
on either architecture, must match the x86-64 build run natively.
"""
from __future__ import annotations

import os
import shutil
import struct
import time
from pathlib import Path

import pytest

from tests.conformance.test_files_meta import build, emu_out, reference
from tests.conftest import run_emu
from tests.integration.test_external_binaries import _one_line_error

# ---- ELF segment layouts ----

PT_LOAD = 1


def _phdrs(data: bytes) -> list[tuple[int, int]]:
    """(file offset, p_type) of every program header."""
    e_phoff, = struct.unpack_from("<Q", data, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    return [(e_phoff + i * e_phentsize, struct.unpack_from("<I", data, e_phoff + i * e_phentsize)[0])
            for i in range(e_phnum)]


def _loads(data: bytes) -> list[int]:
    """File offsets of the PT_LOAD program headers."""
    return [off for off, kind in _phdrs(data) if kind == PT_LOAD]


def _field(data: bytearray, ph: int, name: str, value: int | None = None) -> int:
    """Read (or with `value`, write) one Elf64_Phdr field of the header at `ph`."""
    offset = {"p_offset": 8, "p_vaddr": 16, "p_paddr": 24, "p_filesz": 32, "p_memsz": 40}[name]
    if value is not None:
        struct.pack_into("<Q", data, ph + offset, value & (2**64 - 1))
    return struct.unpack_from("<Q", data, ph + offset)[0]


def _patched(firmware: Path, arch: str, tmp_path: Path, patch) -> Path:  # type: ignore[no-untyped-def]
    data = bytearray((firmware / arch / "hello").read_bytes())
    patch(data, _loads(data))
    out = tmp_path / "patched"
    out.write_bytes(bytes(data))
    return out


def _last(data: bytearray, loads: list[int], name: str, value: int) -> None:
    _field(data, loads[-1], name, value)


def _overlap(data: bytearray, loads: list[int]) -> None:
    first, second = loads[0], loads[1]
    start = _field(data, first, "p_vaddr")
    _field(data, second, "p_vaddr", start)
    _field(data, second, "p_offset", _field(data, first, "p_offset"))


def _into_stack(data: bytearray, loads: list[int]) -> None:
    ph = loads[-1]
    page_offset = _field(data, ph, "p_offset") % 4096
    _field(data, ph, "p_vaddr", 0x7FFF_FFFF_F000 - (4 << 20) + page_offset)


BAD_LAYOUTS = {
    "memsz-below-filesz": (lambda d, l: _last(d, l, "p_memsz", _field(d, l[-1], "p_filesz") - 1),
                           "malformed PT_LOAD"),
    "data-past-end-of-file": (lambda d, l: (_last(d, l, "p_filesz", len(d)),
                                            _last(d, l, "p_memsz", len(d))), "truncated"),
    "vaddr-wraps": (lambda d, l: _last(d, l, "p_memsz", 2**64 - 4096), "beyond the end of user space"),
    "beyond-user-space": (lambda d, l: _last(d, l, "p_vaddr", 0x8000_0000_0000 * 4 + _field(d, l[-1], "p_offset") % 4096),
                          "beyond the end of user space"),
    "segments-overlap": (_overlap, "overlap"),
    "into-the-stack": (_into_stack, "overlaps the stack"),
}


@pytest.mark.parametrize("case", sorted(BAD_LAYOUTS))
def test_bad_segment_layout_is_refused_in_one_line(firmware: Path, arch: str, tmp_path: Path,
                                                   case: str) -> None:
    patch, message = BAD_LAYOUTS[case]
    exe = _patched(firmware, arch, tmp_path, patch)
    started = time.monotonic()
    line = _one_line_error(run_emu(exe))
    assert message in line, line
    assert time.monotonic() - started < 10


def test_a_huge_bss_is_refused_at_once_not_built_page_by_page(firmware: Path, arch: str,
                                                             tmp_path: Path) -> None:
    """1 TiB of p_memsz: no per-page table; the image's memory is committed at exec (QNX
    allocates non-lazy mappings at mmap), so 1 TiB cannot be, and emu says so in one line."""
    exe = _patched(firmware, arch, tmp_path,
                   lambda d, l: _last(d, l, "p_memsz", _field(d, l[-1], "p_memsz") + (1 << 40)))
    started = time.monotonic()
    line = _one_line_error(run_emu(exe, "big"))
    assert time.monotonic() - started < 20
    assert "not enough RAM for the program's text and data" in line, line


def test_bad_phentsize_is_refused(firmware: Path, tmp_path: Path) -> None:
    def patch(data: bytearray, loads: list[int]) -> None:
        struct.pack_into("<H", data, 54, 64)
    exe = _patched(firmware, "x86_64", tmp_path, patch)
    assert "program header size" in _one_line_error(run_emu(exe))


# ---- memory calls ----

MEMORY = r"""
#include <sys/mman.h>
#define PG 4096L
static char *map(long pages) {
    return mmap(NULL, pages * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}
static void vec(const char *what, char *p, long pages) {
    unsigned char v[16] = {0};
    long r = mincore(p, pages * PG, v);
    printf("%s %ld:", what, r);
    for (long i = 0; i < pages; i++) printf(" %d", v[i] & 1);
    printf("\n");
}
int main(void) {
    char *p = map(4);
    memset(p, 'x', 4 * PG);
    /* madvise */
    T(madvise(0, -1UL, MADV_DONTNEED));
    T(madvise(p + 1, PG, MADV_DONTNEED));
    T(madvise(p, PG, 999));
    T(madvise(p, 0, MADV_DONTNEED));
    T(madvise(p, -PG, MADV_NORMAL));
    printf("still there %c\n", p[0]);
    T(madvise(p, PG, MADV_DONTNEED));
    printf("after dontneed %d %c\n", p[0], p[PG]);
    char *hole = mmap((void *)0x300000000, 3 * PG, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    munmap(hole + PG, PG);
    T(madvise(hole, 3 * PG, MADV_NORMAL));
    T(madvise(hole + PG, PG, MADV_WILLNEED));
    char *shared = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    T(madvise(shared, PG, MADV_FREE));
    char *locked = map(1); locked[0] = 1;
    T(mlock(locked, PG));
    T(madvise(locked, PG, MADV_DONTNEED));
    /* mincore */
    char *q = map(4);
    q[0] = 1; q[2 * PG] = 1;
    vec("mincore", q, 4);
    T(mincore(q + 1, PG, (unsigned char *)p));
    T(mincore(hole, 3 * PG, (unsigned char *)p));
    T(mincore(q, PG, NULL));
    T(mincore(q, -PG, (unsigned char *)p));
    T(mincore(q, 0, (unsigned char *)p));
    /* mremap */
    char *r = map(2); r[0] = 'a'; r[PG] = 'b';
    T(mremap(r, 2 * PG, PG, 0) == r);
    vec("shrunk", r, 2);
    char *g = map(3); munmap(g + PG, 2 * PG); g[0] = 'g';
    T(mremap(g, PG, 3 * PG, 0) == g);
    printf("grown %c %d %d\n", g[0], g[PG], g[2 * PG]);
    char *b = map(2); b[0] = 'c';
    T((long)mremap(b, PG, 2 * PG, 0));
    char *m = mremap(b, PG, 3 * PG, MREMAP_MAYMOVE);
    printf("moved %d %c %d\n", m != b && m != MAP_FAILED, m[0], m[2 * PG]);
    vec("old", b, 1);
    char *dst = map(4); char *src = map(2); src[0] = 's'; src[PG] = 't';
    T(mremap(src, 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, dst + PG) == dst + PG);
    printf("fixed %c %c\n", dst[PG], dst[2 * PG]);
    vec("src", src, 1);
    T((long)mremap(dst, PG, PG, MREMAP_FIXED, dst + 3 * PG));
    T((long)mremap(dst, PG, PG, 8));
    T((long)mremap(dst + 1, PG, PG, 0));
    T((long)mremap(dst, PG, 0, MREMAP_MAYMOVE));
    T((long)mremap(hole + PG, PG, 2 * PG, MREMAP_MAYMOVE));
    T((long)mremap(hole, 3 * PG, 4 * PG, MREMAP_MAYMOVE));
    T((long)mremap(dst, 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, dst + PG));
    T((long)mremap(dst, 0, PG, MREMAP_MAYMOVE));
    int fd = open("data", O_CREAT | O_RDWR | O_TRUNC, 0644);
    write(fd, "shared!", 7); ftruncate(fd, PG);
    char *s1 = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    char *s2 = mremap(s1, 0, PG, MREMAP_MAYMOVE);
    s2[0] = 'S';
    printf("duplicate %d %c %c\n", s2 != s1 && s2 != MAP_FAILED, s1[0], s2[1]);
    /* mmap family range checks */
    T((long)mmap(NULL, -1UL, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    T((long)mmap(NULL, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    T(mmap(NULL, PG, PROT_READ, MAP_SHARED, fd, 1L << 62) != MAP_FAILED);
    T((long)mmap(NULL, PG, PROT_READ, MAP_SHARED, fd, -PG));
    T((long)mmap((void *)0x7ffffffff000 - PG, 2 * PG, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0));
    T((long)mmap((void *)(p + 1), PG, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0));
    T(mprotect(p, 0, PROT_READ));
    T(mprotect(p, -1UL, PROT_READ));
    T(mprotect(p + 1, PG, PROT_READ));
    T(munmap(p, 0));
    T(munmap(p, -PG));
    T(munmap(p + 1, PG));
    T(mlock(p, -1UL));
    T(msync(p, -1UL, MS_SYNC));
    printf("alive %c\n", p[PG]);
    return 0;
}
"""


def test_memory_calls_check_their_arguments_as_linux(tmp_path: Path, arch: str) -> None:
    exe = build(tmp_path, arch, "memory", MEMORY)
    root = tmp_path / "root"
    root.mkdir()
    ours = emu_out(exe, root)
    lines = ours.splitlines()
    for line in ("madvise(0, -1UL, MADV_DONTNEED) = -1 errno 22", "still there x",
                 "after dontneed 0 x", "madvise(hole, 3 * PG, MADV_NORMAL) = -1 errno 12",
                 "madvise(shared, PG, MADV_FREE) = -1 errno 22",
                 "madvise(locked, PG, MADV_DONTNEED) = -1 errno 22",
                 "mincore 0: 1 0 1 0", "shrunk -1: 1 0", "grown g 0 0", "moved 1 c 0",
                 "old -1: 0", "fixed s t", "src -1: 0",
                 "duplicate 1 S h", "alive x"):
        assert line in lines, ours
    # the reference is the x86-64 build run natively, for both architectures: qemu-user's
    # mremap and mincore are not Linux's (it crashes on this program)
    native = tmp_path / "native"
    native.mkdir()
    assert ours == reference(build(tmp_path, "x86_64", "memory", MEMORY), "x86_64", native)


DONTUNMAP = r"""
#include <sys/mman.h>
int main(void) {
    char *k = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    k[0] = 'k';
    char *kk = (char *)syscall(SYS_mremap, k, 4096, 4096, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, 0);
    if (kk == MAP_FAILED) printf("dontunmap failed errno %d\n", errno);
    else printf("dontunmap %d %c %d\n", kk != k, kk[0], k[0]);
    T((long)mremap(k, 4096, 8192, MREMAP_MAYMOVE | MREMAP_DONTUNMAP));
    T((long)mremap(k, 4096, 4096, MREMAP_DONTUNMAP));
    return 0;
}
"""


def test_mremap_dontunmap_moves_the_pages_and_keeps_the_range(tmp_path: Path, arch: str) -> None:
    """(Made with syscall(): glibc's mremap reads a 5th argument for MREMAP_DONTUNMAP.)"""
    exe = build(tmp_path, arch, "dontunmap", DONTUNMAP)
    root = tmp_path / "root"
    root.mkdir()
    ours = emu_out(exe, root)
    assert ours.splitlines() == [
        "dontunmap 1 k 0",
        "(long)mremap(k, 4096, 8192, MREMAP_MAYMOVE | MREMAP_DONTUNMAP) = -1 errno 22",
        "(long)mremap(k, 4096, 4096, MREMAP_DONTUNMAP) = -1 errno 22"]
    native = tmp_path / "native"
    native.mkdir()
    assert ours == reference(build(tmp_path, "x86_64", "dontunmap", DONTUNMAP), "x86_64", native)


BIG_MOVES = r"""
#include <sys/mman.h>
#define MB (1L << 20)
int main(void) {
    for (int round = 0; round < 12; round++) {
        char *p = mmap(NULL, 4 * MB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        for (long i = 0; i < 4 * MB; i += 4096) p[i] = (char)(i >> 12);
        char *q = mremap(p, 4 * MB, 8 * MB, MREMAP_MAYMOVE);
        if (q == MAP_FAILED) { printf("round %d: errno %d\n", round, errno); return 1; }
        long bad = 0;
        for (long i = 0; i < 4 * MB; i += 4096) bad += q[i] != (char)(i >> 12);
        for (long i = 4 * MB; i < 8 * MB; i += 4096) bad += q[i] != 0, q[i] = 1;
        char *r = mremap(q, 8 * MB, 2 * MB, 0);
        bad += r != q || r[4096] != 1;
        if (bad) { printf("round %d: %ld bad pages\n", round, bad); return 1; }
        munmap(r, 2 * MB);
    }
    printf("ok\n");
    return 0;
}
"""


def test_mremap_of_large_pages_keeps_contents_and_frees_its_frames(tmp_path: Path,
                                                                  arch: str) -> None:
    """12 rounds of 8 MiB in 32 MiB of RAM: a leaked frame or commitment would run out."""
    exe = build(tmp_path, arch, "bigmoves", BIG_MOVES)
    root = tmp_path / "root"
    root.mkdir()
    assert emu_out(exe, root, "--ram", "32M") == "ok\n"


# ---- the guest root is never removed; /proc/self names ----

ROOT_GUARD = r"""
int main(void) {
    T(rmdir("/"));
    T(rmdir("/."));
    T(rmdir(".."));
    T(rmdir("/proc/self/root"));
    T(unlinkat(AT_FDCWD, "/", AT_REMOVEDIR));
    T(unlinkat(AT_FDCWD, "/proc/self/root/", AT_REMOVEDIR));
    T(unlink("/"));
    T(unlink("/proc/self/root"));
    T(rename("/", "/x"));
    T(rename("/proc/self/root", "/x"));
    T(mkdir("a", 0755));
    T(rename("a", "/"));
    T(rename("a", "/proc/self/root"));
    T(renameat2(AT_FDCWD, "a", AT_FDCWD, "/", RENAME_NOREPLACE));
    T(renameat2(AT_FDCWD, "a", AT_FDCWD, "b", RENAME_NOREPLACE));
    T(renameat2(AT_FDCWD, "b", AT_FDCWD, "b2", 0x100));
    T(rmdir("/../.."));
    return 0;
}
"""


def test_the_guest_root_cannot_be_removed_or_renamed(tmp_path: Path, arch: str) -> None:
    exe = build(tmp_path, arch, "rootguard", ROOT_GUARD)
    root = tmp_path / "empty"
    root.mkdir()
    out = emu_out(exe, root)
    assert out.splitlines() == [
        'rmdir("/") = -1 errno 16', 'rmdir("/.") = -1 errno 22', 'rmdir("..") = -1 errno 39',
        'rmdir("/proc/self/root") = -1 errno 16',
        'unlinkat(AT_FDCWD, "/", AT_REMOVEDIR) = -1 errno 16',
        'unlinkat(AT_FDCWD, "/proc/self/root/", AT_REMOVEDIR) = -1 errno 16',
        'unlink("/") = -1 errno 21', 'unlink("/proc/self/root") = -1 errno 21',
        'rename("/", "/x") = -1 errno 16', 'rename("/proc/self/root", "/x") = -1 errno 16',
        'mkdir("a", 0755) = 0', 'rename("a", "/") = -1 errno 16',
        'rename("a", "/proc/self/root") = -1 errno 16',
        'renameat2(AT_FDCWD, "a", AT_FDCWD, "/", RENAME_NOREPLACE) = -1 errno 17',
        'renameat2(AT_FDCWD, "a", AT_FDCWD, "b", RENAME_NOREPLACE) = 0',
        'renameat2(AT_FDCWD, "b", AT_FDCWD, "b2", 0x100) = -1 errno 22',
        'rmdir("/../..") = -1 errno 39']
    assert root.is_dir() and sorted(os.listdir(root)) == ["b"]


def test_rmdir_of_an_empty_root_leaves_it(tmp_path: Path, arch: str) -> None:
    exe = build(tmp_path, arch, "rmroot", 'int main(void) { T(rmdir("/")); return 0; }')
    root = tmp_path / "empty"
    root.mkdir()
    assert emu_out(exe, root) == 'rmdir("/") = -1 errno 16\n'
    assert root.is_dir()


PROC_LINKS = r"""
static void link_of(const char *path) {
    char buf[4096]; ssize_t n = readlink(path, buf, sizeof buf - 1);
    if (n < 0) { printf("%s: errno %d\n", path, errno); return; }
    buf[n] = 0; printf("%s -> %s\n", path, buf);
}
int main(int argc, char **argv) {
    char pid[64]; snprintf(pid, sizeof pid, "/proc/%d/exe", getpid());
    const char *paths[] = {"/proc/self/exe", "//proc/./self/../self//exe", "proc/self/exe",
                           "/proc/self/root/proc/self/exe", "/proc/thread-self/exe",
                           "/proc/self/cwd", "/proc/self/root", pid};
    for (unsigned i = 0; i < sizeof paths / sizeof *paths; i++) link_of(paths[i]);
    char buf[8];
    T(readlink("/proc/self/exe", buf, 0));
    mkdir("/sub", 0755); chdir("/sub");
    link_of("/proc/self/cwd"); link_of("../proc/self/exe");
    printf("argv0 %s\n", argv[0]);
    return 0;
}
"""


@pytest.mark.parametrize("inside", [False, True], ids=["outside-root", "inside-root"])
def test_proc_self_links_show_guest_names(tmp_path: Path, arch: str, inside: bool) -> None:
    exe = build(tmp_path, arch, "links", PROC_LINKS)
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    if inside:
        exe = Path(shutil.copy(exe, root / "bin" / "prog"))
    name = "/bin/prog" if inside else "/proc/self/exe"
    out = emu_out(exe, root)
    assert str(tmp_path) not in out
    lines = out.splitlines()
    for path in ("/proc/self/exe", "//proc/./self/../self//exe", "proc/self/exe",
                 "/proc/self/root/proc/self/exe", "/proc/thread-self/exe"):
        assert f"{path} -> {name}" in lines
    assert "/proc/self/cwd -> /" in lines and "/proc/self/root -> /" in lines
    assert any(line.startswith("/proc/") and line.endswith(f"/exe -> {name}") and
               line.split("/")[2].isdigit() for line in lines)
    assert 'readlink("/proc/self/exe", buf, 0) = -1 errno 22' in lines
    assert "/proc/self/cwd -> /sub" in lines and f"../proc/self/exe -> {name}" in lines
