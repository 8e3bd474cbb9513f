/*
 * track_writes - write tracking: a page first read is mapped read-only, and
 * its first write faults again and marks it modified.
 *
 * Usage: track_writes N
 *   Maps N anonymous pages, reads one byte of each (all zero), then writes
 *   one byte into each, then reads them all back.
 * Output: "pages=N read=0 written=N" (the count of pages that read back their byte).
 * Exit 0, 1 on a failure, 2 on bad usage.
 */
#include <sys/mman.h>
#include <unistd.h>

#include "fwutil.h"

int main(int argc, char **argv)
{
    if (argc != 2)
        fail_with(EXIT_USAGE, "usage: track_writes N");
    unsigned long pages = (unsigned long)parse_count(argv[1], "N");
    if (pages == 0)
        fail_with(EXIT_USAGE, "N must be >= 1");
    long page = sysconf(_SC_PAGESIZE);
    volatile unsigned char *region = mmap(NULL, pages * page, PROT_READ | PROT_WRITE,
                                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED)
        fail_errno("mmap");
    unsigned long nonzero = 0, written = 0;
    for (unsigned long i = 0; i < pages; i++)
        nonzero += region[i * page] != 0;
    for (unsigned long i = 0; i < pages; i++)
        region[i * page] = (unsigned char)(i | 1);
    for (unsigned long i = 0; i < pages; i++)
        written += region[i * page] == (unsigned char)(i | 1);
    printf("pages=%lu read=%lu written=%lu\n", pages, nonzero, written);
    return written == pages && nonzero == 0 ? 0 : EXIT_RUNTIME_FAILURE;
}
