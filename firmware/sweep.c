/*
 * sweep - a TLB workload: sweep a large committed array with a stride, several times.
 *
 * Usage: sweep MIB STRIDE_BYTES PASSES
 *   Maps MIB MiB of committed anonymous memory (emu places it aligned for large pages),
 *   writes one byte every STRIDE_BYTES (the first pass: first touches), then reads one
 *   byte every STRIDE_BYTES in PASSES - 1 more passes. With a stride of a page or more,
 *   every access of a pass falls on another page: with 4 KiB pages that is a TLB miss once
 *   the array outgrows the TLBs' reach, with 2 MiB pages it is not.
 * Output: "sweep mib=M stride=S passes=P sum=<hex>". Exit 0, 2 on bad usage.
 */
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>

#include "fwutil.h"

int main(int argc, char **argv)
{
    if (argc != 4)
        fail_with(EXIT_USAGE, "usage: sweep MIB STRIDE_BYTES PASSES");
    size_t mib = (size_t)parse_count(argv[1], "MIB");
    size_t stride = (size_t)parse_count(argv[2], "STRIDE_BYTES");
    unsigned long long passes = parse_count(argv[3], "PASSES");
    if (mib == 0 || stride == 0 || passes == 0)
        fail_with(EXIT_USAGE, "MIB, STRIDE_BYTES and PASSES must be positive");
    size_t size = mib << 20;
    volatile unsigned char *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        fail_errno("mmap");
    for (size_t i = 0; i < size; i += stride)
        p[i] = (unsigned char)(i / stride);
    uint64_t sum = 0;
    for (unsigned long long pass = 1; pass < passes; pass++)
        for (size_t i = 0; i < size; i += stride)
            sum += p[i];
    printf("sweep mib=%zu stride=%zu passes=%llu sum=%llx\n", mib, stride, passes,
           (unsigned long long)sum);
    return 0;
}
