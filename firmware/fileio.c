/*
 * fileio - the file system calls a guest sees under its guest root.
 *
 * Usage: fileio DIR      (DIR: a scratch directory, created and removed here)
 * Exercises mkdir/chdir/getcwd, open/write/read/lseek/pread/pwrite/fstat/stat,
 * ftruncate/fsync, dup/dup2/dup3/fcntl, pipe2, rename, readdir (getdents64),
 * readlink, unlink/rmdir, and that "/.." and "../../.." stay inside the root.
 * Output: one "step NAME: ok" line per step, then "all ok". Exit 0, or 1 with
 * "step NAME: FAILED: ..." on stderr.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fwutil.h"

#define CHECK(step, cond)                                                        \
    do {                                                                         \
        if (!(cond))                                                             \
            fail_with(EXIT_RUNTIME_FAILURE, "step %s: FAILED: %s (errno %d: %s)", \
                      step, #cond, errno, strerror(errno));                      \
    } while (0)

static void step_ok(const char *step) { printf("step %s: ok\n", step); }

int main(int argc, char **argv)
{
    char buf[256];
    struct stat st;

    if (argc != 2)
        fail_with(EXIT_USAGE, "usage: fileio DIR");
    const char *dir = argv[1];

    CHECK("mkdir", mkdir(dir, 0755) == 0);
    CHECK("mkdir", chdir(dir) == 0);
    CHECK("mkdir", getcwd(buf, sizeof buf) != NULL);
    CHECK("mkdir", strstr(buf, dir) != NULL);
    step_ok("mkdir");

    int fd = open("data.txt", O_CREAT | O_RDWR | O_TRUNC, 0644);
    CHECK("write", fd >= 0);
    CHECK("write", write(fd, "hello, file\n", 12) == 12);
    CHECK("write", pwrite(fd, "HELLO", 5, 0) == 5);
    CHECK("write", lseek(fd, 0, SEEK_SET) == 0);
    CHECK("write", read(fd, buf, sizeof buf) == 12);
    CHECK("write", memcmp(buf, "HELLO, file\n", 12) == 0);
    CHECK("write", pread(fd, buf, 4, 7) == 4 && memcmp(buf, "file", 4) == 0);
    step_ok("write");

    CHECK("stat", fstat(fd, &st) == 0 && st.st_size == 12 && S_ISREG(st.st_mode));
    CHECK("stat", ftruncate(fd, 5) == 0 && fsync(fd) == 0);
    CHECK("stat", stat("data.txt", &st) == 0 && st.st_size == 5);
    step_ok("stat");

    int fd2 = dup(fd);
    CHECK("dup", fd2 > fd);
    CHECK("dup", dup2(fd, 20) == 20);
    CHECK("dup", dup3(fd, 21, O_CLOEXEC) == 21 && fcntl(21, F_GETFD) == FD_CLOEXEC);
    CHECK("dup", fcntl(fd, F_GETFD) == 0);
    CHECK("dup", close(fd2) == 0 && close(20) == 0 && close(21) == 0);
    CHECK("dup", close(21) == -1 && errno == EBADF);
    CHECK("dup", close(fd) == 0);
    step_ok("dup");

    int pipefd[2];
    CHECK("pipe", pipe2(pipefd, O_CLOEXEC) == 0);
    CHECK("pipe", write(pipefd[1], "ping", 4) == 4);
    CHECK("pipe", read(pipefd[0], buf, 4) == 4 && memcmp(buf, "ping", 4) == 0);
    CHECK("pipe", close(pipefd[0]) == 0 && close(pipefd[1]) == 0);
    step_ok("pipe");

    CHECK("rename", rename("data.txt", "moved.txt") == 0);
    CHECK("rename", access("data.txt", F_OK) == -1 && errno == ENOENT);
    CHECK("rename", symlink("moved.txt", "link") == 0 || errno == ENOSYS);
    step_ok("rename");

    DIR *d = opendir(".");
    CHECK("readdir", d != NULL);
    int seen = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, "moved.txt") == 0)
            seen++;
    closedir(d);
    CHECK("readdir", seen == 1);
    step_ok("readdir");

    /* the guest root's "/" has no parent: "/.." and "../../.." are "/" */
    char root_cwd[256];
    CHECK("escape", chdir("/") == 0 && getcwd(root_cwd, sizeof root_cwd) != NULL);
    CHECK("escape", chdir("/../../..") == 0 && getcwd(buf, sizeof buf) != NULL);
    CHECK("escape", strcmp(buf, "/") == 0);
    CHECK("escape", chdir(dir) == 0 && chdir("../../../..") == 0);
    CHECK("escape", getcwd(buf, sizeof buf) != NULL && strcmp(buf, "/") == 0);
    step_ok("escape");

    CHECK("cleanup", chdir(dir) == 0);
    unlink("link");
    CHECK("cleanup", unlink("moved.txt") == 0);
    CHECK("cleanup", chdir("..") == 0 && rmdir(dir) == 0);
    CHECK("cleanup", stat(dir, &st) == -1 && errno == ENOENT);
    step_ok("cleanup");

    puts("all ok");
    return 0;
}
