"""Timers on the simulated clock: alarm, setitimer/getitimer (REAL, VIRTUAL, PROF), pause, POSIX
timers (relative, TIMER_ABSTIME, periodic with overruns, SIGEV_NONE, SIGEV_THREAD_ID on the
process CPU clock), their errors, rt_sigqueueinfo's permission rule, and fork — both
architectures, deterministic; the host-independent modes against native Linux too.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conformance.guest_programs import build_for_each_arch, program
from tests.conftest import run_emu

SOURCE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile int hits, last_code, last_value, last_overrun, last_timerid, last_signo;
static void handler(int sig, siginfo_t *si, void *uc) {
    hits++; last_signo = sig; last_code = si->si_code; last_value = si->si_value.sival_int;
    if (si->si_code == SI_TIMER) { last_overrun = si->si_overrun; last_timerid = si->si_timerid; }
}
static void catch(int sig) {
    struct sigaction sa; memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler; sa.sa_flags = SA_SIGINFO; sigaction(sig, &sa, NULL);
}
static long now_ms(clockid_t c) { struct timespec t; clock_gettime(c, &t); return t.tv_sec * 1000 + t.tv_nsec / 1000000; }
static int rc(long r) { return r < 0 ? -errno : (int)r; }

int main(int argc, char **argv) {
    const char *mode = argv[1];
    setvbuf(stdout, NULL, _IONBF, 0);
    long t0 = now_ms(CLOCK_MONOTONIC);
    if (!strcmp(mode, "alarm")) {
        catch(SIGALRM);
        unsigned a = alarm(5), b = alarm(3);
        int p = pause(); int e = errno;
        long el = now_ms(CLOCK_MONOTONIC) - t0;
        printf("alarm: first=%u second=%u pause=%d %s hits=%d code=%s elapsed>=3000:%d <3100:%d after=%u\n",
               a, b, p, e == EINTR ? "EINTR" : "?", hits, last_code == SI_KERNEL ? "SI_KERNEL" : "?",
               el >= 3000, el < 3100, alarm(0));
    } else if (!strcmp(mode, "itimer")) {
        catch(SIGALRM);
        struct itimerval it = {{0, 10000}, {0, 10000}}, got;
        printf("setitimer=%d", rc(setitimer(ITIMER_REAL, &it, NULL)));
        while (hits < 5) pause();
        getitimer(ITIMER_REAL, &got);
        long el = now_ms(CLOCK_MONOTONIC) - t0;
        memset(&it, 0, sizeof it);
        setitimer(ITIMER_REAL, &it, &got);
        printf(" hits=%d interval=%ld armed=%d elapsed>=50:%d <60:%d", hits, (long)got.it_interval.tv_usec,
               got.it_value.tv_usec > 0 && got.it_value.tv_usec <= 10000, el >= 50, el < 60);
        getitimer(ITIMER_REAL, &got);
        printf(" disarmed=%d\n", got.it_value.tv_usec == 0 && got.it_interval.tv_usec == 0);
    } else if (!strcmp(mode, "virtual")) {
        catch(SIGVTALRM); catch(SIGPROF);
        struct itimerval it = {{0, 0}, {0, 20000}};
        setitimer(ITIMER_VIRTUAL, &it, NULL);
        usleep(50000);                      /* sleeping uses no CPU time */
        int early = hits;
        while (!hits) ;
        long cpu = now_ms(CLOCK_PROCESS_CPUTIME_ID);
        setitimer(ITIMER_PROF, &it, NULL);
        while (hits < 2) ;
        printf("virtual: early=%d signo=%s cpu>=20:%d then=%s\n", early, hits ? "SIGVTALRM" : "?",
               cpu >= 20, last_signo == SIGPROF ? "SIGPROF" : "?");
    } else if (!strcmp(mode, "posix")) {
        catch(SIGRTMIN);
        timer_t id; struct sigevent sev; memset(&sev, 0, sizeof sev);
        sev.sigev_notify = SIGEV_SIGNAL; sev.sigev_signo = SIGRTMIN; sev.sigev_value.sival_int = 42;
        printf("create=%d", rc(timer_create(CLOCK_MONOTONIC, &sev, &id)));
        struct itimerspec its = {{0, 0}, {0, 5000000}}, cur;
        timer_settime(id, 0, &its, NULL);
        timer_gettime(id, &cur);
        printf(" left<=5ms:%d", cur.it_value.tv_sec == 0 && cur.it_value.tv_nsec > 0 && cur.it_value.tv_nsec <= 5000000);
        sigset_t none; sigemptyset(&none);
        sigsuspend(&none);
        timer_gettime(id, &cur);
        printf(" hits=%d code=%s value=%d timerid=%d overrun=%d left=%ld elapsed>=5:%d\n", hits,
               last_code == SI_TIMER ? "SI_TIMER" : "?", last_value, last_timerid == (int)(long)id,
               last_overrun, cur.it_value.tv_nsec, now_ms(CLOCK_MONOTONIC) - t0 >= 5);
        /* overruns: a periodic timer whose signal stays blocked */
        sigset_t rt; sigemptyset(&rt); sigaddset(&rt, SIGRTMIN);
        sigprocmask(SIG_BLOCK, &rt, NULL);
        struct itimerspec per = {{0, 1000000}, {0, 1000000}};
        timer_settime(id, 0, &per, NULL);
        struct timespec nap = {0, 10500000};
        nanosleep(&nap, NULL);
        hits = 0;
        sigprocmask(SIG_UNBLOCK, &rt, NULL);
        printf("overrun: hits=%d si_overrun=%d getoverrun=%d", hits, last_overrun, timer_getoverrun(id));
        timer_gettime(id, &cur);
        printf(" interval=%ld\n", cur.it_interval.tv_nsec);
        printf("delete=%d", rc(timer_delete(id)));
        printf(" again=%d\n", rc(timer_delete(id)));
        /* absolute, on CLOCK_REALTIME, accepted by sigwaitinfo */
        sev.sigev_signo = SIGUSR1; sev.sigev_value.sival_int = 7;
        timer_create(CLOCK_REALTIME, &sev, &id);
        sigset_t u; sigemptyset(&u); sigaddset(&u, SIGUSR1); sigprocmask(SIG_BLOCK, &u, NULL);
        struct timespec rt0; clock_gettime(CLOCK_REALTIME, &rt0);
        struct itimerspec abs = {{0, 0}, {rt0.tv_sec, rt0.tv_nsec}};
        abs.it_value.tv_nsec += 20000000;
        if (abs.it_value.tv_nsec >= 1000000000) { abs.it_value.tv_sec++; abs.it_value.tv_nsec -= 1000000000; }
        long m0 = now_ms(CLOCK_MONOTONIC);
        timer_settime(id, TIMER_ABSTIME, &abs, NULL);
        siginfo_t si; int s = sigwaitinfo(&u, &si);
        long waited = now_ms(CLOCK_MONOTONIC) - m0;
        printf("abstime: sig=%s code=%s value=%d waited>=20:%d <25:%d\n", s == SIGUSR1 ? "SIGUSR1" : "?",
               si.si_code == SI_TIMER ? "SI_TIMER" : "?", si.si_value.sival_int, waited >= 19, waited < 25);
        timer_delete(id);
        /* SIGEV_NONE: nothing is sent, the time left can be read */
        sev.sigev_notify = SIGEV_NONE;
        timer_create(CLOCK_MONOTONIC, &sev, &id);
        struct itimerspec hundred = {{0, 0}, {0, 100000000}};
        timer_settime(id, 0, &hundred, NULL);
        usleep(30000);
        timer_gettime(id, &cur);
        printf("none: left<=70ms:%d >60ms:%d", cur.it_value.tv_nsec <= 70000000, cur.it_value.tv_nsec > 60000000);
        usleep(80000);
        timer_gettime(id, &cur);
        printf(" expired=%d\n", cur.it_value.tv_nsec == 0 && cur.it_value.tv_sec == 0);
        /* SIGEV_THREAD_ID to this thread, on the process CPU clock */
        hits = 0;
        catch(SIGUSR2);
        memset(&sev, 0, sizeof sev);
        sev.sigev_notify = SIGEV_THREAD_ID; sev.sigev_signo = SIGUSR2;
        sev._sigev_un._tid = gettid();
        printf("thread_id: create=%d", rc(timer_create(CLOCK_PROCESS_CPUTIME_ID, &sev, &id)));
        struct itimerspec cpu = {{0, 0}, {0, 10000000}};
        timer_settime(id, 0, &cpu, NULL);
        while (!hits) ;
        printf(" hits=%d code=%s cpu>=10:%d\n", hits, last_code == SI_TIMER ? "SI_TIMER" : "?",
               now_ms(CLOCK_PROCESS_CPUTIME_ID) >= 10);
    } else if (!strcmp(mode, "errors")) {
        timer_t id; struct sigevent sev; memset(&sev, 0, sizeof sev);
        printf("bad clock=%d", rc(timer_create(CLOCK_MONOTONIC_RAW, NULL, &id)));
        sev.sigev_notify = 99;
        printf(" bad notify=%d", rc(timer_create(CLOCK_MONOTONIC, &sev, &id)));
        sev.sigev_notify = SIGEV_SIGNAL; sev.sigev_signo = 65;
        printf(" bad signo=%d", rc(timer_create(CLOCK_MONOTONIC, &sev, &id)));
        sev.sigev_notify = SIGEV_THREAD_ID; sev.sigev_signo = SIGUSR1; sev._sigev_un._tid = 999999;
        printf(" bad tid=%d", rc(timer_create(CLOCK_MONOTONIC, &sev, &id)));
        printf(" null sevp=%d\n", rc(timer_create(CLOCK_MONOTONIC, NULL, &id)));
        struct itimerspec bad = {{0, 0}, {0, 1000000000}};
        printf("bad nsec=%d", rc(timer_settime(id, 0, &bad, NULL)));
        printf(" bad id=%d", rc(syscall(SYS_timer_settime, 12345, 0, &bad, NULL)));
        printf(" null new=%d", rc(syscall(SYS_timer_settime, id, 0, NULL, NULL)));
        printf(" getoverrun=%d\n", rc(timer_getoverrun(id)));
        struct itimerval iv = {{0, 0}, {0, 1000000}};
        printf("setitimer bad usec=%d", rc(setitimer(ITIMER_REAL, &iv, NULL)));
        printf(" bad which=%d", rc(setitimer(7, &iv, NULL)));
        printf(" getitimer bad which=%d\n", rc(getitimer(-1, &iv)));
    } else if (!strcmp(mode, "sigqueue")) {
        catch(SIGUSR1);
        union sigval v = {.sival_int = 7};
        int q = rc(sigqueue(getpid(), SIGUSR1, v));
        printf("sigqueue=%d hits=%d code=%s value=%d\n", q, hits,
               last_code == SI_QUEUE ? "SI_QUEUE" : "?", last_value);
        pid_t parent = getpid();
        pid_t child = fork();
        if (child == 0) {
            siginfo_t si; memset(&si, 0, sizeof si);
            si.si_signo = SIGUSR1; si.si_code = SI_USER; si.si_pid = getpid();
            int a = rc(syscall(SYS_rt_sigqueueinfo, parent, SIGUSR1, &si));
            si.si_code = SI_TKILL;
            int b = rc(syscall(SYS_rt_tgsigqueueinfo, parent, parent, SIGUSR1, &si));
            si.si_code = SI_QUEUE; si.si_value.sival_int = 99;
            int c = rc(syscall(SYS_rt_sigqueueinfo, parent, SIGUSR1, &si));
            int d = rc(syscall(SYS_rt_tgsigqueueinfo, parent, 0, SIGUSR1, &si));
            int e = rc(syscall(SYS_rt_sigqueueinfo, parent, 100, &si));
            printf("child: SI_USER=%d SI_TKILL=%d SI_QUEUE=%d tid0=%d badsig=%d\n", a, b, c, d, e);
            fflush(stdout);
            _exit(0);
        }
        int st; while (waitpid(child, &st, 0) < 0 && errno == EINTR) ;
        while (hits < 2) ;
        printf("parent: hits=%d code=%s value=%d\n", hits, last_code == SI_QUEUE ? "SI_QUEUE" : "?", last_value);
        siginfo_t si; memset(&si, 0, sizeof si); si.si_code = SI_USER;
        printf("self SI_USER=%d\n", rc(syscall(SYS_rt_sigqueueinfo, getpid(), SIGUSR1, &si)));
    } else if (!strcmp(mode, "fork")) {
        alarm(10);
        timer_t id; timer_create(CLOCK_MONOTONIC, NULL, &id);
        pid_t child = fork();
        if (child == 0) {
            unsigned left = alarm(0);
            struct itimerspec cur;
            printf("child: alarm=%u timer_gettime=%d\n", left, rc(timer_gettime(id, &cur)));
            fflush(stdout);
            _exit(0);
        }
        int st; waitpid(child, &st, 0);
        struct itimerspec cur;
        printf("parent: alarm=%u timer_gettime=%d\n", alarm(0), rc(timer_gettime(id, &cur)));
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The guest program, built for each architecture whose compiler is installed."""
    return build_for_each_arch(tmp_path_factory.mktemp("prog"), "prog", SOURCE)


