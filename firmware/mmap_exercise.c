/*
 * mmap_exercise - the memory-map syscalls one step at a time: anonymous
 * mmap, mprotect, partial munmap, MAP_FIXED into a hole, private file
 * mapping, madvise(MADV_DONTNEED) and an invalid mmap.
 *
 * Usage: mmap_exercise            (no arguments; creates and removes the file
 *                                  "mmap_exercise.tmp" in the current directory)
 * Output (stdout), one line per step, in this order:
 *   step anon: ok
 *   step mprotect: ok
 *   step munmap_middle: ok
 *   step map_fixed: ok
 *   step file: ok
 *   step madvise: ok
 *   step invalid: ok
 *   all ok
 * Exit status: 0 ok; 1 if a step fails ("step <name>: FAILED: ..." on stderr);
 * 2 if called with arguments.
 */
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fwutil.h"

#define REGION_PAGES 8
#define HOLE_PAGE 3
#define FILE_NAME "mmap_exercise.tmp"
#define FILE_SIZE 5000

static const char *current_step;
static size_t page_size;

/* Report "step <current_step>: FAILED: <message>" on stderr and exit 1. */
static __attribute__((noreturn, format(printf, 1, 2))) void step_fail(const char *format, ...)
{
    va_list args;
    fprintf(stderr, "step %s: FAILED: ", current_step);
    va_start(args, format);
    vfprintf(stderr, format, args);
    va_end(args);
    fputc('\n', stderr);
    exit(EXIT_RUNTIME_FAILURE);
}

/* Fail the current step with the errno text of `call` unless `ok`. */
static void check_syscall(int ok, const char *call)
{
    if (!ok)
        step_fail("%s: %s", call, strerror(errno));
}

static void step_done(void)
{
    printf("step %s: ok\n", current_step);
}

static unsigned char pattern_byte(size_t offset, unsigned seed)
{
    return (unsigned char)(offset * 7 + offset / 251 + seed);
}

static void fill_pattern(unsigned char *bytes, size_t length, size_t base, unsigned seed)
{
    for (size_t i = 0; i < length; i++)
        bytes[i] = pattern_byte(base + i, seed);
}

/* Fail the current step unless bytes[0..length) hold the pattern starting at base. */
static void expect_pattern(const unsigned char *bytes, size_t length, size_t base, unsigned seed)
{
    for (size_t i = 0; i < length; i++)
        if (bytes[i] != pattern_byte(base + i, seed))
            step_fail("byte %zu is 0x%02x, expected 0x%02x", base + i, bytes[i],
                      pattern_byte(base + i, seed));
}

/* Fail the current step unless bytes[0..length) are all zero. */
static void expect_zero(const unsigned char *bytes, size_t length)
{
    for (size_t i = 0; i < length; i++)
        if (bytes[i] != 0)
            step_fail("byte %zu is 0x%02x, expected 0", i, bytes[i]);
}

static unsigned char *map_anonymous(void *address, size_t length, int extra_flags)
{
    unsigned char *mapping = mmap(address, length, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS | extra_flags, -1, 0);
    check_syscall(mapping != MAP_FAILED, "mmap");
    return mapping;
}

/* Anonymous memory starts zeroed and keeps what is written to it. */
static unsigned char *step_anon(size_t length)
{
    current_step = "anon";
    unsigned char *region = map_anonymous(NULL, length, 0);
    expect_zero(region, length);
    fill_pattern(region, length, 0, 1);
    expect_pattern(region, length, 0, 1);
    step_done();
    return region;
}

/* Read-only protection keeps the contents; restoring RW makes it writable again. */
static void step_mprotect(unsigned char *region, size_t length)
{
    current_step = "mprotect";
    check_syscall(mprotect(region, length, PROT_READ) == 0, "mprotect(PROT_READ)");
    expect_pattern(region, length, 0, 1);
    check_syscall(mprotect(region, length, PROT_READ | PROT_WRITE) == 0, "mprotect(RW)");
    fill_pattern(region, length, 0, 2);
    expect_pattern(region, length, 0, 2);
    step_done();
}

