/*
 * signals - POSIX signals as a glibc program sees them: handlers with
 * SA_SIGINFO, siglongjmp out of fault handlers, masks, sigtimedwait,
 * sigsuspend, sigaltstack, SA_RESTART, SA_NODEFER, SA_RESETHAND and default
 * actions.
 *
 * Usage: signals MODE        (one check per mode; output is deterministic)
 *   segv-accerr  read a PROT_NONE page: SIGSEGV, SEGV_ACCERR, si_addr = the address
 *   segv-maperr  write an unmapped page: SIGSEGV, SEGV_MAPERR, si_addr = the address
 *   bus-lazy     (emu only: run with --ram 4M) touch a MAP_LAZY mapping larger than RAM:
 *                SIGBUS, BUS_OBJERR, si_addr = the page being touched
 *   raise        raise(SIGUSR1) and kill(getpid(), SIGUSR1) reach a SA_SIGINFO handler
 *   mask         a blocked SIGUSR1 pends; unblocking it runs the handler
 *   timedwait    sigtimedwait accepts a pending blocked signal; a timeout gives EAGAIN
 *   altstack     an SA_ONSTACK handler runs on the sigaltstack
 *   flags        sa_mask, SA_NODEFER, SA_RESETHAND; a handler interrupted by another
 *   sigill       an undefined instruction: SIGILL with si_addr = its address
 *   sigtrap      a breakpoint instruction (int3 / brk): SIGTRAP
 *   sigfpe       integer division by zero: SIGFPE, FPE_INTDIV (x86-64; AArch64 does not trap)
 *   restart      a futex wait interrupted by a SA_RESTART handler is restarted
 *   eintr        a futex wait interrupted by a handler without SA_RESTART fails with EINTR
 *   sigsuspend   sigsuspend returns EINTR after the handler, with the old mask back
 *   nanosleep    a signal ends nanosleep early: EINTR and the time left
 *   async        signals from another thread interrupt a floating-point loop anywhere; the
 *                handler clobbers FP registers; the loop's result must not change
 *   abort        abort(): killed by SIGABRT (exit status 134)
 *   ignore       SIG_IGN SIGUSR2 and default-ignored SIGCHLD do not kill
 * Exit status: 0 ok, 1 a check failed, 2 bad usage; abort dies of SIGABRT.
 */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "emu.h"
#include "fwutil.h"

static sigjmp_buf jump;
static volatile sig_atomic_t handled;
static volatile int got_signo, got_code, got_pid, got_uid;
static void *volatile got_addr;
static volatile int in_usr1, in_usr2;           /* mask seen inside the handler */
static char *volatile touching;                  /* the address a fault mode is touching */

static const char *code_name(int signo, int code)
{
    switch (code) {
    case SI_USER: return "SI_USER";
    case SI_TKILL: return "SI_TKILL";
    case SI_KERNEL: return "SI_KERNEL";
    case SI_QUEUE: return "SI_QUEUE";
    }
    if (signo == SIGSEGV)
        return code == SEGV_MAPERR ? "SEGV_MAPERR" : code == SEGV_ACCERR ? "SEGV_ACCERR" : "?";
    if (signo == SIGBUS)
        return code == BUS_ADRERR ? "BUS_ADRERR" : code == BUS_OBJERR ? "BUS_OBJERR" : "?";
    if (signo == SIGILL)
        return code == ILL_ILLOPC ? "ILL_ILLOPC" : code == ILL_ILLOPN ? "ILL_ILLOPN" : "?";
    if (signo == SIGFPE)
        return code == FPE_INTDIV ? "FPE_INTDIV" : "?";
    if (signo == SIGTRAP)
        return code == TRAP_BRKPT ? "TRAP_BRKPT" : "?";
    return "?";
}

static void record(int signo, siginfo_t *info)
{
    got_signo = signo;
    got_code = info->si_code;
    got_addr = info->si_addr;
    got_pid = info->si_pid;
    got_uid = (int)info->si_uid;
    handled++;
}