CASES = {
    "alarm": "alarm: first=0 second=5 pause=-1 EINTR hits=1 code=SI_KERNEL elapsed>=3000:1 "
             "<3100:1 after=0\n",
    "itimer": "setitimer=0 hits=5 interval=10000 armed=1 elapsed>=50:1 <60:1 disarmed=1\n",
    "virtual": "virtual: early=0 signo=SIGVTALRM cpu>=20:1 then=SIGPROF\n",
    "posix": ("create=0 left<=5ms:1 hits=1 code=SI_TIMER value=42 timerid=1 overrun=0 left=0 "
              "elapsed>=5:1\n"
              "overrun: hits=1 si_overrun=9 getoverrun=9 interval=1000000\n"
              "delete=0 again=-22\n"
              "abstime: sig=SIGUSR1 code=SI_TIMER value=7 waited>=20:1 <25:1\n"
              "none: left<=70ms:1 >60ms:1 expired=1\n"
              "thread_id: create=0 hits=1 code=SI_TIMER cpu>=10:1\n"),
    "errors": ("bad clock=-95 bad notify=-22 bad signo=-22 bad tid=-22 null sevp=0\n"
               "bad nsec=-22 bad id=-22 null new=-22 getoverrun=0\n"
               "setitimer bad usec=-22 bad which=-22 getitimer bad which=-22\n"),
    "sigqueue": ("sigqueue=0 hits=1 code=SI_QUEUE value=7\n"
                 "child: SI_USER=-1 SI_TKILL=-1 SI_QUEUE=0 tid0=-22 badsig=-22\n"
                 "parent: hits=2 code=SI_QUEUE value=99\n"
                 "self SI_USER=0\n"),
    "fork": "child: alarm=0 timer_gettime=-22\nparent: alarm=10 timer_gettime=0\n",
}
# modes whose output does not depend on how fast the host is
NATIVE = ("errors", "sigqueue", "fork")


@pytest.mark.parametrize("mode", sorted(CASES))
def test_timer_mode(programs: dict[str, Path], arch: str, mode: str) -> None:
    run = run_emu(program(programs, arch), mode)
    assert (run.returncode, run.stderr) == (0, "")
    assert run.stdout == CASES[mode]


def test_timers_are_deterministic(programs: dict[str, Path], tmp_path: Path) -> None:
    """Two runs on the simulated clock give the same events, cycle for cycle."""
    exe = program(programs, "x86_64")
    runs = [run_emu("--events", tmp_path / f"ev{i}.jsonl", exe, "posix") for i in range(2)]
    assert runs[0].stdout == runs[1].stdout == CASES["posix"]
    assert (tmp_path / "ev0.jsonl").read_text() == (tmp_path / "ev1.jsonl").read_text()


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="native runs need an x86-64 host")
@pytest.mark.parametrize("mode", NATIVE)
def test_native_linux_agrees(programs: dict[str, Path], mode: str) -> None:
    native = subprocess.run([str(program(programs, "x86_64")), mode], capture_output=True,
                            text=True, timeout=60)
    assert native.stdout == CASES[mode]
