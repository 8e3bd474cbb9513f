/*
 * syscall_loop - the cost of a system call that cannot block: N getppid() calls
 * made with the raw syscall() wrapper (glibc does not cache getppid), then one
 * line of output.
 *
 * Usage: syscall_loop [N]     N defaults to 100000
 * Output (stdout): calls=<N> ppid=<the last result>
 * Exit status: 0 ok, 1 stdout write failure, 2 bad usage.
 */
#include <sys/syscall.h>
#include <unistd.h>

#include "fwutil.h"

int main(int argc, char **argv)
{
    if (argc > 2)
        fail_with(EXIT_USAGE, "usage: syscall_loop [N]");
    unsigned long long n = argc > 1 ? parse_count(argv[1], "N") : 100000;
    long ppid = 0;

    for (unsigned long long i = 0; i < n; i++)
        ppid = syscall(SYS_getppid);
    printf("calls=%llu ppid=%ld\n", n, ppid);
    if (fflush(stdout) != 0)
        fail_errno("write stdout");
    return 0;
}