static void jump_out(int signo, siginfo_t *info, void *uc)
{
    (void)uc;
    record(signo, info);
    siglongjmp(jump, 1);
}

static void count(int signo, siginfo_t *info, void *uc)
{
    (void)uc;
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    in_usr1 = sigismember(&now, SIGUSR1);
    in_usr2 = sigismember(&now, SIGUSR2);
    record(signo, info);
}

static void on(int signo, void (*fn)(int, siginfo_t *, void *), int flags, int masked)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fn;
    sa.sa_flags = SA_SIGINFO | flags;
    sigemptyset(&sa.sa_mask);
    if (masked)
        sigaddset(&sa.sa_mask, masked);
    if (sigaction(signo, &sa, NULL) != 0)
        fail_errno("sigaction");
}

static void check(int ok, const char *what)
{
    if (!ok)
        fail_with(EXIT_RUNTIME_FAILURE, "check failed: %s", what);
}

static int blocked(int signo)
{
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    return sigismember(&now, signo);
}

/* Touch `p` (read or write) expecting a fault signal caught by jump_out. */
static void fault_mode(const char *name, char *p, int write)
{
    on(SIGSEGV, jump_out, 0, 0);
    on(SIGBUS, jump_out, 0, 0);
    if (sigsetjmp(jump, 1) == 0) {
        touching = p;
        if (write)
            *(volatile char *)p = 1;
        else
            (void)*(volatile char *)p;
        fail_with(EXIT_RUNTIME_FAILURE, "%s: the access did not fault", name);
    }
    printf("%s: %s %s addr=%s\n", name, got_signo == SIGSEGV ? "SIGSEGV" : "SIGBUS",
           code_name(got_signo, got_code), got_addr == (void *)touching ? "ok" : "wrong");
}

