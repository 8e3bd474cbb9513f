/*
 * emu.h - guest-side definitions of the emulator's QNX-style extensions.
 *
 * These constants are understood only by the emulator; a stock Linux kernel
 * (or qemu-user) either ignores them or rejects them.
 *
 * ThreadCtl() uses syscall(), which <unistd.h> only declares with
 * _DEFAULT_SOURCE: gcc's default gnu dialects have it, strict -std=c99/c11
 * builds must define it before including any header.
 */
#ifndef EMU_H
#define EMU_H

#include <unistd.h>
#include <sys/syscall.h>

/* mmap flag (QNX value): allocate physical memory at first touch; if that fails, raise SIGBUS.
 * Note: x86-64 Linux >= 6.6 uses the same bit for MAP_ABOVE4G; the emulator claims it anyway. */
#define MAP_LAZY 0x80

/* mmap flag (QNX meaning): changes to a file mapping are never written back to the file.
 * Bit 24 is used by no Linux MAP_* flag on x86-64 or AArch64 (the highest is
 * MAP_FIXED_NOREPLACE 0x100000; bits 26-31 encode huge page sizes). */
#define MAP_NOSYNCFILE 0x1000000

/* Syscall number of ThreadCtl(), far above any real Linux syscall number on either arch. */
#define SYS_ThreadCtl 0x7000

/* ThreadCtl command: request I/O privileges for the calling thread. */
#define _NTO_TCTL_IO 1

/* Issue ThreadCtl(cmd, data); returns the syscall result (-1 with errno set on failure). */
static inline int ThreadCtl(int cmd, void *data)
{
    return (int)syscall(SYS_ThreadCtl, cmd, data);
}

#endif /* EMU_H */
