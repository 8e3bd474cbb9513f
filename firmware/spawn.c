/*
 * spawn - processes the way libc and shells start them.
 *
 *   spawn posix_spawn PROGRAM   posix_spawn PROGRAM (clone CLONE_VM|CLONE_VFORK on a new stack),
 *                               wait for it; then posix_spawn a missing file: the error comes back
 *   spawn system                system("exit 7") through /bin/sh when the root has one, else
 *                               reports that it has none
 *   spawn popen PROGRAM         popen("PROGRAM") and read its output (needs /bin/sh)
 *   spawn sigchld               a SIGCHLD handler sees the child's exit; SA_NOCLDWAIT reaps it
 *   spawn wait-eintr            wait() interrupted by a signal handler: EINTR
 *   spawn groups                setpgid, getpgid, getpgrp, setsid, getsid; waitpid(-pgid)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fwutil.h"

extern char **environ;

static void check(int ok, const char *what) {
    if (!ok)
        fail_errno(what);
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int mode_posix_spawn(const char *program) {
    pid_t pid;
    char *argv[] = {(char *)program, "spawned", NULL};
    int err = posix_spawn(&pid, program, NULL, NULL, argv, environ);
    printf("posix_spawn: %s\n", err ? strerror(err) : "ok");
    int status = 0;
    check(waitpid(pid, &status, 0) == pid, "waitpid");
    printf("child exited %d\n", WEXITSTATUS(status));
    char *missing[] = {"/no/such/program", NULL};
    err = posix_spawn(&pid, missing[0], NULL, NULL, missing, environ);
    printf("posix_spawn of a missing file: %s\n", err == ENOENT ? "ENOENT" : strerror(err));
    return 0;
}

static int mode_system(void) {
    if (access("/bin/sh", X_OK) != 0) {
        printf("no /bin/sh\n");
        return 0;
    }
    int status = system("exit 7");
    printf("system: exited %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0;
}

static int mode_popen(const char *program) {
    FILE *f = popen(program, "r");
    check(f != NULL, "popen");
    char line[256];
    while (fgets(line, sizeof line, f))
        printf("popen read: %s", line);
    int status = pclose(f);
    printf("pclose: exited %d\n", WEXITSTATUS(status));
    return 0;
}

static volatile sig_atomic_t chld_pid, chld_code, chld_status;

static void on_chld(int sig, siginfo_t *info, void *ctx) {
    (void)sig; (void)ctx;
    chld_pid = info->si_pid;
    chld_code = info->si_code;
    chld_status = info->si_status;
}

static int mode_sigchld(void) {
    struct sigaction sa = {0};
    sa.sa_sigaction = on_chld;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGCHLD, &sa, NULL);
    pid_t pid = fork();
    check(pid >= 0, "fork");
    if (pid == 0)
        _exit(5);
    while (!chld_pid)
        pause();
    printf("SIGCHLD: from the child %s, code %s, status %d\n", chld_pid == pid ? "yes" : "no",
           chld_code == CLD_EXITED ? "CLD_EXITED" : "?", (int)chld_status);
    int status;
    printf("waitpid: %s\n", waitpid(pid, &status, 0) == pid ? "reaped" : strerror(errno));
    sa.sa_flags = SA_SIGINFO | SA_NOCLDWAIT;
    sigaction(SIGCHLD, &sa, NULL);
    pid = fork();
    if (pid == 0)
        _exit(0);
    sleep_ms(20);
    printf("with SA_NOCLDWAIT: %s\n", waitpid(pid, &status, 0) < 0 && errno == ECHILD
           ? "ECHILD" : "a zombie");
    signal(SIGCHLD, SIG_IGN);
    pid = fork();
    if (pid == 0)
        _exit(0);
    printf("with SIG_IGN: %s\n", wait(&status) < 0 && errno == ECHILD ? "ECHILD" : "a zombie");
    return 0;
}

static void on_alarm(int sig) { (void)sig; }

static int mode_wait_eintr(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_alarm;
    sigaction(SIGUSR1, &sa, NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        sleep_ms(5);
        kill(parent, SIGUSR1);
        sleep_ms(5);
        _exit(4);
    }
    int status;
    pid_t r = wait(&status);
    printf("wait: %s\n", r < 0 && errno == EINTR ? "EINTR" : "returned");
    r = wait(&status);
    printf("wait again: %s, status %d\n", r == pid ? "the child" : "?", WEXITSTATUS(status));
    return 0;
}

static int mode_groups(void) {
    pid_t me = getpid();
    printf("pgrp is pid: %d, sid is pid: %d\n", getpgrp() == me, getsid(0) == me);
    printf("setsid as session leader: %s\n", setsid() < 0 && errno == EPERM ? "EPERM" : "ok");
    pid_t pid = fork();
    if (pid == 0) {
        pid_t sid = setsid();
        printf("child setsid: %s, pgid %s\n", sid == getpid() ? "new session" : strerror(errno),
               getpgid(0) == getpid() ? "own" : "other");
        _exit(0);
    }
    waitpid(pid, NULL, 0);
    pid = fork();
    if (pid == 0) {
        sleep_ms(10);
        _exit(6);
    }
    check(setpgid(pid, pid) == 0, "setpgid");
    printf("child's group: %s\n", getpgid(pid) == pid ? "its own" : "?");
    printf("setpgid into another session's group: %s\n",
           setpgid(0, 99999) < 0 && errno == EPERM ? "EPERM" : "ok");
    int status;
    pid_t r = waitpid(-pid, &status, 0);
    printf("waitpid(-pgid): %s, status %d\n", r == pid ? "the child" : "?", WEXITSTATUS(status));
    printf("getpgid of nobody: %s\n", getpgid(99999) < 0 && errno == ESRCH ? "ESRCH" : "?");
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1 && !strcmp(mode, "spawned")) {
        printf("hello from the spawned child\n");
        return 3;
    }
    if (!strcmp(mode, "posix_spawn") && argc > 2) return mode_posix_spawn(argv[2]);
    if (!strcmp(mode, "system")) return mode_system();
    if (!strcmp(mode, "popen") && argc > 2) return mode_popen(argv[2]);
    if (!strcmp(mode, "sigchld")) return mode_sigchld();
    if (!strcmp(mode, "wait-eintr")) return mode_wait_eintr();
    if (!strcmp(mode, "groups")) return mode_groups();
    fail_with(EXIT_USAGE, "usage: spawn posix_spawn PROGRAM|system|popen CMD|sigchld|"
                          "wait-eintr|groups");
}
