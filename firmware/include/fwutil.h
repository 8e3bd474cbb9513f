/*
 * fwutil.h - small helpers shared by the firmware programs.
 *
 * Exit-code convention: 0 success, 1 runtime failure, 2 bad command line.
 */
#ifndef FWUTIL_H
#define FWUTIL_H

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_RUNTIME_FAILURE 1
#define EXIT_USAGE 2

/* Print "<what>: <strerror(errno)>" to stderr and exit with EXIT_RUNTIME_FAILURE. */
static inline __attribute__((noreturn)) void fail_errno(const char *what)
{
    fprintf(stderr, "%s: %s\n", what, strerror(errno));
    exit(EXIT_RUNTIME_FAILURE);
}

/* Print a printf-style message plus newline to stderr and exit with the given code. */
static inline __attribute__((noreturn, format(printf, 2, 3)))
void fail_with(int exit_code, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vfprintf(stderr, format, args);
    va_end(args);
    fputc('\n', stderr);
    exit(exit_code);
}

/* Parse a non-negative decimal integer argument; exit with EXIT_USAGE if it is not one. */
static inline unsigned long long parse_count(const char *text, const char *name)
{
    char *end;
    unsigned long long value;

    if (!isdigit((unsigned char)text[0]))
        fail_with(EXIT_USAGE, "invalid %s: '%s'", name, text);
    errno = 0;
    value = strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0')
        fail_with(EXIT_USAGE, "invalid %s: '%s'", name, text);
    return value;
}

#endif /* FWUTIL_H */
