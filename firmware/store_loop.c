/*
 * store_loop - memory-store throughput: one 64-bit store per iteration into
 * consecutive words of a KIB KiB buffer, wrapping around at its end. The
 * stores go through a volatile pointer so each iteration is exactly one
 * store instruction (no vectorising, merging or dead-store elimination).
 *
 * Usage: store_loop [ITERS [KIB]]  ITERS defaults to 200000000 (~0.2-0.3 s under qemu),
 *                                   KIB to 64
 *   Iteration n stores the value n into word n % (KIB * 128).
 * Output (stdout): checksum=0x<16 hex digits>   (hash of the final buffer)
 * Exit status: 0 ok, 1 allocation or stdout failure, 2 bad usage.
 */
#include <stdint.h>

#include "fwutil.h"

#define DEFAULT_ITERS 200000000ULL
#define DEFAULT_KIB 64

/* Perform `iterations` stores, wrapping around the `words`-word buffer.
 * noinline keeps the loop a single, easily located function in disassembly. */
static __attribute__((noinline)) void store_words(volatile uint64_t *buffer, size_t words, uint64_t iterations)
{
    uint64_t stored = 0;
    while (stored < iterations) {
        size_t pass = iterations - stored < words ? (size_t)(iterations - stored) : words;
        for (size_t i = 0; i < pass; i++)
            buffer[i] = stored + i;
        stored += pass;
    }
}

static uint64_t checksum_words(const volatile uint64_t *buffer, size_t words)
{
    uint64_t checksum = 0;
    for (size_t i = 0; i < words; i++)
        checksum = (checksum ^ buffer[i]) * 0x100000001b3ULL;
    return checksum;
}

int main(int argc, char **argv)
{
    if (argc > 3)
        fail_with(EXIT_USAGE, "usage: store_loop [ITERS [KIB]]");
    uint64_t iterations = argc > 1 ? parse_count(argv[1], "ITERS") : DEFAULT_ITERS;
    uint64_t kib = argc > 2 ? parse_count(argv[2], "KIB") : DEFAULT_KIB;
    if (kib == 0 || kib > SIZE_MAX / 1024)
        fail_with(EXIT_USAGE, "KIB must be between 1 and %zu", SIZE_MAX / 1024);

    size_t words = kib * 1024 / sizeof(uint64_t);
    volatile uint64_t *buffer = calloc(words, sizeof(uint64_t));
    if (buffer == NULL)
        fail_errno("calloc");

    store_words(buffer, words, iterations);
    printf("checksum=0x%016llx\n", (unsigned long long)checksum_words(buffer, words));
    free((void *)buffer);
    if (fflush(stdout) != 0)
        fail_errno("write stdout");
    return 0;
}
