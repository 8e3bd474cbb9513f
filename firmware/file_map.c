/*
 * file_map - file mappings over the page cache: MAP_SHARED with msync and
 * write-back, MAP_PRIVATE copy-on-write, MAP_NOSYNCFILE, read()/write()
 * coherence with mappings, and SIGBUS past the end of the file.
 *
 * Usage: file_map MODE FILE PAGES
 *   Every mode first creates FILE with PAGES pages, page i filled with the byte 'a'+i%26.
 *   shared    map MAP_SHARED read-write; write "S" at the start of every page; msync(MS_SYNC);
 *             write "T" at offset 1 of every page; munmap (which writes it back)
 *   async     like shared with msync(MS_ASYNC), and no munmap: exit writes the rest back
 *   private   map MAP_PRIVATE read-write; read every page, then write "P" into every page;
 *             the file must stay unchanged (checked with pread)
 *   nosync    map MAP_SHARED|MAP_NOSYNCFILE; write "N" into every page; msync; munmap; the
 *             file must stay unchanged
 *   coherent  map MAP_SHARED; pwrite "W" at page 0 and read it through the mapping; write
 *             "M" through the mapping at page 1 and pread it back, before any msync
 *   eof       map PAGES+1 pages; touching the page past the end of the file raises SIGBUS
 *   invalidate map MAP_SHARED; read every page; msync(MS_INVALIDATE); read every page again
 *             (emu reads the dropped clean pages from the file again)
 * Output: "mode=MODE ok" (exit 0), or a message and exit 1 (eof: killed by SIGBUS).
 */
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "emu.h"
#include "fwutil.h"

#define PAGE 4096

static void check(int ok, const char *what)
{
    if (!ok)
        fail_with(EXIT_RUNTIME_FAILURE, "FAILED: %s", what);
}

static int create(const char *path, long pages)
{
    int fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0644);
    if (fd < 0)
        fail_errno("open");
    char buf[PAGE];
    for (long i = 0; i < pages; i++) {
        memset(buf, 'a' + (int)(i % 26), sizeof buf);
        if (write(fd, buf, sizeof buf) != PAGE)
            fail_errno("write");
    }
    return fd;
}

static char *map(int fd, long pages, int flags)
{
    char *p = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, flags, fd, 0);
    if (p == MAP_FAILED)
        fail_errno("mmap");
    return p;
}

static char file_byte(int fd, long offset)
{
    char c;
    check(pread(fd, &c, 1, offset) == 1, "pread");
    return c;
}

int main(int argc, char **argv)
{
    if (argc != 4)
        fail_with(EXIT_USAGE, "usage: file_map MODE FILE PAGES");
    const char *mode = argv[1];
    long pages = (long)parse_count(argv[3], "PAGES");
    int fd = create(argv[2], pages);

    if (strcmp(mode, "shared") == 0 || strcmp(mode, "async") == 0) {
        int sync = strcmp(mode, "shared") == 0;
        char *p = map(fd, pages, MAP_SHARED);
        for (long i = 0; i < pages; i++)
            p[i * PAGE] = 'S';
        check(msync(p, pages * PAGE, sync ? MS_SYNC : MS_ASYNC) == 0, "msync");
        check(file_byte(fd, 0) == 'S', "msync wrote the file");
        for (long i = 0; i < pages; i++)
            p[i * PAGE + 1] = 'T';
        if (sync)
            check(munmap(p, pages * PAGE) == 0, "munmap");
    } else if (strcmp(mode, "private") == 0) {
        char *p = map(fd, pages, MAP_PRIVATE);
        long sum = 0;
        for (long i = 0; i < pages; i++)
            sum += p[i * PAGE];
        check(sum > 0, "private mapping shows the file");
        for (long i = 0; i < pages; i++)
            p[i * PAGE] = 'P';
        check(p[0] == 'P' && file_byte(fd, 0) == 'a', "private writes stay private");
        check(munmap(p, pages * PAGE) == 0, "munmap");
        check(file_byte(fd, 0) == 'a', "file unchanged after munmap");
    } else if (strcmp(mode, "nosync") == 0) {
        char *p = map(fd, pages, MAP_SHARED | MAP_NOSYNCFILE);
        for (long i = 0; i < pages; i++)
            p[i * PAGE] = 'N';
        check(msync(p, pages * PAGE, MS_SYNC) == 0, "msync");
        check(munmap(p, pages * PAGE) == 0, "munmap");
    } else if (strcmp(mode, "coherent") == 0) {
        check(pages >= 2, "coherent needs 2 pages");
        char *p = map(fd, pages, MAP_SHARED);
        check(p[0] == 'a', "mapping shows the file");
        check(pwrite(fd, "W", 1, 0) == 1, "pwrite");
        check(p[0] == 'W', "the mapping sees write()");
        p[PAGE] = 'M';
        check(file_byte(fd, PAGE) == 'M', "read() sees the mapping's write");
    } else if (strcmp(mode, "invalidate") == 0) {
        char *p = map(fd, pages, MAP_SHARED);
        long sum = 0;
        for (long i = 0; i < pages; i++)
            sum += p[i * PAGE];
        check(msync(p, pages * PAGE, MS_INVALIDATE) == 0, "msync");
        for (long i = 0; i < pages; i++)
            sum -= p[i * PAGE];
        check(sum == 0, "same contents after MS_INVALIDATE");
    } else if (strcmp(mode, "eof") == 0) {
        char *p = map(fd, pages + 1, MAP_SHARED);
        printf("mode=%s touching past the end\n", mode);
        fflush(stdout);
        p[pages * PAGE] = 'X';
        fail_with(EXIT_RUNTIME_FAILURE, "no SIGBUS past the end of the file");
    } else {
        fail_with(EXIT_USAGE, "unknown mode '%s'", mode);
    }
    printf("mode=%s ok\n", mode);
    return 0;
}
