/*
 * lock_modes - making memory resident ahead of use: mlock, mlockall, MAP_LOCKED,
 * MAP_POPULATE and QNX superlocking (ThreadCtl(_NTO_TCTL_IO)).
 *
 * Usage: lock_modes MODE N
 *   MODE: none | mlock | mlockall | map_locked | populate | superlock | file | file_mlock
 *   Anonymous modes map N pages, then read one byte of every page, then write one.
 *   The file modes write N pages to "lock_modes.tmp" in the current directory, map the
 *   file MAP_PRIVATE read-only (file_mlock locks it), read every page and remove the file.
 * What the emulator should show (faults counted per run by cause):
 *   none: N zero-fill + N write-track; mlock/mlockall/map_locked/populate: 0 + N
 *   write-track (resident, but the first write still faults); superlock: no fault at all;
 *   file: N page-ins; file_mlock: none (read in by mlock).
 * Output: "mode=MODE pages=N sum=S" (S: sum of the bytes read back). Exit 0; 1 when a
 * call fails (superlock needs root: it prints "ThreadCtl: Operation not permitted").
 */
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "emu.h"
#include "fwutil.h"

static unsigned long touch(volatile unsigned char *p, unsigned long pages, long page, int write)
{
    unsigned long sum = 0;
    for (unsigned long i = 0; i < pages; i++)
        sum += p[i * page];
    if (write)
        for (unsigned long i = 0; i < pages; i++)
            p[i * page] = (unsigned char)(i + 1);
    return sum;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        fail_with(EXIT_USAGE, "usage: lock_modes MODE N");
    const char *mode = argv[1];
    unsigned long pages = (unsigned long)parse_count(argv[2], "N");
    long page = sysconf(_SC_PAGESIZE);
    size_t length = pages * page;
    unsigned long sum;

    if (strncmp(mode, "file", 4) == 0) {
        int fd = open("lock_modes.tmp", O_CREAT | O_RDWR | O_TRUNC, 0644);
        if (fd < 0)
            fail_errno("open");
        unsigned char buf[4096];
        for (unsigned long i = 0; i < pages; i++) {
            memset(buf, (int)(i % 7 + 1), sizeof buf);
            if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf)
                fail_errno("write");
        }
        unsigned char *p = mmap(NULL, length, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED)
            fail_errno("mmap");
        if (strcmp(mode, "file_mlock") == 0 && mlock(p, length) != 0)
            fail_errno("mlock");
        sum = touch(p, pages, page, 0);
        close(fd);
        unlink("lock_modes.tmp");
    } else {
        int flags = MAP_PRIVATE | MAP_ANONYMOUS;
        if (strcmp(mode, "mlockall") == 0 && mlockall(MCL_CURRENT | MCL_FUTURE) != 0)
            fail_errno("mlockall");
        if (strcmp(mode, "superlock") == 0 && ThreadCtl(_NTO_TCTL_IO, 0) == -1)
            fail_errno("ThreadCtl");
        if (strcmp(mode, "map_locked") == 0)
            flags |= MAP_LOCKED;
        if (strcmp(mode, "populate") == 0)
            flags |= MAP_POPULATE;
        unsigned char *p = mmap(NULL, length, PROT_READ | PROT_WRITE, flags, -1, 0);
        if (p == MAP_FAILED)
            fail_errno("mmap");
        if (strcmp(mode, "mlock") == 0 && mlock(p, length) != 0)
            fail_errno("mlock");
        sum = touch(p, pages, page, 1);
    }
    printf("mode=%s pages=%lu sum=%lu\n", mode, pages, sum);
    return 0;
}
