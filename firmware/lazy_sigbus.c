/*
 * lazy_sigbus - memory that may not be there: what a program sees when a frame cannot be
 * had, committed at mmap or lazily at first touch (the seed's MAP_LAZY and SIGBUS).
 *
 * Usage: lazy_sigbus MODE PAGES [cow] [where]
 *   MODE commit  mmap PAGES anonymous pages the ordinary way: the frames are committed at
 *                mmap, which fails with ENOMEM when they cannot be (reported, exit 1)
 *   MODE lazy    mmap them with MAP_LAZY: each frame comes at the first touch, and when
 *                none can be had the toucher gets SIGBUS (BUS_OBJERR, si_addr the page)
 *   Then writes a value into every page. A SIGBUS handler (SA_SIGINFO) reports the page
 *   and siglongjmps out; the program skips that page and goes on.
 *   With "cow", it then forks; the child writes every page again (copy-on-write copies,
 *   which need frames too: a SIGBUS there is reported by the child) and exits with the
 *   number of pages it could not write; the parent reports that.
 * Output: with "where", "region=0x..." (where the pages are); a line per SIGBUS; then
 *   "mode=MODE pages=PAGES written=W sigbus=S sum=0x..." (exit 0 if S == 0, else 3:
 *   the program noticed lost memory), or "mmap: ..." on stderr (exit 1).
 */
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "emu.h"
#include "fwutil.h"

#define PAGE 4096

static sigjmp_buf escape;
static volatile uintptr_t bus_addr;
static volatile int bus_code;

static void on_sigbus(int sig, siginfo_t *info, void *ctx)
{
    (void)sig;
    (void)ctx;
    bus_addr = (uintptr_t)info->si_addr;
    bus_code = info->si_code;
    siglongjmp(escape, 1);
}

/* Write every page of `region`; returns how many raised SIGBUS. */
static unsigned long touch_all(volatile unsigned char *region, unsigned long pages,
                               unsigned char salt, unsigned long *written)
{
    volatile unsigned long faults = 0;
    for (volatile unsigned long i = 0; i < pages; i++) {
        if (sigsetjmp(escape, 1)) {
            faults++;
            printf("SIGBUS at page %lu (si_addr %s, code %s)\n", (unsigned long)i,
                   bus_addr == (uintptr_t)(region + i * PAGE) ? "ok" : "WRONG",
                   bus_code == BUS_OBJERR ? "BUS_OBJERR" : "other");
            continue;
        }
        region[i * PAGE] = (unsigned char)(i * 7 + salt);
        (*written)++;
    }
    return faults;
}

int main(int argc, char **argv)
{
    int cow = 0, where = 0;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "cow") == 0)
            cow = 1;
        else if (strcmp(argv[i], "where") == 0)
            where = 1;
        else
            fail_with(EXIT_USAGE, "usage: lazy_sigbus commit|lazy PAGES [cow] [where]");
    }
    if (argc < 3)
        fail_with(EXIT_USAGE, "usage: lazy_sigbus commit|lazy PAGES [cow] [where]");
    int lazy = strcmp(argv[1], "lazy") == 0;
    if (!lazy && strcmp(argv[1], "commit") != 0)
        fail_with(EXIT_USAGE, "MODE is commit or lazy, not '%s'", argv[1]);
    unsigned long pages = parse_count(argv[2], "PAGES");
    if (pages == 0)
        fail_with(EXIT_USAGE, "PAGES must be at least 1");

    struct sigaction sa = {0};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGBUS, &sa, NULL);

    unsigned char *region = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS | (lazy ? MAP_LAZY : 0), -1, 0);
    if (region == MAP_FAILED)
        fail_errno("mmap");
    setvbuf(stdout, NULL, _IONBF, 0);
    if (where)
        printf("region=%p\n", (void *)region);
    unsigned long written = 0;
    unsigned long faults = touch_all(region, pages, 1, &written);

    if (cow) {
        pid_t child = fork();
        if (child < 0)
            fail_errno("fork");
        if (child == 0) {
            unsigned long again = 0;
            _exit((int)touch_all(region, pages, 2, &again));
        }
        int status;
        if (waitpid(child, &status, 0) != child)
            fail_errno("waitpid");
        if (WIFEXITED(status)) {
            printf("child: %d page(s) lost\n", WEXITSTATUS(status));
            faults += (unsigned long)WEXITSTATUS(status);
        } else {
            printf("child: killed by signal %d\n", WTERMSIG(status));
            faults++;
        }
    }

    uint64_t sum = 0;
    for (unsigned long i = 0; i < pages; i++)
        sum = sum * 31 + region[i * PAGE];
    printf("mode=%s pages=%lu written=%lu sigbus=%lu sum=0x%016llx\n", argv[1], pages, written,
           faults, (unsigned long long)sum);
    return faults ? 3 : 0;
}
