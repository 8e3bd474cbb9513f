/*
 * password - the classic glitch study's target: a password check whose branch an
 * instruction skip can jump over.
 *
 * Usage: password GUESS
 *   Compares GUESS with the secret in check_password() and prints the verdict.
 * Output: "ACCESS GRANTED" (exit 0) or "ACCESS DENIED" (exit 1).
 */
#include "fwutil.h"

static const char secret[] = "swordfish";

__attribute__((noinline)) int check_password(const char *guess)
{
    int diff = 0;
    unsigned long i = 0;
    for (; secret[i] != '\0'; i++) {
        if (guess[i] == '\0')
            return 0;
        diff |= guess[i] ^ secret[i];
    }
    if (guess[i] != '\0')
        return 0;
    return diff == 0;
}

int main(int argc, char **argv)
{
    if (argc != 2)
        fail_with(EXIT_USAGE, "usage: password GUESS");
    if (check_password(argv[1])) {
        puts("ACCESS GRANTED");
        return 0;
    }
    puts("ACCESS DENIED");
    return 1;
}
