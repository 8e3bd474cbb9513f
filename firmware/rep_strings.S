/*
 * rep_strings - x86-64 only, freestanding: `rep`-prefixed string instructions with
 * known counts, for comparing how emu and other counters count them
 * (tests/integration/test_instruction_count.py).
 *
 * Usage: rep_strings          (no arguments, no output; exit status 0)
 *
 * Counters disagree about a `rep` string instruction:
 *   - emu (Unicorn's TCG) and valgrind lackey count one per iteration, plus one for the
 *     final check that finds RCX == 0: `rep movsb` with RCX = n counts n + 1 (1 for
 *     n = 0). A `repe`/`repne` that stops on its condition after k iterations counts k.
 *   - qemu-user with -singlestep counts n (the last iteration exits at once);
 *   - the hardware (perf stat -e instructions:u) counts a rep string instruction as one.
 * With emu's (and valgrind's) rule, this program runs
 *   23 plain instructions (everything but the 9 rep instructions)
 *   + rep movsb   n = 0, 1, 7, 300:  1 + 2 + 8 + 301 = 312
 *   + rep stosq   n = 50:            51
 *   + repe cmpsb  64 equal bytes:    65
 *   + repe cmpsb  first difference at byte 9 of 64:  10
 *   + repne scasb for the NUL of "hello" (RCX = 64):  6
 *   + rep stosb   n = 4096:          4097
 *   = 23 + 312 + 51 + 65 + 10 + 6 + 4097 = 4564 instructions.
 */
#if !defined(__x86_64__)
#error "rep_strings is x86-64 only"
#endif

        .text
        .globl  _start
        .type   _start, @function
_start:
        cld                                     /* 1 */
        lea     src(%rip), %rsi                 /* 2 */
        lea     dst(%rip), %rdi                 /* 3 */
        xor     %ecx, %ecx                      /* 4 */
        rep movsb                               /* n = 0: 1 */
        mov     $1, %ecx                        /* 5 */
        rep movsb                               /* n = 1: 2 */
        mov     $7, %ecx                        /* 6 */
        rep movsb                               /* n = 7: 8 */
        mov     $300, %ecx                      /* 7 */
        rep movsb                               /* n = 300: 301 */

        mov     $50, %ecx                       /* 8 */
        mov     $0x0123456789abcdef, %rax       /* 9 */
        rep stosq                               /* n = 50: 51 */

        lea     src(%rip), %rsi                 /* 10 */
        lea     src(%rip), %rdi                 /* 11 */
        mov     $64, %ecx                       /* 12 */
        repe cmpsb                              /* equal: 65 */

        lea     src(%rip), %rsi                 /* 13 */
        lea     other(%rip), %rdi               /* 14 */
        mov     $64, %ecx                       /* 15 */
        repe cmpsb                              /* differs at byte 9: 10 */

        lea     hello(%rip), %rdi               /* 16 */
        xor     %eax, %eax                      /* 17 */
        mov     $64, %ecx                       /* 18 */
        repne scasb                             /* NUL at index 5: 6 */

        lea     big(%rip), %rdi                 /* 19 */
        mov     $4096, %ecx                     /* 20 */
        rep stosb                               /* n = 4096: 4097 */

        mov     $231, %eax                      /* 21 exit_group */
        xor     %edi, %edi                      /* 22 */
        syscall                                 /* 23 */
        .size   _start, . - _start

        .section .note.GNU-stack, "", @progbits

        .data
        .p2align 6
src:
        .fill   64, 1, 0x5a
other:
        .fill   9, 1, 0x5a
        .fill   55, 1, 0xa5
hello:
        .asciz  "hello"

        .bss
        .p2align 12
dst:
        .skip   4096
big:
        .skip   4096
