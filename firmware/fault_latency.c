/*
 * fault_latency - the seed's experiment: how long a page fault takes when
 * CPU-bound threads share the toucher's priority.
 *
 * Usage: fault_latency SPINNERS PAGES TOUCHER_PRIO SPINNER_PRIO
 * SPINNERS threads spin at SCHED_RR SPINNER_PRIO until the toucher (the main
 * thread) is done. Once every spinner has started, the toucher switches to
 * SCHED_RR at TOUCHER_PRIO and writes one byte into each of PAGES fresh pages,
 * timing each first touch with CLOCK_MONOTONIC. (Spinners at a priority above
 * the default never let the main thread run again before they are stopped:
 * keep SPINNER_PRIO at or below 10.)
 * Output:
 *   spinners=N pages=P toucher_prio=T spinner_prio=S
 *   touch_ns mean=<mean> max=<max> min=<min>
 * Exit 0 (1 on a failure, 2 on bad arguments).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <time.h>

#include "fwutil.h"

static volatile int stop;
static volatile int started;

static void *spin(void *arg)
{
    (void)arg;
    __atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
    while (!stop)
        ;
    return NULL;
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 5)
        fail_with(EXIT_USAGE, "usage: fault_latency SPINNERS PAGES TOUCHER_PRIO SPINNER_PRIO");
    int spinners = (int)parse_count(argv[1], "SPINNERS");
    long pages = (long)parse_count(argv[2], "PAGES");
    int toucher_prio = (int)parse_count(argv[3], "TOUCHER_PRIO");
    int spinner_prio = (int)parse_count(argv[4], "SPINNER_PRIO");
    if (spinners > 64 || pages < 1)
        fail_with(EXIT_USAGE, "SPINNERS <= 64 and PAGES >= 1");

    struct sched_param param;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setinheritsched(&attr, PTHREAD_EXPLICIT_SCHED);
    pthread_attr_setschedpolicy(&attr, SCHED_RR);
    param.sched_priority = spinner_prio;
    pthread_attr_setschedparam(&attr, &param);
    pthread_t tids[64];
    for (int i = 0; i < spinners; i++)
        if (pthread_create(&tids[i], &attr, spin, NULL) != 0)
            fail_with(EXIT_RUNTIME_FAILURE, "pthread_create failed");
    while (started < spinners)      /* at the default priority, so spinners get to start */
        sched_yield();
    param.sched_priority = toucher_prio;
    if (pthread_setschedparam(pthread_self(), SCHED_RR, &param) != 0)
        fail_with(EXIT_RUNTIME_FAILURE, "pthread_setschedparam(%d) failed", toucher_prio);

    long page = 4096;
    char *region = mmap(NULL, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED)
        fail_errno("mmap");
    long long total = 0, max = 0, min = -1;
    for (long i = 0; i < pages; i++) {
        long long t0 = now_ns();
        region[i * page] = (char)i;
        long long dt = now_ns() - t0;
        total += dt;
        max = dt > max ? dt : max;
        min = (min < 0 || dt < min) ? dt : min;
    }
    stop = 1;
    for (int i = 0; i < spinners; i++)
        pthread_join(tids[i], NULL);
    printf("spinners=%d pages=%ld toucher_prio=%d spinner_prio=%d\n", spinners, pages,
           toucher_prio, spinner_prio);
    printf("touch_ns mean=%lld max=%lld min=%lld\n", total / pages, max, min);
    return 0;
}
