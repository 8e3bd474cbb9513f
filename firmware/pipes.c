/*
 * pipes - pipes as Linux has them, with readers and writers that block only their thread.
 *
 *   pipes threads    a thread reads a pipe that a second thread writes 10 ms later
 *   pipes capacity   64 KiB fit; the next write would block (EAGAIN with O_NONBLOCK);
 *                    F_GETPIPE_SZ / F_SETPIPE_SZ; EBUSY when the data would not fit
 *   pipes eof        EOF once the last writer closes (also across fork)
 *   pipes epipe      writing with no reader: EPIPE, and SIGPIPE (caught, then default: death)
 *   pipes big        a child writes 1 MiB through a pipe the parent reads slowly: all arrives
 *   pipes poll       poll, ppoll, select, pselect and epoll on pipes, with timeouts
 *   pipes atomic     two writers of PIPE_BUF-sized records never interleave
 *   pipes eintr      a blocked read interrupted by a handler: EINTR without SA_RESTART,
 *                    restarted with it
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fwutil.h"

static void check(int ok, const char *what) {
    if (!ok)
        fail_errno(what);
}

static int fds[2];

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void *late_writer(void *arg) {
    (void)arg;
    sleep_ms(10);
    check(write(fds[1], "late", 4) == 4, "write");
    return NULL;
}

static int mode_threads(void) {
    check(pipe(fds) == 0, "pipe");
    pthread_t t;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);     /* before the writer starts its 10 ms */
    check(pthread_create(&t, NULL, late_writer, NULL) == 0, "pthread_create");
    char buf[8] = {0};
    ssize_t n = read(fds[0], buf, sizeof buf);
    clock_gettime(CLOCK_MONOTONIC, &b);
    pthread_join(t, NULL);
    long waited_ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
    printf("read %zd '%s' after %s10 ms\n", n, buf, waited_ms >= 10 ? ">= " : "< ");
    return 0;
}

static int mode_capacity(void) {
    check(pipe2(fds, O_NONBLOCK) == 0, "pipe2");
    printf("F_GETPIPE_SZ %d\n", fcntl(fds[1], F_GETPIPE_SZ));
    static char block[4096];
    long total = 0;
    ssize_t n;
    while ((n = write(fds[1], block, sizeof block)) > 0)
        total += n;
    printf("filled %ld bytes, then %s\n", total, errno == EAGAIN ? "EAGAIN" : strerror(errno));
    printf("shrink to 4096: %s\n", fcntl(fds[1], F_SETPIPE_SZ, 4096) < 0 && errno == EBUSY
           ? "EBUSY" : "allowed");
    printf("grow to 100000: %d\n", fcntl(fds[1], F_SETPIPE_SZ, 100000));
    printf("write now %zd\n", write(fds[1], block, 100));
    int regular = open("/proc/self/exe", O_RDONLY);
    printf("F_GETPIPE_SZ on a file: %s\n",
           fcntl(regular, F_GETPIPE_SZ) < 0 && errno == EBADF ? "EBADF" : "allowed");
    char c;
    int empty[2];
    check(pipe2(empty, O_NONBLOCK) == 0, "pipe2");
    printf("read of an empty pipe: %s\n",
           read(empty[0], &c, 1) < 0 && errno == EAGAIN ? "EAGAIN" : "data");
    printf("lseek on a pipe: %s\n", lseek(empty[0], 0, SEEK_SET) < 0 && errno == ESPIPE
           ? "ESPIPE" : "allowed");
    return 0;
}

static int mode_eof(void) {
    check(pipe(fds) == 0, "pipe");
    pid_t pid = fork();
    check(pid >= 0, "fork");
    if (pid == 0) {
        close(fds[0]);
        check(write(fds[1], "from child", 10) == 10, "write");
        _exit(0);
    }
    close(fds[1]);
    char buf[64];
    ssize_t n, total = 0;
    while ((n = read(fds[0], buf + total, sizeof buf - total)) > 0)
        total += n;
    buf[total] = 0;
    int status;
    waitpid(pid, &status, 0);
    printf("read '%s' then %zd (EOF)\n", buf, n);
    return 0;
}

static volatile sig_atomic_t got_signal;
static void on_signal(int sig) { got_signal = sig; }

static int mode_epipe(void) {
    check(pipe(fds) == 0, "pipe");
    close(fds[0]);
    signal(SIGPIPE, on_signal);
    ssize_t n = write(fds[1], "x", 1);
    printf("write: %zd %s, SIGPIPE %s\n", n, n < 0 && errno == EPIPE ? "EPIPE" : "?",
           got_signal == SIGPIPE ? "caught" : "missed");
    fflush(stdout);
    signal(SIGPIPE, SIG_DFL);
    write(fds[1], "x", 1);
    printf("still alive\n");
    return 0;
}

static int mode_big(void) {
    check(pipe(fds) == 0, "pipe");
    pid_t pid = fork();
    check(pid >= 0, "fork");
    enum { TOTAL = 1 << 20 };
    if (pid == 0) {
        close(fds[0]);
        char *data = malloc(TOTAL);
        for (int i = 0; i < TOTAL; i++)
            data[i] = (char)(i * 7);
        ssize_t n = write(fds[1], data, TOTAL);     /* one blocking write of 1 MiB */
        _exit(n == TOTAL ? 0 : 1);
    }
    close(fds[1]);
    long total = 0, bad = 0;
    char buf[1000];
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++)
            bad += buf[i] != (char)((total + i) * 7);
        total += n;
        sleep_ms(0);
    }
    int status;
    waitpid(pid, &status, 0);
    printf("received %ld bytes, %ld wrong, writer exited %d\n", total, bad, WEXITSTATUS(status));
    return 0;
}

