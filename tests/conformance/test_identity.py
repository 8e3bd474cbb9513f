"""Credentials and resources: the set*id family with Linux's permission rules and capability
effects, groups, capget, rlimits, nice values, prctl and personality — one C program run
as root and as --uid 1000, on both architectures, against a native run when possible.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conformance.guest_programs import COMPILERS, build_for_each_arch, program
from tests.conftest import run_emu

SOURCE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/time.h>
#include <sys/times.h>
#include <sched.h>
#include <unistd.h>
#include <sys/fsuid.h>
#include <linux/capability.h>

static void ids(const char *tag) {
    uid_t r, e, s; gid_t gr, ge, gs;
    getresuid(&r, &e, &s); getresgid(&gr, &ge, &gs);
    printf("%s: uid %u %u %u euid=%u gid %u %u %u egid=%u\n", tag, r, e, s, geteuid(),
           gr, ge, gs, getegid());
}
static int rc(long r) { return r < 0 ? -errno : (int)r; }
static void caps(const char *tag) {
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    int r = syscall(SYS_capget, &h, d);
    printf("%s: capget=%d eff=%s perm=%s\n", tag, r, (d[0].effective | d[1].effective) ? "some" : "none",
           (d[0].permitted | d[1].permitted) ? "some" : "none");
}

int main(int argc, char **argv) {
    gid_t g[8] = {5, 3, 9};
    struct rlimit rl;
    char name[32];
    int v;
    ids("start");
    caps("start");
    if (getuid() == 0) {
        printf("setgroups=%d\n", rc(setgroups(3, g)));
        printf("getgroups(0)=%d getgroups(2)=%d\n", rc(getgroups(0, NULL)), rc(getgroups(2, g)));
        memset(g, 0, sizeof g);
        v = rc(getgroups(8, g));
        printf("getgroups(8)=%d: %u %u %u\n", v, g[0], g[1], g[2]);
        printf("setresgid=%d\n", rc(setresgid(100, 200, 300)));
        printf("setresuid=%d\n", rc(setresuid(1000, 2000, 0)));
        ids("res");
        caps("res");
        printf("setuid(0)=%d\n", rc(setuid(0)));
        ids("setuid0");
        caps("setuid0");
        printf("setreuid=%d\n", rc(setreuid(-1, 1000)));
        ids("setreuid");
        v = setfsuid(4242);
        printf("setfsuid(4242)=%d now=%d\n", v, setfsuid(-1));
        v = setfsuid(0);
        printf("setfsuid(0)=%d now=%d\n", v, setfsuid(-1));
        v = setfsuid(1000);
        printf("setfsuid(1000)=%d now=%d\n", v, setfsuid(-1));
        printf("dumpable=%d\n", prctl(PR_GET_DUMPABLE));
        printf("setresuid(1000x3)=%d\n", rc(setresuid(1000, 1000, 1000)));
        caps("dropped");
        printf("setuid(0)=%d setresuid(0)=%d setreuid(0)=%d setgid(0)=%d\n", rc(setuid(0)),
               rc(setresuid(0, -1, -1)), rc(setreuid(0, -1)), rc(setgid(0)));
        printf("setgroups=%d setregid(200,100)=%d\n", rc(setgroups(1, g)), rc(setregid(200, 100)));
        ids("end");
    } else {
        printf("setuid(0)=%d setgroups=%d setresgid=%d\n", rc(setuid(0)), rc(setgroups(1, g)),
               rc(setresgid(0, 0, 0)));
        printf("setresuid(same)=%d\n", rc(setresuid(getuid(), getuid(), -1)));
    }
    /* limits */
    rl.rlim_cur = 64; rl.rlim_max = 128;
    printf("setrlimit(NOFILE 64 128)=%d\n", rc(setrlimit(RLIMIT_NOFILE, &rl)));
    getrlimit(RLIMIT_NOFILE, &rl);
    printf("NOFILE %lu %lu\n", (unsigned long)rl.rlim_cur, (unsigned long)rl.rlim_max);
    rl.rlim_cur = 64; rl.rlim_max = 256;
    printf("raise hard=%d\n", rc(setrlimit(RLIMIT_NOFILE, &rl)));
    rl.rlim_cur = 200; rl.rlim_max = 128;
    printf("cur>max=%d\n", rc(setrlimit(RLIMIT_NOFILE, &rl)));
    printf("bad resource=%d\n", rc(syscall(SYS_prlimit64, 0, 99, NULL, &rl)));
    struct rlimit nl = {32, 128}, ol;
    v = rc(syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, &nl, &ol));
    printf("prlimit=%d old=%lu %lu\n", v,
           (unsigned long)ol.rlim_cur, (unsigned long)ol.rlim_max);
    getrlimit(RLIMIT_NOFILE, &rl);
    printf("NOFILE %lu %lu\n", (unsigned long)rl.rlim_cur, (unsigned long)rl.rlim_max);
    /* nice */
    printf("getpriority=%ld\n", syscall(SYS_getpriority, PRIO_PROCESS, 0));
    v = rc(setpriority(PRIO_PROCESS, 0, 5));
    printf("setpriority(5)=%d get=%ld\n", v, syscall(SYS_getpriority, PRIO_PROCESS, 0));
    v = rc(setpriority(PRIO_PROCESS, 0, 0));
    printf("setpriority(0)=%d", v);
    v = rc(setpriority(PRIO_PROCESS, 0, 99));
    printf(" setpriority(99)=%d get=%ld", v, syscall(SYS_getpriority, PRIO_PROCESS, 0));
    printf(" bad which=%d\n", rc(setpriority(7, 0, 1)));
    /* prctl */
    printf("name=%d ", rc(prctl(PR_SET_NAME, "averyveryverylongname")));
    prctl(PR_GET_NAME, name);
    printf("%s\n", name);
    v = rc(prctl(PR_SET_DUMPABLE, 1));
    printf("setdumpable(1)=%d get=%d", v, prctl(PR_GET_DUMPABLE));
    printf(" setdumpable(2)=%d\n", rc(prctl(PR_SET_DUMPABLE, 2)));
    v = rc(prctl(PR_SET_PDEATHSIG, SIGUSR1));
    printf("pdeathsig=%d bad=%d ", v, rc(prctl(PR_SET_PDEATHSIG, 65)));
    prctl(PR_GET_PDEATHSIG, &v);
    printf("get=%d\n", v);
    printf("nnp=%d", prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
    printf(" set=%d", rc(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)));
    printf(" bad=%d", rc(prctl(PR_SET_NO_NEW_PRIVS, 2, 0, 0, 0)));
    printf(" nnp=%d\n", prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
    printf("slack=%d ", prctl(PR_GET_TIMERSLACK));
    prctl(PR_SET_TIMERSLACK, 1000);
    printf("%d ", prctl(PR_GET_TIMERSLACK));
    prctl(PR_SET_TIMERSLACK, 0);
    printf("%d\n", prctl(PR_GET_TIMERSLACK));
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    prctl(PR_GET_CHILD_SUBREAPER, &v);
    printf("subreaper=%d capbset(0)=%d capbset(41)=%d unknown=%d\n", v,
           prctl(PR_CAPBSET_READ, 0), rc(prctl(PR_CAPBSET_READ, 41)), rc(prctl(9999, 0)));
    printf("personality=%#x ", personality(0xffffffff));
    printf("%#x ", personality(ADDR_NO_RANDOMIZE));
    printf("%#x\n", personality(0xffffffff));
    struct timespec ts;
    printf("rr_interval=%d\n", rc(sched_rr_get_interval(0, &ts)));
    printf("getrusage(bad)=%d\n", rc(getrusage(7, NULL)));
    return 0;
}
"""


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The guest program, built for each architecture whose compiler is installed."""
    return build_for_each_arch(tmp_path_factory.mktemp("prog"), "prog", SOURCE)


EXPECTED_ROOT_HEAD = """\
start: uid 0 0 0 euid=0 gid 0 0 0 egid=0
start: capget=0 eff=some perm=some
setgroups=0
getgroups(0)=3 getgroups(2)=-22
getgroups(8)=3: 3 5 9
setresgid=0
setresuid=0
res: uid 1000 2000 0 euid=2000 gid 100 200 300 egid=200
res: capget=0 eff=none perm=some
setuid(0)=0
setuid0: uid 1000 0 0 euid=0 gid 100 200 300 egid=200
setuid0: capget=0 eff=some perm=some
setreuid=0
setreuid: uid 1000 1000 0 euid=1000 gid 100 200 300 egid=200
setfsuid(4242)=1000 now=1000
setfsuid(0)=1000 now=0
setfsuid(1000)=0 now=1000
dumpable=0
setresuid(1000x3)=0
dropped: capget=0 eff=none perm=none
setuid(0)=-1 setresuid(0)=-1 setreuid(0)=-1 setgid(0)=-1
setgroups=-1 setregid(200,100)=0
end: uid 1000 1000 1000 euid=1000 gid 200 100 100 egid=100
"""

EXPECTED_USER_HEAD = """\
start: uid 1000 1000 1000 euid=1000 gid 1000 1000 1000 egid=1000
start: capget=0 eff=none perm=none
setuid(0)=-1 setgroups=-1 setresgid=-1
setresuid(same)=0
"""

EXPECTED_TAIL = """\
setrlimit(NOFILE 64 128)=0
NOFILE 64 128
raise hard=-1
cur>max=-22
bad resource=-22
prlimit=0 old=64 128
NOFILE 32 128
getpriority=20
setpriority(5)=0 get=15
setpriority(0)=-13 setpriority(99)=0 get=1 bad which=-22
name=0 averyveryverylo
setdumpable(1)=0 get=1 setdumpable(2)=-22
pdeathsig=0 bad=-22 get=10
nnp=0 set=0 bad=-22 nnp=1
slack=50000 1000 50000
subreaper=1 capbset(0)=1 capbset(41)=-22 unknown=-22
personality=0 0 0x40000
rr_interval=0
getrusage(bad)=-22
"""


def test_root_drops_and_regains_privileges(programs: dict[str, Path], arch: str) -> None:
    run = run_emu(program(programs, arch))
    assert (run.returncode, run.stderr) == (0, "")
    assert run.stdout == EXPECTED_ROOT_HEAD + EXPECTED_TAIL


def test_unprivileged_user_is_refused(programs: dict[str, Path], arch: str) -> None:
    run = run_emu("--uid", "1000", program(programs, arch))
    assert (run.returncode, run.stderr) == (0, "")
    assert run.stdout == EXPECTED_USER_HEAD + EXPECTED_TAIL


@pytest.mark.skipif(os.geteuid() != 0 or os.uname().machine != "x86_64",
                    reason="the native run needs root on x86-64")
def test_native_linux_agrees(programs: dict[str, Path]) -> None:
    native = subprocess.run([str(program(programs, "x86_64"))], capture_output=True, text=True,
                            check=True)
    assert native.stdout == EXPECTED_ROOT_HEAD + EXPECTED_TAIL


SYSINFO_C = r"""
#include <stdio.h>
#include <sys/resource.h>
#include <sys/sysinfo.h>
#include <sys/times.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
int main(void) {
    struct timespec nap = {2, 500000000};
    nanosleep(&nap, NULL);
    struct sysinfo si;
    sysinfo(&si);
    printf("uptime=%ld totalram=%lu unit=%u procs=%u free_ok=%d\n", si.uptime, si.totalram,
           si.mem_unit, si.procs, si.freeram > 0 && si.freeram < si.totalram);
    volatile unsigned long x = 0;
    for (unsigned long i = 0; i < 20000000; i++) x += i;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long us = ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec;
    struct timespec cpu;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
    long cpu_us = cpu.tv_sec * 1000000 + cpu.tv_nsec / 1000;
    printf("self: utime_ok=%d maxrss_ok=%d minflt_ok=%d\n", us > 0 && us <= cpu_us,
           ru.ru_maxrss > 0, ru.ru_minflt > 0);
    pid_t child = fork();
    if (child == 0) {
        for (unsigned long i = 0; i < 20000000; i++) x += i;
        _exit(0);
    }
    int st;
    waitpid(child, &st, 0);
    struct rusage rc;
    getrusage(RUSAGE_CHILDREN, &rc);
    struct tms t;
    clock_t ticks = times(&t);
    printf("children: utime_ok=%d minflt_ok=%d times: ticks>=250:%d cutime_ok=%d\n",
           rc.ru_utime.tv_sec * 1000000 + rc.ru_utime.tv_usec > 0, rc.ru_minflt > 0,
           ticks >= 250, t.tms_cutime >= 0 && t.tms_utime > 0);
    return 0;
}
"""


def test_sysinfo_rusage_and_times_follow_the_simulated_clock(tmp_path: Path, arch: str) -> None:
    cc = COMPILERS[arch]
    if shutil.which(cc[0]) is None:
        pytest.skip(f"no compiler for {arch}")
    (tmp_path / "sysinfo.c").write_text(SYSINFO_C)
    exe = tmp_path / "sysinfo"
    subprocess.run([*cc, "-o", str(exe), str(tmp_path / "sysinfo.c")], check=True)
    run = run_emu("--ram", "64M", exe)
    assert (run.returncode, run.stderr) == (0, "")
    # 2.5 s asleep: the uptime is rounded up; procs counts tasks (procnto's server + ours)
    assert run.stdout == ("uptime=3 totalram=67108864 unit=1 procs=2 free_ok=1\n"
                          "self: utime_ok=1 maxrss_ok=1 minflt_ok=1\n"
                          "children: utime_ok=1 minflt_ok=1 times: ticks>=250:1 cutime_ok=1\n")
