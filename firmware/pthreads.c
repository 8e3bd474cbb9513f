/*
 * pthreads - glibc/musl threads on the emulated kernel: create, join, mutex,
 * condition variable, scheduling parameters, sleeping and yielding.
 *
 * Usage: pthreads [WORKERS] [INCREMENTS]   (defaults 4 and 1000)
 * Output, one line per step, then "all ok" (exit 0; 1 with a message on failure):
 *   mutex: counter=<WORKERS*INCREMENTS>
 *   condvar: sum=<sum of 1..200>
 *   sched: policy=SCHED_RR priority=20
 *   sleep: ok          CLOCK_MONOTONIC advanced by at least the 2 ms slept
 *   cputime: ok        ...while the thread's CPU-time clock advanced by far less, and the
 *                      process's CPU time is at least the thread's
 *   yield: ok
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <time.h>

#include "fwutil.h"

#define ITEMS 200

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static long counter;
static unsigned long increments = 1000;
static int queue[ITEMS], head, tail, done;

static void check(int ok, const char *what)
{
    if (!ok)
        fail_with(EXIT_RUNTIME_FAILURE, "FAILED: %s", what);
}

static void *worker(void *arg)
{
    (void)arg;
    for (unsigned long i = 0; i < increments; i++) {
        pthread_mutex_lock(&lock);
        counter++;
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

static void *producer(void *arg)
{
    (void)arg;
    for (int i = 1; i <= ITEMS; i++) {
        pthread_mutex_lock(&lock);
        queue[tail++] = i;
        pthread_cond_signal(&cond);
        pthread_mutex_unlock(&lock);
        if (i % 16 == 0)
            sched_yield();
    }
    pthread_mutex_lock(&lock);
    done = 1;
    pthread_cond_signal(&cond);
    pthread_mutex_unlock(&lock);
    return NULL;
}

static long consume(void)
{
    long sum = 0;
    pthread_mutex_lock(&lock);
    for (;;) {
        while (head == tail && !done)
            pthread_cond_wait(&cond, &lock);
        if (head == tail && done)
            break;
        sum += queue[head++];
    }
    pthread_mutex_unlock(&lock);
    return sum;
}

static long long clock_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    unsigned long workers = argc > 1 ? parse_count(argv[1], "WORKERS") : 4;
    if (argc > 2)
        increments = parse_count(argv[2], "INCREMENTS");
    if (workers > 64)
        fail_with(EXIT_USAGE, "at most 64 workers");

    pthread_t tids[64];
    for (unsigned long i = 0; i < workers; i++)
        check(pthread_create(&tids[i], NULL, worker, NULL) == 0, "pthread_create");
    for (unsigned long i = 0; i < workers; i++)
        check(pthread_join(tids[i], NULL) == 0, "pthread_join");
    printf("mutex: counter=%ld\n", counter);
    check(counter == (long)(workers * increments), "mutex counter");

    pthread_t prod;
    check(pthread_create(&prod, NULL, producer, NULL) == 0, "pthread_create producer");
    long sum = consume();
    check(pthread_join(prod, NULL) == 0, "pthread_join producer");
    printf("condvar: sum=%ld\n", sum);
    check(sum == ITEMS * (ITEMS + 1) / 2, "condvar sum");

    struct sched_param param = {.sched_priority = 20};
    check(pthread_setschedparam(pthread_self(), SCHED_RR, &param) == 0, "pthread_setschedparam");
    int policy;
    check(pthread_getschedparam(pthread_self(), &policy, &param) == 0, "pthread_getschedparam");
    printf("sched: policy=%s priority=%d\n", policy == SCHED_RR ? "SCHED_RR" : "other",
           param.sched_priority);

    long long before = clock_ns(CLOCK_MONOTONIC);
    long long cpu_before = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    struct timespec two_ms = {0, 2000000};
    check(nanosleep(&two_ms, NULL) == 0, "nanosleep");
    check(clock_ns(CLOCK_MONOTONIC) - before >= 2000000, "monotonic clock advanced by the sleep");
    puts("sleep: ok");
    long long thread_cpu = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    check(thread_cpu - cpu_before < 1000000, "sleeping does not use CPU time");
    check(clock_ns(CLOCK_PROCESS_CPUTIME_ID) >= thread_cpu, "process CPU time >= thread's");
    puts("cputime: ok");

    check(sched_yield() == 0, "sched_yield");
    puts("yield: ok");
    puts("all ok");
    return 0;
}
