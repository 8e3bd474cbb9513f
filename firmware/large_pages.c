/*
 * large_pages - small pages coalescing into large ones, and splitting again.
 *
 * Usage: large_pages KIB
 *   Maps KIB KiB of committed anonymous memory (emu places it aligned to the largest
 *   large page it can hold), writes every page, checks every page, then changes the
 *   protection of one page in the middle (which splits the large page holding it), checks
 *   every page again and unmaps the first 64 KiB (splitting again when that is part of a
 *   2 MiB page).
 * Output: "kib=KIB aligned_2m=A aligned_64k=B ok" (A, B: whether the mapping's address is
 * 2 MiB- / 64 KiB-aligned). Exit 0, or 1 when a page reads back wrong.
 */
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fwutil.h"

#define PAGE 4096

static int check_all(volatile unsigned char *p, size_t pages, size_t skip_first)
{
    for (size_t i = skip_first; i < pages; i++)
        if (p[i * PAGE + 7] != (unsigned char)(i * 3 + 1))
            return 0;
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 2)
        fail_with(EXIT_USAGE, "usage: large_pages KIB");
    size_t kib = (size_t)parse_count(argv[1], "KIB");
    size_t pages = kib / 4;
    if (pages < 32)
        fail_with(EXIT_USAGE, "KIB must be at least 128");
    volatile unsigned char *p = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE,
                                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        fail_errno("mmap");
    for (size_t i = 0; i < pages; i++)
        p[i * PAGE + 7] = (unsigned char)(i * 3 + 1);
    if (!check_all(p, pages, 0))
        fail_with(EXIT_RUNTIME_FAILURE, "FAILED: contents after coalescing");
    if (mprotect((void *)(p + (pages / 2) * PAGE), PAGE, PROT_READ) != 0)
        fail_errno("mprotect");
    if (!check_all(p, pages, 0))
        fail_with(EXIT_RUNTIME_FAILURE, "FAILED: contents after a split");
    if (munmap((void *)p, 16 * PAGE) != 0)
        fail_errno("munmap");
    if (!check_all(p, pages, 16))
        fail_with(EXIT_RUNTIME_FAILURE, "FAILED: contents after a partial munmap");
    uintptr_t a = (uintptr_t)p;
    printf("kib=%zu aligned_2m=%d aligned_64k=%d ok\n", kib, (a & 0x1FFFFF) == 0, (a & 0xFFFF) == 0);
    return 0;
}
