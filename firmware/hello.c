/*
 * hello - smallest useful guest: process start-up, argv/envp on the initial
 * stack, buffered stdout and the exit status.
 *
 * Usage: hello [ARGS...]
 * Output (stdout):
 *   hello from <arch>          <arch> is x86_64 or aarch64 (compile time)
 *   argc=<argc>
 *   argv[<i>]=<argv[i]>        one line per argument, i = 0 .. argc-1
 *   EMU_GREETING=<value>       only if the environment variable is set
 * Exit status: argv[1] if it is a decimal integer (the kernel keeps the low
 * 8 bits, e.g. 300 -> 44, -1 -> 255), otherwise 0.
 */
#include <limits.h>

#include "fwutil.h"

#if defined(__x86_64__)
#define ARCH_NAME "x86_64"
#elif defined(__aarch64__)
#define ARCH_NAME "aarch64"
#else
#error "unsupported architecture"
#endif

/* Return 1 and store the value if text is a whole decimal int, else return 0. */
static int parse_int(const char *text, int *value)
{
    char *end;
    long parsed;

    errno = 0;
    parsed = strtol(text, &end, 10);
    if (end == text || *end != '\0' || errno != 0 || parsed < INT_MIN || parsed > INT_MAX)
        return 0;
    *value = (int)parsed;
    return 1;
}

int main(int argc, char **argv)
{
    const char *greeting = getenv("EMU_GREETING");
    int exit_code = 0;

    printf("hello from %s\n", ARCH_NAME);
    printf("argc=%d\n", argc);
    for (int i = 0; i < argc; i++)
        printf("argv[%d]=%s\n", i, argv[i]);
    if (greeting != NULL)
        printf("EMU_GREETING=%s\n", greeting);

    if (fflush(stdout) != 0)
        fail_errno("write stdout");

    if (argc > 1 && parse_int(argv[1], &exit_code))
        return exit_code;
    return 0;
}
