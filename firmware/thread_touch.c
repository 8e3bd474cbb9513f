/*
 * thread_touch - several threads first-touching memory at once: where their time goes
 * (each thread's cycles in STATE_WAITPAGE, from emu's --stats).
 *
 * Usage: thread_touch THREADS PAGES
 *   Maps one committed anonymous region of THREADS * PAGES pages; thread i writes one
 *   byte into each page of its own PAGES-page slice, then sums its slice back.
 * Output: "threads=T pages=P sum=<n>". Exit 0, 1 on a failure, 2 on bad usage.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>

#include "fwutil.h"

#define PAGE 4096
#define MAX_THREADS 16

static volatile unsigned char *region;
static size_t pages_each;
static uint64_t sums[MAX_THREADS];

static void *toucher(void *arg)
{
    size_t index = (size_t)(uintptr_t)arg;
    volatile unsigned char *slice = region + index * pages_each * PAGE;
    for (size_t i = 0; i < pages_each; i++)
        slice[i * PAGE] = (unsigned char)(index + i);
    uint64_t sum = 0;
    for (size_t i = 0; i < pages_each; i++)
        sum += slice[i * PAGE];
    sums[index] = sum;
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        fail_with(EXIT_USAGE, "usage: thread_touch THREADS PAGES");
    size_t threads = (size_t)parse_count(argv[1], "THREADS");
    pages_each = (size_t)parse_count(argv[2], "PAGES");
    if (threads == 0 || threads > MAX_THREADS || pages_each == 0)
        fail_with(EXIT_USAGE, "THREADS must be 1..%d and PAGES positive", MAX_THREADS);
    region = mmap(NULL, threads * pages_each * PAGE, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED)
        fail_errno("mmap");
    pthread_t ids[MAX_THREADS];
    for (size_t t = 0; t < threads; t++)
        if (pthread_create(&ids[t], NULL, toucher, (void *)(uintptr_t)t) != 0)
            fail_with(1, "pthread_create failed");
    uint64_t total = 0;
    for (size_t t = 0; t < threads; t++) {
        pthread_join(ids[t], NULL);
        total += sums[t];
    }
    printf("threads=%zu pages=%zu sum=%llu\n", threads, pages_each, (unsigned long long)total);
    return 0;
}
