/*
 * fork_exec - processes: fork with copy-on-write memory, vfork, execve, wait4/waitpid,
 * waitid, exit statuses.
 *
 * Usage: fork_exec MODE [PROGRAM]
 *   cow     fork; the child changes a 16-page buffer it shares copy-on-write and exits 7;
 *           the parent waits, then checks its own buffer is unchanged
 *   exec    fork; the child execs PROGRAM with arguments "from-exec" "9"; the parent waits
 *           (hello exits with its first argument if numeric: use firmware hello)
 *   vfork   vfork; the child exits 3 at once; the parent continues after it
 *   waitid  fork; the child exits 5; the parent collects it with waitid(P_PID)
 *   abort   fork; the child calls abort(); the parent sees it killed by SIGABRT
 * Output: lines from the child (before it exits) and the parent; exit 0, 1 on a failure.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fwutil.h"

#define PAGES 16
#define PAGE 4096

static void check(int ok, const char *what)
{
    if (!ok)
        fail_with(EXIT_RUNTIME_FAILURE, "FAILED: %s", what);
}

static void report(pid_t child, int status)
{
    if (WIFEXITED(status))
        printf("parent: child %s exited %d\n", child > 0 ? "ok" : "?", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        printf("parent: child killed by signal %d\n", WTERMSIG(status));
}

int main(int argc, char **argv)
{
    if (argc < 2)
        fail_with(EXIT_USAGE, "usage: fork_exec cow|exec|vfork|waitid|abort [PROGRAM]");
    const char *mode = argv[1];
    fflush(stdout);
    int status = 0;
    if (strcmp(mode, "cow") == 0) {
        unsigned char *buf = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        check(buf != MAP_FAILED, "mmap");
        for (int i = 0; i < PAGES; i++)
            buf[i * PAGE] = (unsigned char)('A' + i);
        pid_t pid = fork();
        check(pid >= 0, "fork");
        if (pid == 0) {
            for (int i = 0; i < PAGES; i++)
                buf[i * PAGE] = 'z';
            printf("child: wrote its copy, first byte %c, getppid ok %d\n", buf[0], getppid() > 0);
            fflush(stdout);
            _exit(7);
        }
        check(waitpid(pid, &status, 0) == pid, "waitpid");
        report(pid, status);
        int same = 1;
        for (int i = 0; i < PAGES; i++)
            same &= buf[i * PAGE] == (unsigned char)('A' + i);
        printf("parent: own pages unchanged %d\n", same);
        check(same && WEXITSTATUS(status) == 7, "copy-on-write");
    } else if (strcmp(mode, "exec") == 0) {
        check(argc == 3, "exec needs PROGRAM");
        pid_t pid = fork();
        check(pid >= 0, "fork");
        if (pid == 0) {
            char *args[] = {argv[2], "9", "from-exec", NULL};
            char *env[] = {"EMU_GREETING=exec'd", NULL};
            execve(argv[2], args, env);
            fail_errno("execve");
        }
        check(waitpid(pid, &status, 0) == pid, "waitpid");
        report(pid, status);
        check(WIFEXITED(status) && WEXITSTATUS(status) == 9, "exec'd program's status");
    } else if (strcmp(mode, "vfork") == 0) {
        pid_t pid = vfork();
        check(pid >= 0, "vfork");
        if (pid == 0)
            _exit(3);
        check(waitpid(pid, &status, 0) == pid, "waitpid");
        report(pid, status);
    } else if (strcmp(mode, "waitid") == 0) {
        pid_t pid = fork();
        check(pid >= 0, "fork");
        if (pid == 0)
            _exit(5);
        siginfo_t info;
        memset(&info, 0, sizeof info);
        check(waitid(P_PID, (id_t)pid, &info, WEXITED) == 0, "waitid");
        printf("parent: waitid signo=%d code=%s status=%d pid ok %d\n", info.si_signo,
               info.si_code == CLD_EXITED ? "CLD_EXITED" : "other", info.si_status,
               info.si_pid == pid);
        check(waitpid(-1, &status, WNOHANG) == -1 && errno == ECHILD, "no child left");
    } else if (strcmp(mode, "abort") == 0) {
        pid_t pid = fork();
        check(pid >= 0, "fork");
        if (pid == 0)
            abort();
        check(waitpid(pid, &status, 0) == pid, "waitpid");
        report(pid, status);
    } else {
        fail_with(EXIT_USAGE, "unknown mode '%s'", mode);
    }
    return 0;
}
