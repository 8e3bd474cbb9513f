/*
 * compute_loop - pure CPU work: a register-only integer loop (xorshift64
 * mixed with the loop counter) with no memory accesses and no syscalls
 * inside the loop. Useful for measuring raw translated-code speed.
 *
 * Usage: compute_loop [ITERS]     ITERS defaults to 200000000 (~0.35 s native/qemu)
 * Output (stdout): result=0x<16 hex digits>
 * Exit status: 0 ok, 1 stdout write failure, 2 bad usage.
 */
#include <stdint.h>

#include "fwutil.h"

#define DEFAULT_ITERS 200000000ULL

/* noinline keeps the loop a single, easily located function in disassembly. */
static __attribute__((noinline)) uint64_t mix(uint64_t iterations)
{
    uint64_t state = 0x9e3779b97f4a7c15ULL;
    for (uint64_t i = 0; i < iterations; i++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state += i;
    }
    return state;
}

int main(int argc, char **argv)
{
    if (argc > 2)
        fail_with(EXIT_USAGE, "usage: compute_loop [ITERS]");
    uint64_t iterations = argc > 1 ? parse_count(argv[1], "ITERS") : DEFAULT_ITERS;

    printf("result=0x%016llx\n", (unsigned long long)mix(iterations));
    if (fflush(stdout) != 0)
        fail_errno("write stdout");
    return 0;
}