/* Unmapping a middle page leaves the pieces before and after it intact. */
static void step_munmap_middle(unsigned char *region, size_t length)
{
    current_step = "munmap_middle";
    size_t hole = HOLE_PAGE * page_size;
    check_syscall(munmap(region + hole, page_size) == 0, "munmap");
    expect_pattern(region, hole, 0, 2);
    expect_pattern(region + hole + page_size, length - hole - page_size, hole + page_size, 2);
    step_done();
}

/* MAP_FIXED refills the hole with a fresh zeroed page at exactly that address. */
static void step_map_fixed(unsigned char *region, size_t length)
{
    current_step = "map_fixed";
    size_t hole = HOLE_PAGE * page_size;
    unsigned char *page = map_anonymous(region + hole, page_size, MAP_FIXED);
    if (page != region + hole)
        step_fail("MAP_FIXED mapping landed at the wrong address");
    expect_zero(page, page_size);
    fill_pattern(page, page_size, hole, 2);
    expect_pattern(region, length, 0, 2);
    step_done();
}

/* A private read-only file mapping shows the file, zero-filled past EOF. */
static void step_file(void)
{
    current_step = "file";
    unsigned char contents[FILE_SIZE];
    fill_pattern(contents, FILE_SIZE, 0, 3);

    int fd = open(FILE_NAME, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    check_syscall(fd >= 0, "open for writing");
    check_syscall(write(fd, contents, FILE_SIZE) == FILE_SIZE, "write");
    check_syscall(close(fd) == 0, "close");

    fd = open(FILE_NAME, O_RDONLY);
    check_syscall(fd >= 0, "open for reading");
    size_t mapped_length = (FILE_SIZE + page_size - 1) / page_size * page_size;
    unsigned char *mapping = mmap(NULL, mapped_length, PROT_READ, MAP_PRIVATE, fd, 0);
    check_syscall(mapping != MAP_FAILED, "mmap file");
    check_syscall(close(fd) == 0, "close");

    expect_pattern(mapping, FILE_SIZE, 0, 3);
    expect_zero(mapping + FILE_SIZE, mapped_length - FILE_SIZE);
    check_syscall(munmap(mapping, mapped_length) == 0, "munmap file");
    check_syscall(unlink(FILE_NAME) == 0, "unlink");
    step_done();
}

/* MADV_DONTNEED on private anonymous memory discards it: it reads back as zero. */
static void step_madvise(unsigned char *region, size_t length)
{
    current_step = "madvise";
    unsigned char *page = region + page_size;
    check_syscall(madvise(page, page_size, MADV_DONTNEED) == 0, "madvise(MADV_DONTNEED)");
    expect_zero(page, page_size);
    expect_pattern(region, page_size, 0, 2);
    expect_pattern(page + page_size, length - 2 * page_size, 2 * page_size, 2);
    step_done();
}

/* A zero-length mmap is rejected with EINVAL. */
static void step_invalid(void)
{
    current_step = "invalid";
    errno = 0;
    void *mapping = mmap(NULL, 0, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mapping != MAP_FAILED)
        step_fail("zero-length mmap succeeded");
    if (errno != EINVAL)
        step_fail("zero-length mmap: errno %d (%s), expected EINVAL", errno, strerror(errno));
    step_done();
}

int main(int argc, char **argv)
{
    (void)argv;
    if (argc != 1)
        fail_with(EXIT_USAGE, "usage: mmap_exercise");

    long page_size_result = sysconf(_SC_PAGESIZE);
    if (page_size_result <= 0)
        fail_errno("sysconf(_SC_PAGESIZE)");
    page_size = (size_t)page_size_result;
    size_t length = REGION_PAGES * page_size;

    unsigned char *region = step_anon(length);
    step_mprotect(region, length);
    step_munmap_middle(region, length);
    step_map_fixed(region, length);
    step_file();
    step_madvise(region, length);
    step_invalid();

    current_step = "cleanup";
    check_syscall(munmap(region, length) == 0, "munmap");
    puts("all ok");
    if (fflush(stdout) != 0)
        fail_errno("write stdout");
    return 0;
}