static void *map(size_t length, int prot, int flags)
{
    void *p = mmap(NULL, length, prot, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
    if (p == MAP_FAILED)
        fail_errno("mmap");
    return p;
}

static void bus_lazy(void)
{
    size_t length = 64 << 20;               /* far more than --ram 4M */
    char *region = map(length, PROT_READ | PROT_WRITE, MAP_LAZY);
    on(SIGBUS, jump_out, 0, 0);
    /* First bring in everything the fault's path needs (the handler and siglongjmp code, the
     * stack the frame goes on, stdout's buffer): once RAM is gone, no page can come in. */
    if (sigsetjmp(jump, 1) == 0)
        raise(SIGBUS);
    printf("bus-lazy: touching up to %d MiB\n", (int)(length >> 20));   /* printf, not puts */
    fflush(stdout);
    if (sigsetjmp(jump, 1) == 0) {
        for (size_t off = 0; off < length; off += 4096) {
            touching = region + off;
            *touching = 1;
        }
        fail_with(EXIT_RUNTIME_FAILURE, "bus-lazy: RAM never ran out");
    }
    signal(SIGBUS, SIG_DFL);
    if (munmap(region, length) != 0)        /* give the RAM back: the rest can page in again */
        fail_errno("munmap");
    printf("bus-lazy: %s %s addr=%s\n", got_signo == SIGBUS ? "SIGBUS" : "?",
           code_name(got_signo, got_code), got_addr == (void *)touching ? "ok" : "wrong");
}

static void raise_mode(void)
{
    on(SIGUSR1, count, 0, 0);
    check(raise(SIGUSR1) == 0 && handled == 1, "raise");
    printf("raise: %s pid=%s uid=%s\n", code_name(SIGUSR1, got_code),
           got_pid == getpid() ? "ok" : "wrong", got_uid == (int)getuid() ? "ok" : "wrong");
    check(kill(getpid(), SIGUSR1) == 0 && handled == 2, "kill");
    printf("kill: %s pid=%s handled=%d\n", code_name(SIGUSR1, got_code),
           got_pid == getpid() ? "ok" : "wrong", (int)handled);
}

static void mask_mode(void)
{
    sigset_t set, pending;
    on(SIGUSR1, count, 0, 0);
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    raise(SIGUSR1);
    sigpending(&pending);
    printf("blocked: pending=%d handled=%d\n", sigismember(&pending, SIGUSR1), (int)handled);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    sigpending(&pending);
    printf("unblocked: pending=%d handled=%d\n", sigismember(&pending, SIGUSR1), (int)handled);
}

static void timedwait_mode(void)
{
    sigset_t set;
    siginfo_t info;
    struct timespec timeout = {1, 0}, short_timeout = {0, 20 * 1000 * 1000};
    on(SIGUSR1, count, 0, 0);
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigprocmask(SIG_BLOCK, &set, NULL);
    raise(SIGUSR1);
    int sig = sigtimedwait(&set, &info, &timeout);
    printf("pending: sig=%s %s handled=%d\n", sig == SIGUSR1 ? "SIGUSR1" : "?",
           code_name(info.si_signo, info.si_code), (int)handled);
    sig = sigtimedwait(&set, &info, &short_timeout);
    printf("timeout: ret=%d %s\n", sig, sig == -1 && errno == EAGAIN ? "EAGAIN" : "?");
}

static char alt_memory[64 << 10] __attribute__((aligned(16)));
static volatile int on_alt, reported_onstack;

static void on_altstack(int signo, siginfo_t *info, void *uc)
{
    char local;
    stack_t now;
    (void)uc;
    on_alt = &local >= alt_memory && &local < alt_memory + sizeof alt_memory;
    sigaltstack(NULL, &now);
    reported_onstack = (now.ss_flags & SS_ONSTACK) != 0;
    record(signo, info);
}

static void altstack_mode(void)
{
    stack_t ss = {.ss_sp = alt_memory, .ss_size = sizeof alt_memory, .ss_flags = 0}, now;
    if (sigaltstack(&ss, NULL) != 0)
        fail_errno("sigaltstack");
    on(SIGUSR1, on_altstack, SA_ONSTACK, 0);
    raise(SIGUSR1);
    sigaltstack(NULL, &now);
    printf("altstack: handled=%d on_altstack=%d ss_onstack=%d after=%d\n", (int)handled,
           (int)on_alt, (int)reported_onstack, now.ss_flags);
}

static volatile int order[4], order_n;

static void outer(int signo, siginfo_t *info, void *uc)
{
    (void)info; (void)uc;
    order[order_n++] = signo;
    raise(SIGUSR2);
    order[order_n++] = -signo;
}

static void inner(int signo, siginfo_t *info, void *uc)
{
    (void)info; (void)uc;
    order[order_n++] = signo;
}

static void flags_mode(void)
{
    struct sigaction now;
    on(SIGUSR1, count, 0, SIGUSR2);
    raise(SIGUSR1);
    printf("sa_mask: in usr1=%d usr2=%d; after usr1=%d usr2=%d\n", (int)in_usr1, (int)in_usr2,
           blocked(SIGUSR1), blocked(SIGUSR2));
    on(SIGUSR1, count, SA_NODEFER, 0);
    raise(SIGUSR1);
    printf("nodefer: in usr1=%d\n", (int)in_usr1);
    on(SIGUSR1, count, SA_RESETHAND, 0);
    raise(SIGUSR1);
    sigaction(SIGUSR1, NULL, &now);
    printf("resethand: handled=%d then %s\n", (int)handled,
           now.sa_handler == SIG_DFL ? "SIG_DFL" : "still caught");
    on(SIGUSR1, outer, 0, 0);
    on(SIGUSR2, inner, 0, 0);
    raise(SIGUSR1);
    printf("nested: %d %d %d %d\n", order[0], order[1], order[2], order[3]);
}

__attribute__((noinline)) static void illegal(void)
{
#if defined(__x86_64__)
    __asm__ volatile(".globl fw_bad_insn\nfw_bad_insn:\n\tud2" ::: "memory");
#else
    __asm__ volatile(".globl fw_bad_insn\nfw_bad_insn:\n\t.inst 0x00000000" ::: "memory");
#endif
}

__attribute__((noinline)) static void breakpoint(void)
{
#if defined(__x86_64__)
    __asm__ volatile("int3" ::: "memory");
#else
    __asm__ volatile("brk #0x3e8" ::: "memory");
#endif
}

extern const char fw_bad_insn[];

static void exception_mode(const char *name, int signo)
{
    on(signo, jump_out, 0, 0);
    if (sigsetjmp(jump, 1) == 0) {
        if (signo == SIGILL) {
            illegal();
        } else if (signo == SIGTRAP) {
            breakpoint();
        } else {
            volatile long zero = 0, one = 1;
            volatile long r = one / zero;
            (void)r;
#if defined(__aarch64__)
            printf("%s: no trap (AArch64 integer division by zero gives 0)\n", name);
            return;
#endif
        }
        fail_with(EXIT_RUNTIME_FAILURE, "%s: no signal", name);
    }
    printf("%s: %s", name, code_name(got_signo, got_code));
    if (signo == SIGILL)
        printf(" addr=%s", got_addr == (void *)fw_bad_insn ? "ok" : "wrong");
    printf("\n");
}

static int futex_word;
static pthread_t main_thread;

static void *kicker(void *arg)
{
    struct timespec pause = {0, 20 * 1000 * 1000};
    nanosleep(&pause, NULL);
    pthread_kill(main_thread, SIGUSR1);
    if (arg != NULL) {                      /* then let a restarted futex wait end */
        __atomic_store_n(&futex_word, 1, __ATOMIC_SEQ_CST);
        syscall(SYS_futex, &futex_word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    }
    return NULL;
}

static pthread_t start_kicker(int wake_futex)
{
    pthread_t t;
    main_thread = pthread_self();
    if (pthread_create(&t, NULL, kicker, wake_futex ? &futex_word : NULL) != 0)
        fail_with(EXIT_RUNTIME_FAILURE, "pthread_create failed");
    return t;
}

static void futex_mode(const char *name, int flags)
{
    on(SIGUSR1, count, flags, 0);
    pthread_t t = start_kicker(flags & SA_RESTART);     /* eintr: nothing else ends the wait */
    long r = syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
    int e = errno;
    pthread_join(t, NULL);
    const char *how = r == 0 || (r == -1 && e == EAGAIN) ? "restarted"
                      : r == -1 && e == EINTR ? "EINTR" : "?";
    printf("%s: futex wait %s handled=%d\n", name, how, (int)handled);
}

static void sigsuspend_mode(void)
{
    sigset_t set, none;
    on(SIGUSR1, count, 0, 0);
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    pthread_t t = start_kicker(0);
    sigemptyset(&none);
    int r = sigsuspend(&none);
    int e = errno;
    pthread_join(t, NULL);
    printf("sigsuspend: ret=%d %s handled=%d usr1_blocked=%d\n", r, e == EINTR ? "EINTR" : "?",
           (int)handled, blocked(SIGUSR1));
}

static void nanosleep_mode(void)
{
    struct timespec req = {5, 0}, rem = {0, 0};
    on(SIGUSR1, count, SA_RESTART, 0);      /* nanosleep fails with EINTR even so */
    pthread_t t = start_kicker(0);
    int r = nanosleep(&req, &rem);
    int e = errno;
    pthread_join(t, NULL);
    int rem_ok = rem.tv_sec < 5 && (rem.tv_sec > 0 || rem.tv_nsec > 0);
    printf("nanosleep: ret=%d %s handled=%d rem_ok=%d\n", r, e == EINTR ? "EINTR" : "?",
           (int)handled, rem_ok);
}

static volatile int async_done;

static void clobber(int signo)
{
    volatile double x = 1.5;
    (void)signo;
    for (int i = 0; i < 50; i++)
        x = x * 1.0001 + 0.3;
    handled++;
}

static void *pester(void *arg)
{
    struct timespec pause = {0, 200 * 1000};
    (void)arg;
    while (!async_done) {
        nanosleep(&pause, NULL);
        pthread_kill(main_thread, SIGUSR1);
    }
    return NULL;
}

static void async_mode(void)
{
    pthread_t t;
    signal(SIGUSR1, clobber);
    main_thread = pthread_self();
    if (pthread_create(&t, NULL, pester, NULL) != 0)
        fail_with(EXIT_RUNTIME_FAILURE, "pthread_create failed");
    double a = 0, b = 1;
    long n = 0;
    for (long i = 0; i < 3000000; i++) {
        a += b * 0.5;
        b *= 1.0000001;
        n += i & 3;
    }
    while (handled < 3)                     /* make sure some signals landed in the loop */
        ;
    async_done = 1;
    pthread_join(t, NULL);
    printf("async: a=%.6f b=%.9f n=%ld\n", a, b, n);
}

static void ignore_mode(void)
{
    signal(SIGUSR2, SIG_IGN);
    raise(SIGUSR2);
    kill(getpid(), SIGUSR2);
    raise(SIGCHLD);                         /* ignored by default */
    printf("ignore: still alive\n");
}

int main(int argc, char **argv)
{
    if (argc != 2)
        fail_with(EXIT_USAGE, "usage: signals MODE (see the source for the modes)");
    const char *mode = argv[1];
    long page = sysconf(_SC_PAGESIZE);
    if (strcmp(mode, "segv-accerr") == 0) {
        fault_mode(mode, map(page, PROT_NONE, 0), 0);
    } else if (strcmp(mode, "segv-maperr") == 0) {
        char *p = map(page, PROT_READ | PROT_WRITE, 0);
        if (munmap(p, page) != 0)
            fail_errno("munmap");
        fault_mode(mode, p + 8, 1);
    } else if (strcmp(mode, "bus-lazy") == 0) {
        bus_lazy();
    } else if (strcmp(mode, "raise") == 0) {
        raise_mode();
    } else if (strcmp(mode, "mask") == 0) {
        mask_mode();
    } else if (strcmp(mode, "timedwait") == 0) {
        timedwait_mode();
    } else if (strcmp(mode, "altstack") == 0) {
        altstack_mode();
    } else if (strcmp(mode, "flags") == 0) {
        flags_mode();
    } else if (strcmp(mode, "sigill") == 0) {
        exception_mode(mode, SIGILL);
    } else if (strcmp(mode, "sigtrap") == 0) {
        exception_mode(mode, SIGTRAP);
    } else if (strcmp(mode, "sigfpe") == 0) {
        exception_mode(mode, SIGFPE);
    } else if (strcmp(mode, "restart") == 0) {
        futex_mode(mode, SA_RESTART);
    } else if (strcmp(mode, "eintr") == 0) {
        futex_mode(mode, 0);
    } else if (strcmp(mode, "sigsuspend") == 0) {
        sigsuspend_mode();
    } else if (strcmp(mode, "nanosleep") == 0) {
        nanosleep_mode();
    } else if (strcmp(mode, "async") == 0) {
        async_mode();
    } else if (strcmp(mode, "abort") == 0) {
        printf("about to abort\n");
        fflush(stdout);
        abort();
    } else if (strcmp(mode, "ignore") == 0) {
        ignore_mode();
    } else {
        fail_with(EXIT_USAGE, "unknown mode '%s'", mode);
    }
    if (fflush(stdout) != 0)
        fail_errno("write stdout");
    return 0;
}
