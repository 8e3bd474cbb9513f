"""Scheduling and signalling permissions as Linux has them: the sched_* family (policies, Linux's
priorities 1-99 and 0, SCHED_RESET_ON_FORK, struct sched_attr and SCHED_DEADLINE, affinity),
who may signal whom (kill, tgkill, sigqueue to any thread's id), RLIMIT_SIGPENDING's EAGAIN,
and setpgid's rules — one C program, run as root on both architectures, against native
Linux (x86-64 as root) and qemu-aarch64 where those give Linux's answer; and emu's own
scheduling model on one CPU (docs in emu/kernel/sched.py).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conformance.guest_programs import build_for_each_arch, program
from tests.conftest import run_emu

SOURCE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Every printf below makes at most one call with an effect: C leaves the order of argument
   evaluation open. */
#define NOPID 0x7ffffff0
struct attr { uint32_t size, policy; uint64_t flags; int32_t nice; uint32_t prio;
              uint64_t runtime, deadline, period; uint32_t umin, umax; uint8_t extra[8]; };

static long rc(long r) { return r < 0 ? -errno : r; }
static long setattr(pid_t pid, void *a, unsigned flags) { return rc(syscall(SYS_sched_setattr, pid, a, flags)); }
static long getattr(pid_t pid, void *a, unsigned size, unsigned flags) { return rc(syscall(SYS_sched_getattr, pid, a, size, flags)); }
static int getprio(pid_t pid) { struct sched_param p = {-7}; return syscall(SYS_sched_getparam, pid, &p) < 0 ? -errno : p.sched_priority; }
static int setsched(pid_t pid, int pol, int pr) { struct sched_param p = {pr}; return rc(syscall(SYS_sched_setscheduler, pid, pol, &p)); }
static int setparam(pid_t pid, int pr) { struct sched_param p = {pr}; return rc(syscall(SYS_sched_setparam, pid, &p)); }
static int getsched(pid_t pid) { return rc(syscall(SYS_sched_getscheduler, pid)); }
static long affinity_of(pid_t pid, unsigned size, void *mask) { return rc(syscall(SYS_sched_setaffinity, pid, size, mask)); }
static struct attr dl(uint64_t runtime, uint64_t deadline, uint64_t period) {
    struct attr a = {48, 6, 0, 0, 0, runtime, deadline, period}; return a;
}
static struct attr fair(int policy, int nice) { struct attr a = {48, policy}; a.nice = nice; return a; }
static void state(pid_t pid) { printf(" policy=%#x", getsched(pid)); printf(" prio=%d", getprio(pid)); }
static void show(const char *tag, pid_t pid) {
    struct attr g; memset(&g, 0xee, sizeof g);
    long r = getattr(pid, &g, 56, 0);
    printf("%s: getattr=%ld size=%u policy=%u flags=%lu nice=%d prio=%u runtime=%lu deadline=%lu "
           "period=%lu", tag, r, g.size, g.policy, (unsigned long)g.flags, g.nice, g.prio,
           g.policy == 6 ? (unsigned long)g.runtime : 0UL, (unsigned long)g.deadline,
           (unsigned long)g.period);
    state(pid);
    printf("\n");
}
static volatile pid_t thread_tid;
static void *tid_then_wait(void *arg) {
    thread_tid = gettid();
    char b; read(*(int *)arg, &b, 1);
    return NULL;
}

static void policy(void) {
    printf("default:"); state(0); printf("\n");
    int pols[] = {0, 1, 2, 3, 5, 6, 4, 8, -1};
    printf("max/min:");
    for (int i = 0; i < 9; i++) {
        printf(" %ld", rc(syscall(SYS_sched_get_priority_max, pols[i])));
        printf("/%ld", rc(syscall(SYS_sched_get_priority_min, pols[i])));
    }
    printf("\nsetparam: 0=%d", setparam(0, 0));
    printf(" 1=%d", setparam(0, 1));
    printf(" null=%ld", rc(syscall(SYS_sched_setparam, 0, NULL)));
    printf(" pid-1=%d", setparam(-1, 0));
    printf(" nopid=%d\n", setparam(NOPID, 0));
    printf("getparam: null=%ld", rc(syscall(SYS_sched_getparam, 0, NULL)));
    printf(" pid-1=%d", getprio(-1));
    printf(" nopid=%d", getprio(NOPID));
    printf(" getscheduler: pid-1=%d", getsched(-1));
    printf(" nopid=%d\n", getsched(NOPID));
    printf("fifo 50: %d", setsched(0, SCHED_FIFO, 50)); state(0);
    printf("\nrr: 99=%d", setsched(0, SCHED_RR, 99));
    printf(" 100=%d", setsched(0, SCHED_RR, 100));
    printf(" 0=%d", setsched(0, SCHED_RR, 0));
    printf(" -5=%d", setsched(0, SCHED_RR, -5));
    printf(" other-1=%d", setsched(0, SCHED_OTHER, 1));
    printf(" policy4=%d", setsched(0, 4, 0));
    printf(" policy-1=%d", setsched(0, -1, 0));
    printf(" null=%ld", rc(syscall(SYS_sched_setscheduler, 0, SCHED_RR, NULL)));
    state(0);
    printf("\nsetparam 30: %d", setparam(0, 30)); state(0);
    printf("\nreset on fork: %d", setsched(0, SCHED_FIFO | SCHED_RESET_ON_FORK, 10)); state(0);
    printf("\n");
    int go[2]; pipe(go);
    pid_t c = fork();
    if (c == 0) {
        char b; read(go[0], &b, 1);
        printf("the child itself:"); state(0); printf("\n");
        _exit(0);
    }
    printf("the child:"); state(c); printf("\n");
    write(go[1], "x", 1); waitpid(c, NULL, 0);
    printf("setparam 12 keeps the flag: %d", setparam(0, 12)); state(0);
    printf("\nback to other: %d", setsched(0, SCHED_OTHER, 0)); state(0);
    printf("\nrr 5, inherited: %d", setsched(0, SCHED_RR, 5));
    c = fork();
    if (c == 0) { char b; read(go[0], &b, 1); _exit(0); }
    state(c);
    write(go[1], "x", 1); waitpid(c, NULL, 0);
    int gate[2]; pipe(gate);
    pthread_t t; pthread_create(&t, NULL, tid_then_wait, &gate[0]);
    while (!thread_tid) sched_yield();
    printf(" thread"); state(thread_tid);
    printf(" set it: %d", setsched(thread_tid, SCHED_FIFO, 7)); state(thread_tid); state(0);
    write(gate[1], "x", 1); pthread_join(t, NULL);
    printf("\nbatch: %d", setsched(0, SCHED_BATCH, 0)); state(0);
    printf(" idle: %d", setsched(0, SCHED_IDLE, 0)); state(0);
    printf(" other: %d\n", setsched(0, SCHED_OTHER, 0));
}

static void attrs(void) {
    show("start", 0);
    struct attr a = dl(10000000, 30000000, 30000000);
    printf("deadline: %ld\n", setattr(0, &a, 0));
    show("deadline", 0);
    printf("as deadline: setparam=%d", setparam(0, 0));
    printf(" setscheduler=%d", setsched(0, 6, 0));
    printf(" yield=%d\n", sched_yield());
    a = dl(1000000, 2000000, 0);
    printf("period 0: %ld\n", setattr(0, &a, 0));
    show("period 0", 0);
    struct attr bad[] = {dl(3000000, 2000000, 4000000), dl(1000, 2000000, 0), dl(1000000, 0, 0),
                         dl(1000000, 2000000, 1500000), dl(1000000, 2000000, 5000000000UL),
                         dl(2000, 50000, 0), dl(1000000, 1UL << 63, 0)};
    printf("bad deadline parameters:");
    for (int i = 0; i < 7; i++) printf(" %ld", setattr(0, &bad[i], 0));
    a = dl(10000000, 30000000, 30000000);
    printf("\nsetattr: flags=%ld", setattr(0, &a, 1));
    printf(" null=%ld", setattr(0, NULL, 0));
    printf(" pid-1=%ld", setattr(-1, &a, 0));
    printf(" nopid=%ld", setattr(NOPID, &a, 0));
    struct attr s = fair(0, 0);
    s.policy = 0x80000000u;
    printf(" policy<0=%ld", setattr(0, &s, 0));
    s.policy = 4;
    printf(" policy4=%ld\n", setattr(0, &s, 0));
    s = fair(0, 0);
    s.size = 47;
    printf("size 47: %ld", setattr(0, &s, 0));
    printf(" size field=%u", s.size);
    s.size = 64;
    printf(" size 64: %ld", setattr(0, &s, 0));
    s.size = 64; s.extra[3] = 1;
    printf(" size 64 with more: %ld", setattr(0, &s, 0));
    printf(" size field=%u", s.size);
    s.size = 0;
    printf(" size 0: %ld\n", setattr(0, &s, 0));
    s = fair(0, 0); s.flags = 0x100;
    printf("flags: unknown=%ld", setattr(0, &s, 0));
    s.flags = 0x10000000;
    printf(" sugov=%ld", setattr(0, &s, 0));
    s.flags = 0x20; s.size = 56;
    printf(" clamp56=%ld", setattr(0, &s, 0));
    s.size = 48;
    printf(" clamp48=%ld\n", setattr(0, &s, 0));
    struct attr g;
    printf("getattr: 47=%ld", getattr(0, &g, 47, 0));
    printf(" 4097=%ld", getattr(0, &g, 4097, 0));
    printf(" flags=%ld", getattr(0, &g, 56, 1));
    printf(" null=%ld", getattr(0, NULL, 56, 0));
    printf(" pid-1=%ld", getattr(-1, &g, 56, 0));
    printf(" nopid=%ld", getattr(NOPID, &g, 56, 0));
    char big[128]; memset(big, 0xee, sizeof big);
    printf(" 48: %ld", getattr(0, big, 48, 0));
    printf(" size=%u untouched=%d", *(uint32_t *)big, (unsigned char)big[50] == 0xee);
    printf(" 128: %ld", getattr(0, big, 128, 0));
    printf(" size=%u\n", *(uint32_t *)big);      /* past 56 bytes: Linux 6.1 leaves, 6.11 zeroes */
    s = fair(0, -5);
    printf("nice -5: %ld\n", setattr(0, &s, 0));
    show("nice -5", 0);
    s = fair(3, 25);
    printf("batch nice 25: %ld\n", setattr(0, &s, 0));
    show("batch nice 25", 0);
    struct attr f = {48, 1, 0, 0, 20};
    printf("fifo 20: %ld\n", setattr(0, &f, 0));
    show("fifo 20", 0);
    f.policy = 2; f.prio = 7; f.flags = 0x08;
    printf("keep policy, prio 7: %ld\n", setattr(0, &f, 0));
    show("keep policy", 0);
    f.policy = 0; f.prio = 0; f.flags = 0x10 | 0x01;
    printf("other with fifo's params: %ld\n", setattr(0, &f, 0));
    show("after", 0);
    s = fair(0, 0);
    printf("other: %ld\n", setattr(0, &s, 0));
    show("other", 0);
}

static void unpriv(void) {
    pid_t c = fork();
    if (c) { waitpid(c, NULL, 0); return; }
    pid_t parent = getppid();
    struct rlimit rt = {10, 10}, nice0 = {0, 0};
    if (setrlimit(RLIMIT_RTPRIO, &rt) < 0) { printf("setrlimit RTPRIO: %d\n", -errno); _exit(1); }
    setrlimit(RLIMIT_NICE, &nice0);
    if (setresuid(1000, 1000, 1000)) { printf("setresuid: %d\n", -errno); _exit(1); }
    printf("rtprio 10: fifo 5=%d", setsched(0, SCHED_FIFO, 5));
    printf(" 20=%d", setsched(0, SCHED_FIFO, 20));
    printf(" 3=%d", setsched(0, SCHED_FIFO, 3)); state(0);
    printf(" other=%d\n", setsched(0, SCHED_OTHER, 0));
    printf("reset on fork: %d", setsched(0, SCHED_RR | SCHED_RESET_ON_FORK, 5));
    printf(" clear it=%d", setsched(0, SCHED_RR, 5));
    printf(" keep it=%d", setsched(0, SCHED_RR | SCHED_RESET_ON_FORK, 4));
    printf(" setparam=%d", setparam(0, 3));
    printf(" other=%d", setsched(0, SCHED_OTHER | SCHED_RESET_ON_FORK, 0)); state(0);
    printf("\n");
    struct rlimit none = {0, 0};
    setrlimit(RLIMIT_RTPRIO, &none);
    struct attr d = dl(10000000, 30000000, 30000000), n5 = fair(0, 5), n3 = fair(0, 3);
    n5.flags = n3.flags = 0x01;                 /* SCHED_FLAG_RESET_ON_FORK: it stays set */
    printf("rtprio 0: fifo=%d", setsched(0, SCHED_FIFO, 1));
    printf(" deadline=%ld\n", setattr(0, &d, 0));
    printf("root's: setparam=%d", setparam(parent, 0));
    printf(" setscheduler=%d", setsched(parent, SCHED_OTHER, 0));
    printf(" getparam=%d", getprio(parent));
    printf(" getscheduler=%d\n", getsched(parent));
    printf("nice: 5=%ld", setattr(0, &n5, 0));
    printf(" 3=%ld", setattr(0, &n3, 0));
    printf(" idle=%d", setsched(0, SCHED_IDLE | SCHED_RESET_ON_FORK, 0));
    printf(" back=%d", setsched(0, SCHED_OTHER | SCHED_RESET_ON_FORK, 0)); state(0);
    unsigned long mask = 1;
    printf("\naffinity: root's=%ld", affinity_of(parent, 8, &mask));
    printf(" own=%ld\n", affinity_of(0, 8, &mask));
    _exit(0);
}

static void affinity(void) {
    unsigned long one = 1, high = 1UL << 63, wide[16] = {1};
    unsigned long got = 0;
    long g = rc(syscall(SYS_sched_getaffinity, 0, 8, &got));
    printf("getaffinity: %ld cpu0=%d\n", g, (int)(got & 1));
    printf("setaffinity: cpu0=%ld", affinity_of(0, 8, &one));
    printf(" cpu63=%ld", affinity_of(0, 8, &high));
    printf(" size0=%ld", affinity_of(0, 0, &one));
    printf(" size4=%ld", affinity_of(0, 4, &one));
    printf(" size128=%ld", affinity_of(0, 128, wide));
    printf(" bad=%ld", affinity_of(0, 8, (void *)8));
    printf(" nopid=%ld", affinity_of(NOPID, 8, &one));
    printf(" pid-1=%ld\n", affinity_of(-1, 8, &one));
}

static volatile int hits, last_value;
static void count(int sig, siginfo_t *si, void *uc) { (void)sig; (void)uc; hits++; last_value += si->si_value.sival_int; }
static pid_t as_user(uid_t r, uid_t e, uid_t s, const int hold[2], const int ready[2]) {
    pid_t c = fork();
    if (c == 0) {
        close(hold[1]);
        setresuid(r, e, s);
        write(ready[1], "x", 1);
        char b; read(hold[0], &b, 1);
        _exit(0);
    }
    char b; read(ready[0], &b, 1);
    return c;
}

static void kills(void) {
    int hold[2], ready[2]; pipe(hold); pipe(ready);
    pid_t b = as_user(1002, 1002, 1002, hold, ready);
    pid_t c = as_user(1003, 1003, 1001, hold, ready);
    pid_t d = as_user(1004, 1001, 1004, hold, ready);
    pid_t a = fork();
    if (a == 0) {
        setresuid(1001, 1001, 1001);
        printf("uid 1001 to uid 1002: TERM=%d", (int)rc(kill(b, SIGTERM)));
        printf(" 0=%d", (int)rc(kill(b, 0)));
        printf(" CONT=%d", (int)rc(kill(b, SIGCONT)));
        printf("; to saved uid 1001: %d", (int)rc(kill(c, 0)));
        printf("; to effective uid 1001: %d", (int)rc(kill(d, 0)));
        printf("; to root: %d", (int)rc(kill(getppid(), SIGUSR1)));
        printf("; to itself: %d\n", (int)rc(kill(getpid(), 0)));
        union sigval v = {.sival_int = 1};
        printf("uid 1001 to root: sigqueue=%d", (int)rc(sigqueue(getppid(), SIGUSR1, v)));
        printf(" tgkill=%d", (int)rc(syscall(SYS_tgkill, getppid(), getppid(), SIGUSR1)));
        printf(" tkill=%d", (int)rc(syscall(SYS_tkill, getppid(), SIGUSR1)));
        printf(" its group, signal 0=%d\n", (int)rc(kill(-getpgrp(), 0)));
        _exit(0);
    }
    waitpid(a, NULL, 0);
    struct sigaction sa; memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = count; sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL); sigaction(SIGUSR2, &sa, NULL);
    int gate[2]; pipe(gate);
    pthread_t t; pthread_create(&t, NULL, tid_then_wait, &gate[0]);
    while (!thread_tid) sched_yield();
    sigset_t u; sigemptyset(&u); sigaddset(&u, SIGUSR1); sigaddset(&u, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &u, NULL);       /* the thread takes what is sent to the process */
    int k = (int)rc(kill(thread_tid, SIGUSR1));
    siginfo_t si; memset(&si, 0, sizeof si);
    si.si_code = SI_QUEUE; si.si_pid = getpid(); si.si_uid = getuid(); si.si_value.sival_int = 777;
    int q = (int)rc(syscall(SYS_rt_sigqueueinfo, thread_tid, SIGUSR2, &si));
    write(gate[1], "x", 1); pthread_join(t, NULL);
    pthread_sigmask(SIG_UNBLOCK, &u, NULL);
    printf("to a thread's id: kill=%d sigqueue=%d hits=%d value=%d\n", k, q, hits, last_value);
    printf("root: KILL to uid 1002=%d", (int)rc(kill(b, SIGKILL)));
    printf(" nopid, signal 99=%d", (int)rc(kill(NOPID, 99)));
    printf(" itself, signal 99=%d\n", (int)rc(kill(getpid(), 99)));
    close(hold[1]);
    while (wait(NULL) > 0) ;
}

static void *queue_thread(void *arg) {
    sigset_t s; sigemptyset(&s);
    sigaddset(&s, SIGRTMIN); sigaddset(&s, SIGRTMIN + 2); sigaddset(&s, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
    thread_tid = gettid();
    char b; read(*(int *)arg, &b, 1);
    int n = 0, rtmin = 0, usr1 = 0;
    struct timespec zero = {0, 0};
    siginfo_t si; int sig;
    while ((sig = sigtimedwait(&s, &si, &zero)) > 0) { n++; rtmin += sig == SIGRTMIN; usr1 += sig == SIGUSR1; }
    printf("accepted: %d (SIGRTMIN %d, SIGUSR1 %d)\n", n, rtmin, usr1);
    return NULL;
}

static void queue(void) {
    sigset_t s; sigemptyset(&s);
    sigaddset(&s, SIGRTMIN); sigaddset(&s, SIGRTMIN + 2); sigaddset(&s, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
    signal(SIGRTMIN + 1, SIG_IGN);
    int gate[2]; pipe(gate);
    pthread_t t; pthread_create(&t, NULL, queue_thread, &gate[0]);
    while (!thread_tid) sched_yield();
    struct rlimit zero = {0, 64};
    setrlimit(RLIMIT_SIGPENDING, &zero);
    union sigval v = {.sival_int = 5};
    siginfo_t si; memset(&si, 0, sizeof si);
    si.si_code = SI_QUEUE; si.si_pid = getpid(); si.si_uid = getuid();
    printf("limit 0: tgkill RT=%d", (int)rc(syscall(SYS_tgkill, getpid(), thread_tid, SIGRTMIN)));
    printf(" sigqueue RT=%d", (int)rc(sigqueue(getpid(), SIGRTMIN, v)));
    printf(" tgsigqueueinfo RT=%d", (int)rc(syscall(SYS_rt_tgsigqueueinfo, getpid(), thread_tid, SIGRTMIN + 2, &si)));
    printf(" kill RT=%d", (int)rc(kill(getpid(), SIGRTMIN)));
    printf(" tgkill USR1=%d", (int)rc(syscall(SYS_tgkill, getpid(), thread_tid, SIGUSR1)));
    printf(" sigqueue USR1=%d", (int)rc(sigqueue(getpid(), SIGUSR1, v)));
    printf(" ignored RT=%d\n", (int)rc(sigqueue(getpid(), SIGRTMIN + 1, v)));
    struct rlimit more = {64, 64};
    setrlimit(RLIMIT_SIGPENDING, &more);
    printf("limit 64: sigqueue RT=%d", (int)rc(sigqueue(getpid(), SIGRTMIN, v)));
    printf(" tgkill RT=%d\n", (int)rc(syscall(SYS_tgkill, getpid(), thread_tid, SIGRTMIN)));
    write(gate[1], "x", 1); pthread_join(t, NULL);
}

static void pgids(char *self) {
    int hold[2], ready[2]; pipe(hold); pipe(ready);
    char b;
    pid_t c1 = fork();
    if (c1 == 0) {
        close(hold[1]);
        pid_t g = fork();
        if (g == 0) { read(hold[0], &b, 1); _exit(0); }
        write(ready[1], &g, sizeof g); read(hold[0], &b, 1); waitpid(g, NULL, 0); _exit(0);
    }
    pid_t grandchild; read(ready[0], &grandchild, sizeof grandchild);
    printf("a child: own group=%d", (int)rc(setpgid(c1, c1)));
    printf(" is=%d", getpgid(c1) == c1);
    printf(" back=%d", (int)rc(setpgid(c1, getpgrp())));
    printf(" is=%d", getpgid(c1) == getpgrp());
    printf(" zero=%d", (int)rc(setpgid(c1, 0)));
    printf(" is=%d", getpgid(c1) == c1);
    printf("; a grandchild=%d", (int)rc(setpgid(grandchild, 0)));
    printf(" nopid=%d", (int)rc(setpgid(NOPID, 0)));
    printf(" pid-1=%d", (int)rc(setpgid(-1, 0)));
    printf(" pgid-1=%d", (int)rc(setpgid(0, -1)));
    printf(" no such group=%d\n", (int)rc(setpgid(0, NOPID)));
    int gate[2]; pipe(gate);
    pthread_t t; pthread_create(&t, NULL, tid_then_wait, &gate[0]);
    while (!thread_tid) sched_yield();
    printf("a thread's id: %d\n", (int)rc(setpgid(thread_tid, 0)));
    write(gate[1], "x", 1); pthread_join(t, NULL);
    pid_t c2 = fork();
    if (c2 == 0) {
        close(hold[1]);
        setsid();
        printf("a session leader: own group=%d\n", (int)rc(setpgid(0, 0)));
        write(ready[1], "x", 1); read(hold[0], &b, 1); _exit(0);
    }
    read(ready[0], &b, 1);
    printf("a child in another session: move it=%d", (int)rc(setpgid(c2, getpgrp())));
    printf(" join its group=%d\n", (int)rc(setpgid(0, c2)));
    pid_t c3 = fork();
    if (c3 == 0) {
        close(hold[1]); dup2(hold[0], 0); dup2(ready[1], 3);
        execl(self, self, "execed", (char *)NULL);
        _exit(99);
    }
    read(ready[0], &b, 1);
    printf("a child after exec: %d\n", (int)rc(setpgid(c3, c3)));
    close(hold[1]);
    while (wait(NULL) > 0) ;
}

/* emu's own model: one CPU and QNX priorities, not what a multi-CPU Linux shows */
static volatile int flag;
static long late_bandwidth;
static char order[8];
static volatile int norder;
static void *set_flag(void *arg) { flag = 1; return arg; }
static void *one_percent(void *arg) {
    char b; read(*(int *)arg, &b, 1);
    struct attr c = dl(1000000, 100000000, 100000000);
    late_bandwidth = setattr(0, &c, 0);
    return NULL;
}
static void *become_deadline(void *arg) {
    struct attr a = dl(10000000, 30000000, 30000000);
    setattr(0, &a, 0);
    order[norder++] = 'T'; sched_yield(); order[norder++] = 'T';
    return arg;
}
static void model(void) {
    struct attr a = dl(95000000, 100000000, 100000000), b = dl(96000000, 100000000, 100000000);
    struct attr o = fair(0, 0);
    int gate[2]; pipe(gate);
    pthread_t t; pthread_create(&t, NULL, one_percent, &gate[0]);
    printf("bandwidth: 96%%=%ld", setattr(0, &b, 0));
    printf(" 95%%=%ld", setattr(0, &a, 0));
    write(gate[1], "x", 1); pthread_join(t, NULL);
    printf(" another 1%%=%ld", late_bandwidth);
    printf(" other=%ld", setattr(0, &o, 0));
    pthread_create(&t, NULL, one_percent, &gate[0]);
    write(gate[1], "x", 1); pthread_join(t, NULL);
    printf(" then 1%%=%ld\n", late_bandwidth);
    setsched(0, SCHED_FIFO | SCHED_RESET_ON_FORK, 20);
    pthread_create(&t, NULL, set_flag, NULL);
    for (volatile int i = 0; i < 200000; i++) ;
    int before = flag;
    struct timespec ms = {0, 1000000}; nanosleep(&ms, NULL);
    printf("fifo 20 over its reset child: the child ran while it spun=%d, once it slept=%d\n", before, flag);
    pthread_join(t, NULL);
    setsched(0, SCHED_FIFO, 99);
    pthread_create(&t, NULL, become_deadline, NULL);
    sched_yield();
    order[norder++] = 'M';
    pthread_join(t, NULL);
    order[norder] = 0;
    printf("a deadline thread over fifo 99: %s\n", order);
    setsched(0, SCHED_OTHER, 0);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "execed")) { write(3, "x", 1); char b; read(0, &b, 1); return 0; }
    if (!strcmp(mode, "policy")) policy();
    else if (!strcmp(mode, "attr")) attrs();
    else if (!strcmp(mode, "unpriv")) unpriv();
    else if (!strcmp(mode, "affinity")) affinity();
    else if (!strcmp(mode, "kill")) kills();
    else if (!strcmp(mode, "queue")) queue();
    else if (!strcmp(mode, "setpgid")) pgids(argv[0]);
    else if (!strcmp(mode, "model")) model();
    else return 2;
    return 0;
}
"""


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The guest program, built for each architecture whose compiler is installed (in a
    directory of its own: the guest root, so that the program can exec itself)."""
    return build_for_each_arch(tmp_path_factory.mktemp("sched"), "sk", SOURCE, ("-lpthread",))


def run(programs: dict[str, Path], arch: str, mode: str) -> str:
    """The program's output under emu, the guest root its own directory; it must exit 0
    with nothing on stderr."""
    exe = program(programs, arch)
    result = run_emu("--root", exe.parent, exe, mode)
    assert (result.returncode, result.stderr) == (0, "")
    return result.stdout


CASES = {
    "policy": (
        "default: policy=0 prio=0\n"
        # OTHER FIFO RR BATCH IDLE DEADLINE, then 4, 8 and -1: no such policy
        "max/min: 0/0 99/1 99/1 0/0 0/0 0/0 -22/-22 -22/-22 -22/-22\n"
        "setparam: 0=0 1=-22 null=-22 pid-1=-22 nopid=-3\n"
        "getparam: null=-22 pid-1=-22 nopid=-3 getscheduler: pid-1=-22 nopid=-3\n"
        "fifo 50: 0 policy=0x1 prio=50\n"
        "rr: 99=0 100=-22 0=-22 -5=-22 other-1=-22 policy4=-22 policy-1=-22 null=-22 "
        "policy=0x2 prio=99\n"
        "setparam 30: 0 policy=0x2 prio=30\n"
        "reset on fork: 0 policy=0x40000001 prio=10\n"
        "the child: policy=0 prio=0\n"
        "the child itself: policy=0 prio=0\n"
        "setparam 12 keeps the flag: 0 policy=0x40000001 prio=12\n"
        "back to other: 0 policy=0 prio=0\n"
        "rr 5, inherited: 0 policy=0x2 prio=5 thread policy=0x2 prio=5 set it: 0 "
        "policy=0x1 prio=7 policy=0x2 prio=5\n"
        "batch: 0 policy=0x3 prio=0 idle: 0 policy=0x5 prio=0 other: 0\n"),
    "attr": (
        "start: getattr=0 size=56 policy=0 flags=0 nice=0 prio=0 runtime=0 deadline=0 "
        "period=0 policy=0 prio=0\n"
        "deadline: 0\n"
        "deadline: getattr=0 size=56 policy=6 flags=0 nice=0 prio=0 runtime=10000000 "
        "deadline=30000000 period=30000000 policy=0x6 prio=0\n"
        "as deadline: setparam=-22 setscheduler=-22 yield=0\n"
        "period 0: 0\n"
        "period 0: getattr=0 size=56 policy=6 flags=0 nice=0 prio=0 runtime=1000000 "
        "deadline=2000000 period=2000000 policy=0x6 prio=0\n"
        # runtime > deadline, runtime < 1024 ns, deadline 0, period < deadline, period > 4.19 s,
        # period < 100 us, deadline's top bit set
        "bad deadline parameters: -22 -22 -22 -22 -22 -22 -22\n"
        "setattr: flags=-22 null=-22 pid-1=-22 nopid=-3 policy<0=-22 policy4=-22\n"
        "size 47: -7 size field=56 size 64: 0 size 64 with more: -7 size field=56 size 0: 0\n"
        "flags: unknown=-22 sugov=-22 clamp56=-95 clamp48=-22\n"
        "getattr: 47=-22 4097=-22 flags=-22 null=-22 pid-1=-22 nopid=-3 48: 0 size=48 "
        "untouched=1 128: 0 size=56\n"
        "nice -5: 0\n"
        "nice -5: getattr=0 size=56 policy=0 flags=0 nice=-5 prio=0 runtime=0 deadline=0 "
        "period=0 policy=0 prio=0\n"
        "batch nice 25: 0\n"
        "batch nice 25: getattr=0 size=56 policy=3 flags=0 nice=19 prio=0 runtime=0 "
        "deadline=0 period=0 policy=0x3 prio=0\n"
        "fifo 20: 0\n"
        "fifo 20: getattr=0 size=56 policy=1 flags=0 nice=0 prio=20 runtime=0 deadline=0 "
        "period=0 policy=0x1 prio=20\n"
        "keep policy, prio 7: 0\n"
        "keep policy: getattr=0 size=56 policy=1 flags=0 nice=0 prio=7 runtime=0 deadline=0 "
        "period=0 policy=0x1 prio=7\n"
        "other with fifo's params: -22\n"
        "after: getattr=0 size=56 policy=1 flags=0 nice=0 prio=7 runtime=0 deadline=0 "
        "period=0 policy=0x1 prio=7\n"
        "other: 0\n"
        "other: getattr=0 size=56 policy=0 flags=0 nice=0 prio=0 runtime=0 deadline=0 "
        "period=0 policy=0 prio=0\n"),
    "unpriv": (
        "rtprio 10: fifo 5=0 20=-1 3=0 policy=0x1 prio=3 other=0\n"
        "reset on fork: 0 clear it=-1 keep it=0 setparam=0 other=0 policy=0x40000000 prio=0\n"
        "rtprio 0: fifo=-1 deadline=-1\n"
        "root's: setparam=-1 setscheduler=-1 getparam=0 getscheduler=0\n"
        "nice: 5=0 3=-1 idle=0 back=-1 policy=0x40000005 prio=0\n"
        "affinity: root's=-1 own=0\n"),
    "affinity": (
        "getaffinity: 8 cpu0=1\n"
        "setaffinity: cpu0=0 cpu63=-22 size0=-22 size4=0 size128=0 bad=-14 nopid=-3 pid-1=-3\n"),
    "kill": (
        "uid 1001 to uid 1002: TERM=-1 0=-1 CONT=0; to saved uid 1001: 0; to effective uid "
        "1001: -1; to root: -1; to itself: 0\n"
        "uid 1001 to root: sigqueue=-1 tgkill=-1 tkill=-1 its group, signal 0=0\n"
        "to a thread's id: kill=0 sigqueue=0 hits=2 value=777\n"
        "root: KILL to uid 1002=0 nopid, signal 99=-3 itself, signal 99=-22\n"),
    "queue": (
        "limit 0: tgkill RT=-11 sigqueue RT=-11 tgsigqueueinfo RT=-11 kill RT=0 tgkill USR1=0 "
        "sigqueue USR1=0 ignored RT=0\n"
        "limit 64: sigqueue RT=0 tgkill RT=0\n"
        # kill's SIGRTMIN went beyond the limit without its siginfo: the next one queued
        # stands for it
        "accepted: 4 (SIGRTMIN 2, SIGUSR1 2)\n"),
    "setpgid": (
        "a child: own group=0 is=1 back=0 is=1 zero=0 is=1; a grandchild=-3 nopid=-3 pid-1=-22 "
        "pgid-1=-22 no such group=-1\n"
        "a thread's id: -22\n"
        "a session leader: own group=-1\n"
        "a child in another session: move it=-1 join its group=-1\n"
        "a child after exec: -13\n"),
}
# emu's model on its one CPU: deadline threads reserve at most 95 % of it; a SCHED_FIFO
# thread at 20 keeps the CPU from its child reset to SCHED_OTHER (priority 10) until it
# sleeps; a deadline thread (QNX priority 100) runs before a SCHED_FIFO 99 one
MODEL = ("bandwidth: 96%=-16 95%=0 another 1%=-16 other=0 then 1%=0\n"
         "fifo 20 over its reset child: the child ran while it spun=0, once it slept=1\n"
         "a deadline thread over fifo 99: TTM\n")
# qemu-user answers these itself, not as Linux does: sched_getattr of 4097 bytes,
# sched_setaffinity of 4 bytes, and exec of a foreign binary
QEMU = ("policy", "kill", "queue")


@pytest.mark.parametrize("mode", sorted(CASES))
def test_linux_rules(programs: dict[str, Path], arch: str, mode: str) -> None:
    assert run(programs, arch, mode) == CASES[mode]


def test_scheduling_model_on_one_cpu(programs: dict[str, Path], arch: str) -> None:
    assert run(programs, arch, "model") == MODEL


@pytest.mark.skipif(os.geteuid() != 0 or os.uname().machine != "x86_64",
                    reason="the native run needs root on x86-64")
@pytest.mark.parametrize("mode", sorted(CASES))
def test_native_linux_agrees(programs: dict[str, Path], mode: str) -> None:
    native = subprocess.run([str(program(programs, "x86_64")), mode], capture_output=True,
                            text=True, timeout=60)
    if native.stdout.startswith("setrlimit RTPRIO"):
        pytest.skip("this host does not let root raise RLIMIT_RTPRIO")
    assert native.stdout == CASES[mode]


@pytest.mark.skipif(os.geteuid() != 0, reason="the qemu-user run needs root")
@pytest.mark.parametrize("mode", QEMU)
def test_qemu_aarch64_agrees(programs: dict[str, Path], mode: str) -> None:
    qemu = shutil.which("qemu-aarch64")
    if qemu is None:
        pytest.skip("qemu-aarch64 is not installed")
    out = subprocess.run([qemu, str(program(programs, "aarch64")), mode], capture_output=True,
                         text=True, timeout=120)
    assert out.stdout == CASES[mode]