static int mode_poll(void) {
    check(pipe(fds) == 0, "pipe");
    struct pollfd p[2] = {{fds[0], POLLIN, 0}, {fds[1], POLLOUT, 0}};
    int r = poll(p, 2, 0);
    printf("poll: %d, read end %#x, write end %#x\n", r, p[0].revents, p[1].revents);
    p[1].events = 0;
    struct timespec a, b, ts = {0, 30 * 1000000};
    clock_gettime(CLOCK_MONOTONIC, &a);
    r = ppoll(p, 1, &ts, NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
    printf("ppoll timeout: %d after %s30 ms\n", r, ms >= 30 ? ">= " : "< ");
    pthread_t t;
    check(pthread_create(&t, NULL, late_writer, NULL) == 0, "pthread_create");
    r = poll(p, 1, -1);
    printf("poll woken: %d, revents %#x\n", r, p[0].revents);
    pthread_join(t, NULL);
    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(fds[0], &rd);
    struct timeval tv = {1, 0};
    r = select(fds[0] + 1, &rd, NULL, NULL, &tv);
    printf("select: %d, readable %d\n", r, FD_ISSET(fds[0], &rd));
    char buf[8];
    read(fds[0], buf, sizeof buf);
    FD_SET(fds[0], &rd);
    struct timespec pts = {0, 5 * 1000000};
    r = pselect(fds[0] + 1, &rd, NULL, NULL, &pts, NULL);
    printf("pselect timeout: %d\n", r);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0x1234};
    check(epoll_ctl(ep, EPOLL_CTL_ADD, fds[0], &ev) == 0, "epoll_ctl");
    printf("epoll_ctl twice: %s\n", epoll_ctl(ep, EPOLL_CTL_ADD, fds[0], &ev) < 0
           && errno == EEXIST ? "EEXIST" : "allowed");
    struct epoll_event out[4];
    printf("epoll_wait empty: %d\n", epoll_wait(ep, out, 4, 5));
    check(pthread_create(&t, NULL, late_writer, NULL) == 0, "pthread_create");
    r = epoll_wait(ep, out, 4, -1);
    printf("epoll_wait: %d, events %#x, data %#llx\n", r, out[0].events,
           (unsigned long long)out[0].data.u64);
    pthread_join(t, NULL);
    close(fds[1]);
    r = poll(p, 1, 0);
    printf("after the writer closed: revents %#x\n", p[0].revents);
    return 0;
}

static int mode_atomic(void) {
    check(pipe(fds) == 0, "pipe");
    enum { RECORDS = 40 };
    for (int w = 0; w < 2; w++) {
        pid_t pid = fork();
        check(pid >= 0, "fork");
        if (pid == 0) {
            char rec[PIPE_BUF];
            memset(rec, 'a' + w, sizeof rec);
            for (int i = 0; i < RECORDS; i++)
                check(write(fds[1], rec, sizeof rec) == PIPE_BUF, "write");
            _exit(0);
        }
    }
    close(fds[1]);
    char rec[PIPE_BUF];
    int records = 0, mixed = 0;
    for (;;) {
        size_t got = 0;
        ssize_t n = 1;
        while (got < sizeof rec && (n = read(fds[0], rec + got, sizeof rec - got)) > 0)
            got += (size_t)n;
        if (got < sizeof rec)
            break;
        records++;
        for (size_t i = 1; i < sizeof rec; i++)
            if (rec[i] != rec[0]) { mixed++; break; }
    }
    while (wait(NULL) > 0) {}
    printf("%d records, %d mixed\n", records, mixed);
    return 0;
}

static int mode_eintr(void) {
    check(pipe(fds) == 0, "pipe");
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGALRM, &sa, NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        sleep_ms(5);
        kill(parent, SIGALRM);
        sleep_ms(5);
        check(write(fds[1], "ok", 2) == 2, "write");
        _exit(0);
    }
    char buf[4] = {0};
    ssize_t n = read(fds[0], buf, sizeof buf);
    printf("without SA_RESTART: %zd %s\n", n, n < 0 && errno == EINTR ? "EINTR" : buf);
    n = read(fds[0], buf, sizeof buf);
    printf("then: %zd '%s'\n", n, buf);
    waitpid(pid, NULL, 0);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    memset(buf, 0, sizeof buf);
    pid = fork();
    if (pid == 0) {
        sleep_ms(5);
        kill(parent, SIGALRM);
        sleep_ms(5);
        check(write(fds[1], "re", 2) == 2, "write");
        _exit(0);
    }
    n = read(fds[0], buf, sizeof buf);
    printf("with SA_RESTART: %zd '%s'\n", n, buf);
    waitpid(pid, NULL, 0);
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(mode, "threads")) return mode_threads();
    if (!strcmp(mode, "capacity")) return mode_capacity();
    if (!strcmp(mode, "eof")) return mode_eof();
    if (!strcmp(mode, "epipe")) return mode_epipe();
    if (!strcmp(mode, "big")) return mode_big();
    if (!strcmp(mode, "poll")) return mode_poll();
    if (!strcmp(mode, "atomic")) return mode_atomic();
    if (!strcmp(mode, "eintr")) return mode_eintr();
    fail_with(EXIT_USAGE, "usage: pipes threads|capacity|eof|epipe|big|poll|atomic|eintr");
}
