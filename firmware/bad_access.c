/*
 * bad_access - a guest that makes one bad memory access, to check the signal
 * the kernel answers with (default action: the process dies with it).
 *
 * Usage: bad_access MODE
 *   null-read   read from address 0           -> SIGSEGV (SEGV_MAPERR)
 *   ro-write    write to a PROT_READ mapping  -> SIGSEGV (SEGV_ACCERR)
 *   exec-data   jump into a PROT_READ|PROT_WRITE page -> SIGSEGV (SEGV_ACCERR)
 * Prints "about to MODE" (flushed) first; never returns normally for a valid
 * MODE (exit 1 if the access unexpectedly succeeded, 2 for a bad MODE).
 */
#include <sys/mman.h>

#include "fwutil.h"

int main(int argc, char **argv)
{
    if (argc != 2)
        fail_with(EXIT_USAGE, "usage: bad_access null-read|ro-write|exec-data");
    const char *mode = argv[1];
    long page = 4096;
    printf("about to %s\n", mode);
    fflush(stdout);
    if (strcmp(mode, "null-read") == 0) {
        volatile int *p = NULL;
        printf("%d\n", *p);
    } else if (strcmp(mode, "ro-write") == 0) {
        volatile char *p = mmap(NULL, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            fail_errno("mmap");
        p[0] = 1;
    } else if (strcmp(mode, "exec-data") == 0) {
        unsigned char *p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            fail_errno("mmap");
        p[0] = 0xc3; /* ret on x86; garbage on AArch64: either way it must not run */
        ((void (*)(void))p)();
    } else {
        fail_with(EXIT_USAGE, "unknown mode '%s'", mode);
    }
    fail_with(EXIT_RUNTIME_FAILURE, "%s: the access did not fault", mode);
}
