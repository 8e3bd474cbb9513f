/*
 * cpu_features - what the auxiliary vector tells a program, checked against
 * the CPU it runs on.
 *
 * Output lines (exit 0 when every check holds, 1 otherwise):
 *   pagesz=4096
 *   uid=<AT_UID> euid=<AT_EUID> gid=<AT_GID> getuid=<getuid()>
 *   entry: ok          AT_ENTRY is _start
 *   phdr: ok           AT_PHDR/AT_PHNUM describe this program (a PT_LOAD is there)
 *   random: ok         AT_RANDOM points at 16 readable bytes
 *   at_random=<32 hex digits> getrandom=<16 hex digits>   (the run's seeded randomness)
 *   execfn=<AT_EXECFN>
 *   hwcap: ok          x86-64: AT_HWCAP == CPUID.1:EDX; AArch64: FP, ASIMD, ATOMICS set
 *                      (read from the raw auxv: the process must not modify environ first)
 *   lse: ok            (AArch64) an LSE atomic (ldaddal) executes and adds
 */
#include <elf.h>
#include <link.h>
#include <sys/auxv.h>
#include <sys/random.h>
#include <unistd.h>

#include "fwutil.h"

extern char _start[];
extern char **environ;
static int failures;

/* The auxv entry as the kernel wrote it (glibc's getauxval(AT_HWCAP) is
 * synthetic on x86-64), found after the NULL that ends envp. */
static unsigned long raw_auxval(unsigned long type)
{
    char **p = environ;
    while (*p)
        p++;
    for (ElfW(auxv_t) *a = (ElfW(auxv_t) *)(p + 1); a->a_type != AT_NULL; a++)
        if (a->a_type == type)
            return a->a_un.a_val;
    return 0;
}

static void check(const char *name, int ok)
{
    printf("%s: %s\n", name, ok ? "ok" : "FAILED");
    failures += !ok;
}

static int hwcap_matches_cpu(void)
{
#if defined(__x86_64__)
    unsigned int eax = 1, ebx, ecx = 0, edx;
    __asm__ volatile("cpuid" : "+a"(eax), "=b"(ebx), "+c"(ecx), "=d"(edx));
    return raw_auxval(AT_HWCAP) == edx;
#else
    unsigned long need = (1UL << 0) | (1UL << 1) | (1UL << 8); /* FP, ASIMD, ATOMICS */
    return (raw_auxval(AT_HWCAP) & need) == need;
#endif
}

int main(void)
{
    printf("pagesz=%lu\n", getauxval(AT_PAGESZ));
    printf("uid=%lu euid=%lu gid=%lu getuid=%u\n", getauxval(AT_UID), getauxval(AT_EUID),
           getauxval(AT_GID), (unsigned)getuid());
    check("entry", getauxval(AT_ENTRY) == (unsigned long)_start);

    const ElfW(Phdr) *phdr = (const ElfW(Phdr) *)getauxval(AT_PHDR);
    unsigned long phnum = getauxval(AT_PHNUM), loads = 0;
    for (unsigned long i = 0; phdr && i < phnum; i++)
        loads += phdr[i].p_type == PT_LOAD;
    check("phdr", loads > 0);

    const unsigned char *rnd = (const unsigned char *)getauxval(AT_RANDOM);
    unsigned sum = 0;
    for (int i = 0; rnd && i < 16; i++)
        sum += rnd[i];
    check("random", rnd != NULL && sum != 0);
    unsigned char more[8] = {0};
    if (getrandom(more, sizeof more, 0) != (ssize_t)sizeof more)
        failures++;
    printf("at_random=");
    for (int i = 0; rnd && i < 16; i++)
        printf("%02x", rnd[i]);
    printf(" getrandom=");
    for (int i = 0; i < 8; i++)
        printf("%02x", more[i]);
    printf("\n");
    printf("execfn=%s\n", (const char *)getauxval(AT_EXECFN));
    check("hwcap", hwcap_matches_cpu());
#if defined(__aarch64__)
    unsigned int value = 40, old;
    __asm__ volatile(".arch armv8.1-a\n\tldaddal %w[inc], %w[old], [%[ptr]]"
                     : [old] "=r"(old) : [inc] "r"(2u), [ptr] "r"(&value) : "memory");
    check("lse", old == 40 && value == 42);
#endif
    return failures ? EXIT_RUNTIME_FAILURE : 0;
}
