/*
 * checksum - a checksum loop for register and memory fault studies: every outcome a bit
 * flip can have shows up here (masked, a wrong result, a crash, a detected mismatch, a
 * loop that runs away).
 *
 * Usage: checksum [ROUNDS [N]]
 *   Fills `data` (N 64-bit words, default 512, at most 4096) from a fixed seed, then
 *   computes a Fletcher-style checksum over it ROUNDS times (default 200) through a
 *   pointer, and a second time with a plain index loop. The two must agree: if they do
 *   not, the program says so on stderr and exits 1 (a detected error).
 * Output: "checksum=0x... rounds=R words=N" (exit 0).
 */
#include <stdint.h>

#include "fwutil.h"

#define MAX_WORDS 4096

uint64_t data[MAX_WORDS];

__attribute__((noinline, noipa)) uint64_t sum_by_pointer(const uint64_t *p, const uint64_t *end)
{
    uint64_t a = 1, b = 0;
    while (p < end) {
        a = (a + *p++) % 0xFFFFFFFBULL;
        b = (b + a) % 0xFFFFFFFBULL;
    }
    return (b << 32) | a;
}

__attribute__((noinline, noipa)) uint64_t sum_by_index(const uint64_t *words, unsigned long n)
{
    uint64_t a = 1, b = 0;
    for (unsigned long i = 0; i < n; i++) {
        a = (a + words[i]) % 0xFFFFFFFBULL;
        b = (b + a) % 0xFFFFFFFBULL;
    }
    return (b << 32) | a;
}

int main(int argc, char **argv)
{
    if (argc > 3)
        fail_with(EXIT_USAGE, "usage: checksum [ROUNDS [N]]");
    unsigned long rounds = argc > 1 ? parse_count(argv[1], "ROUNDS") : 200;
    unsigned long n = argc > 2 ? parse_count(argv[2], "N") : 512;
    if (n == 0 || n > MAX_WORDS)
        fail_with(EXIT_USAGE, "N must be 1-%d", MAX_WORDS);
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (unsigned long i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data[i] = x;
    }
    uint64_t first = 0, second = 0;
    for (unsigned long r = 0; r < rounds; r++)
        first = (first ^ sum_by_pointer(data, data + n)) * 0x100000001b3ULL + r;
    for (unsigned long r = 0; r < rounds; r++)
        second = (second ^ sum_by_index(data, n)) * 0x100000001b3ULL + r;
    if (first != second)
        fail_with(EXIT_RUNTIME_FAILURE, "checksum mismatch: 0x%016llx != 0x%016llx",
                  (unsigned long long)first, (unsigned long long)second);
    printf("checksum=0x%016llx rounds=%lu words=%lu\n", (unsigned long long)first, rounds, n);
    return 0;
}
