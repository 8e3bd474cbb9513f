/*
 * unknown_syscall - makes a system call no kernel implements, twice.
 *
 * Output: "first: -1 ENOSYS" and "second: -1 ENOSYS". Exit 0, or 1 if the
 * call did not fail with ENOSYS.
 */
#include <unistd.h>
#include <sys/syscall.h>

#include "fwutil.h"

#define NO_SUCH_SYSCALL 4000

static void call(const char *label)
{
    errno = 0;
    long r = syscall(NO_SUCH_SYSCALL, 1, 2, 3);
    printf("%s: %ld %s\n", label, r, errno == ENOSYS ? "ENOSYS" : strerror(errno));
    if (r != -1 || errno != ENOSYS)
        exit(EXIT_RUNTIME_FAILURE);
}

int main(void)
{
    call("first");
    call("second");
    return 0;
}
