/*
 * msync_log - a log written through a shared file mapping and made durable with msync:
 * what the program believes is in the file, against what is, when the backing store
 * fails writes.
 *
 * Usage: msync_log MODE FILE RECORDS
 *   Creates FILE with RECORDS pages (at most 256), maps it MAP_SHARED and, for each
 *   record i, writes the record into page i and msyncs that page (MS_SYNC). Then fsyncs
 *   the file and munmaps it (which writes back anything still modified).
 *   MODE trust  ignores what msync and fsync return: it believes every record is in the
 *               file (a program that does not check)
 *   MODE check  retries a failed msync up to 3 times; if it still fails, or fsync fails,
 *               it reports the lost record on stderr and exits 1
 * Output: "believed=N records digest=0x..." — N records the program believes are in the
 *   file, and a digest of the file as it believes it is (exit 0).
 */
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fwutil.h"

#define PAGE 4096
#define MAX_RECORDS 256

static void record(unsigned char *page, unsigned long i)
{
    int n = snprintf((char *)page, PAGE, "record %lu: the quick brown fox\n", i);
    memset(page + n, (int)('a' + i % 26), PAGE - (size_t)n);
}

int main(int argc, char **argv)
{
    if (argc != 4)
        fail_with(EXIT_USAGE, "usage: msync_log trust|check FILE RECORDS");
    int check = strcmp(argv[1], "check") == 0;
    if (!check && strcmp(argv[1], "trust") != 0)
        fail_with(EXIT_USAGE, "MODE is trust or check, not '%s'", argv[1]);
    unsigned long records = parse_count(argv[3], "RECORDS");
    if (records == 0 || records > MAX_RECORDS)
        fail_with(EXIT_USAGE, "RECORDS must be 1-%d", MAX_RECORDS);

    int fd = open(argv[2], O_CREAT | O_RDWR | O_TRUNC, 0644);
    if (fd < 0)
        fail_errno("open");
    if (ftruncate(fd, (off_t)(records * PAGE)) != 0)
        fail_errno("ftruncate");
    unsigned char *map = mmap(NULL, records * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED)
        fail_errno("mmap");

    static unsigned char believed[PAGE];
    uint64_t digest = 0xcbf29ce484222325ULL;       /* FNV-1a of the file as believed */
    for (unsigned long i = 0; i < records; i++) {
        record(map + i * PAGE, i);
        int tries = 0, rc;
        while ((rc = msync(map + i * PAGE, PAGE, MS_SYNC)) != 0 && check && ++tries <= 3)
            ;
        if (rc != 0 && check)
            fail_with(EXIT_RUNTIME_FAILURE, "record %lu lost: msync: %s", i, strerror(errno));
        record(believed, i);
        for (unsigned long k = 0; k < PAGE; k++)
            digest = (digest ^ believed[k]) * 0x100000001b3ULL;
    }
    if (fsync(fd) != 0 && check)
        fail_errno("fsync");
    if (munmap(map, records * PAGE) != 0)
        fail_errno("munmap");
    close(fd);
    printf("believed=%lu records digest=0x%016llx\n", records, (unsigned long long)digest);
    return 0;
}
