/*
 * tty_probe - terminal queries a program makes at start-up (isatty, window size).
 *
 * Output: "isatty0=N isatty1=N" then "winsize=ROWSxCOLS" when stdout is a
 * terminal, or "winsize=ENOTTY" when it is not. Exit 0.
 */
#include <sys/ioctl.h>
#include <unistd.h>

#include "fwutil.h"

int main(void)
{
    struct winsize ws;
    int tty0 = isatty(0), tty1 = isatty(1);
    printf("isatty0=%d isatty1=%d\n", tty0, tty1);
    if (ioctl(1, TIOCGWINSZ, &ws) == 0)
        printf("winsize=%ux%u\n", ws.ws_row, ws.ws_col);
    else
        printf("winsize=%s\n", errno == ENOTTY ? "ENOTTY" : strerror(errno));
    return 0;
}
