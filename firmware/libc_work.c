/*
 * libc_work - a glibc program whose work is mostly glibc's own code: snprintf, malloc,
 * strlen, memcpy, strcmp, qsort, free. For comparing emu's instruction count with a
 * native count (tests/integration/test_instruction_count.py): glibc picks its string
 * functions (IFUNCs) from CPUID, so under emu and natively they may differ.
 *
 * Usage: libc_work [N [ROUNDS]]   N strings (default 2000), sorted ROUNDS times (default 4)
 *   Round r makes N strings "item-<(i * 7919 + r) % N>-<i>" (each a malloc'd copy),
 *   sorts them with qsort/strcmp, joins them into one buffer with memcpy and folds the
 *   buffer into a checksum, then frees them.
 * Output (stdout): strings=<N> rounds=<ROUNDS> checksum=0x<16 hex digits>
 * Exit status: 0 ok, 1 allocation or stdout failure, 2 bad usage.
 */
#include <stdint.h>

#include "fwutil.h"

static int compare(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    if (argc > 3)
        fail_with(EXIT_USAGE, "usage: libc_work [N [ROUNDS]]");
    unsigned long long n = argc > 1 ? parse_count(argv[1], "N") : 2000;
    unsigned long long rounds = argc > 2 ? parse_count(argv[2], "ROUNDS") : 4;
    if (n == 0 || n > 10000000)
        fail_with(EXIT_USAGE, "N must be between 1 and 10000000");

    char **items = malloc(n * sizeof *items);
    char *joined = malloc(n * 48 + 1);
    if (items == NULL || joined == NULL)
        fail_errno("malloc");
    uint64_t checksum = 0xcbf29ce484222325ULL;
    for (unsigned long long r = 0; r < rounds; r++) {
        for (unsigned long long i = 0; i < n; i++) {
            char text[48];
            int len = snprintf(text, sizeof text, "item-%llu-%llu", (i * 7919 + r) % n, i);
            items[i] = malloc((size_t)len + 1);
            if (items[i] == NULL)
                fail_errno("malloc");
            memcpy(items[i], text, (size_t)len + 1);
        }
        qsort(items, n, sizeof *items, compare);
        size_t used = 0;
        for (unsigned long long i = 0; i < n; i++) {
            size_t len = strlen(items[i]);
            memcpy(joined + used, items[i], len);
            used += len;
            free(items[i]);
        }
        for (size_t k = 0; k < used; k += 8)
            checksum = (checksum ^ (unsigned char)joined[k]) * 0x100000001b3ULL;
    }
    free(joined);
    free(items);
    printf("strings=%llu rounds=%llu checksum=0x%016llx\n", n, rounds,
           (unsigned long long)checksum);
    if (fflush(stdout) != 0)
        fail_errno("write stdout");
    return 0;
}
