/*
 * page_touch - demand paging of a fresh anonymous mapping: first-touch
 * writes, zero-filled untouched pages, read-back, munmap.
 *
 * Usage: page_touch N [STRIDE_PAGES [MODE]]
 *   MODE is how the region is mapped: "commit" (default: frames committed at
 *   mmap, which fails with ENOMEM when RAM is short), "lazy" (MAP_LAZY: a frame
 *   at first touch, SIGBUS when none is left) or "noreserve" (MAP_NORESERVE,
 *   which emu treats like MAP_LAZY).
 *   Maps N pages (N = 0 skips mmap/munmap), writes one byte into every
 *   STRIDE_PAGES-th page (default 1, must be >= 1) starting with page 0, then
 *   reads one byte back from every page. Page i holds its byte at offset
 *   (i * 64) % page_size; the value is page_value(i) if the page was written,
 *   0 otherwise.
 * Output (stdout): pages=<N> checksum=0x<16 hex digits>
 *   The checksum only depends on N and STRIDE_PAGES (not on the page size);
 *   it is 0 for N = 0.
 * Exit status: 0 ok, 1 syscall failure or wrong byte read back, 2 bad usage.
 */
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "emu.h"
#include "fwutil.h"

static unsigned char page_value(uint64_t page)
{
    return (unsigned char)(page * 131 + 7);
}

/* The one byte of page `page` that is written and read back. */
static unsigned char *probe_byte(unsigned char *region, uint64_t page, size_t page_size)
{
    return region + page * page_size + (page * 64) % page_size;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 4)
        fail_with(EXIT_USAGE, "usage: page_touch N [STRIDE_PAGES [commit|lazy|noreserve]]");
    uint64_t pages = parse_count(argv[1], "N");
    uint64_t stride = argc > 2 ? parse_count(argv[2], "STRIDE_PAGES") : 1;
    if (stride == 0)
        fail_with(EXIT_USAGE, "STRIDE_PAGES must be >= 1");
    int extra_flags = 0;
    const char *mode = argc > 3 ? argv[3] : "commit";
    if (strcmp(mode, "lazy") == 0)
        extra_flags = MAP_LAZY;
    else if (strcmp(mode, "noreserve") == 0)
        extra_flags = MAP_NORESERVE;
    else if (strcmp(mode, "commit") != 0)
        fail_with(EXIT_USAGE, "MODE must be commit, lazy or noreserve");

    long page_size_result = sysconf(_SC_PAGESIZE);
    if (page_size_result <= 0)
        fail_errno("sysconf(_SC_PAGESIZE)");
    size_t page_size = (size_t)page_size_result;
    if (pages > SIZE_MAX / page_size)
        fail_with(EXIT_USAGE, "N too large: %llu pages", (unsigned long long)pages);
    size_t length = pages * page_size;

    unsigned char *region = NULL;
    if (pages > 0) {
        region = mmap(NULL, length, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | extra_flags, -1, 0);
        if (region == MAP_FAILED)
            fail_errno("mmap");
    }

    for (uint64_t page = 0; page < pages; page += stride)
        *probe_byte(region, page, page_size) = page_value(page);

    uint64_t checksum = 0;
    for (uint64_t page = 0; page < pages; page++) {
        unsigned char expected = page % stride == 0 ? page_value(page) : 0;
        unsigned char actual = *probe_byte(region, page, page_size);
        if (actual != expected)
            fail_with(EXIT_RUNTIME_FAILURE, "page %llu: read 0x%02x, expected 0x%02x",
                      (unsigned long long)page, actual, expected);
        checksum = checksum * 1000003 + actual + 1;
    }

    if (pages > 0 && munmap(region, length) != 0)
        fail_errno("munmap");

    printf("pages=%llu checksum=0x%016llx\n", (unsigned long long)pages,
           (unsigned long long)checksum);
    if (fflush(stdout) != 0)
        fail_errno("write stdout");
    return 0;
}
