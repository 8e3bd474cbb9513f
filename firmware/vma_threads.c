/*
 * vma_threads - threads that read, write and execute pages while two others keep
 * changing the protection of the pages around them (the shape of QEMU's vma-pthread
 * test, written anew): a stress of mprotect and TLB invalidation under concurrency.
 *
 * A chunk of PAGES pages is mapped read/write/execute and every page gets a tiny
 * function (return 42). Page index bits 5..7 say which of read, write and execute a
 * page always keeps; the mutators change the other bits of random ranges, ITERS times
 * each (rand_r with fixed seeds: the same calls every run). The reader, the writer and
 * the executor loop over the pages that keep their permission until both mutators end.
 *
 * Usage: vma_threads [ITERS]      ITERS defaults to 2000
 * Output: mprotects=<2*ITERS> reads=ok writes=ok calls=ok
 * Exit status: 0 ok, 1 a check failed, 2 bad usage.
 */
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fwutil.h"

#define PAGES 256
#define KEEP_R (1 << 5)
#define KEEP_W (1 << 6)
#define KEEP_X (1 << 7)

#if defined(__x86_64__)
static const unsigned char ret42[] = {0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3};   /* mov $42,%eax; ret */
#else
static const unsigned char ret42[] = {0x40, 0x05, 0x80, 0x52,               /* mov w0, #42 */
                                      0xc0, 0x03, 0x5f, 0xd6};              /* ret */
#endif

static char *chunk;
static long page;
static volatile int mutators = 2;
static unsigned long iterations;
static int bad_read, bad_call;

static void *reader(void *arg)
{
    (void)arg;
    for (unsigned i = 0; mutators; i++) {
        const char *p = chunk + (((i % PAGES) | KEEP_R) % PAGES) * page;
        if (p[0] != (char)ret42[0])
            bad_read = 1;
    }
    return NULL;
}

static void *writer(void *arg)
{
    (void)arg;
    for (unsigned i = 0; mutators; i++) {
        char *p = chunk + (((i % PAGES) | KEEP_W | KEEP_R) % PAGES) * page;
        p[page - 1] = (char)i;          /* the last byte: the function stays intact */
    }
    return NULL;
}

static void *executor(void *arg)
{
    (void)arg;
    for (unsigned i = 0; mutators; i++) {
        int (*fn)(void) = (int (*)(void))(chunk + (((i % PAGES) | KEEP_X | KEEP_R) % PAGES) * page);
        if (fn() != 42)
            bad_call = 1;
    }
    return NULL;
}

static void *mutator(void *arg)
{
    unsigned seed = (unsigned)(unsigned long)arg;
    for (unsigned long n = 0; n < iterations; n++) {
        unsigned a = rand_r(&seed) % PAGES, b = rand_r(&seed) % PAGES;
        unsigned lo = a < b ? a : b, hi = a < b ? b : a;
        int prot = rand_r(&seed) & (PROT_READ | PROT_WRITE | PROT_EXEC);
        for (unsigned p = lo; p <= hi; p++) {      /* what any page of the range keeps */
            if (p & KEEP_R) prot |= PROT_READ;
            if (p & KEEP_W) prot |= PROT_WRITE | PROT_READ;
            if (p & KEEP_X) prot |= PROT_EXEC | PROT_READ;
        }
        if (mprotect(chunk + lo * page, (hi - lo + 1) * page, prot) != 0)
            fail_errno("mprotect");
    }
    __atomic_fetch_sub(&mutators, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 2)
        fail_with(EXIT_USAGE, "usage: vma_threads [ITERS]");
    iterations = argc > 1 ? parse_count(argv[1], "ITERS") : 2000;
    page = sysconf(_SC_PAGESIZE);
    chunk = mmap(NULL, PAGES * page, PROT_READ | PROT_WRITE | PROT_EXEC,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (chunk == MAP_FAILED)
        fail_errno("mmap");
    for (int i = 0; i < PAGES; i++)
        memcpy(chunk + i * page, ret42, sizeof ret42);
    __builtin___clear_cache(chunk, chunk + PAGES * page);

    pthread_t threads[5];
    void *(*bodies[5])(void *) = {reader, writer, executor, mutator, mutator};
    for (int i = 0; i < 5; i++)
        if (pthread_create(&threads[i], NULL, bodies[i], (void *)(unsigned long)(i * 7919 + 1)))
            fail_with(EXIT_RUNTIME_FAILURE, "pthread_create failed");
    for (int i = 0; i < 5; i++)
        pthread_join(threads[i], NULL);
    printf("mprotects=%lu reads=%s writes=ok calls=%s\n", 2 * iterations,
           bad_read ? "BAD" : "ok", bad_call ? "BAD" : "ok");
    return bad_read || bad_call ? EXIT_RUNTIME_FAILURE : 0;
}
