/* The emulator's hot paths in C: page-table storage and walk (TLB fill), per-block
 * instruction/cycle accounting, stop points (deadline, instruction budget, breakpoints),
 * system-call capture, ranged TLB invalidation and code invalidation by frame.
 *
 * Unicorn's entry points are never linked: Python hands us their addresses from the
 * libunicorn it loaded (fp_attach), so this module survives pip's build isolation and
 * any install location.
 *
 * Invariants (the page tables' own are in pagetable.c):
 *  - the fill hook never changes a page table: a miss only records the fault;
 *  - a block is charged when it is about to execute, never when a stop point keeps it
 *    from executing (a stop requested in the block hook exits before the block's first
 *    instruction: Unicorn emits the hook ahead of the TB's exit-request check);
 *  - a block's cost is computed once (by Python, with capstone) per (physical address,
 *    size) and cached until the frame is invalidated;
 *  - last_block points at a copy of the executing block's cost, valid until the next
 *    block starts (a recent-cache slot is only rewritten on entry). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdbool.h>
#include <sys/time.h>
#include <sys/mman.h>
#include <unistd.h>
#include <dlfcn.h>
#include "fastpath.h"

/* indices of fp_state.fn: Unicorn's entry points */
enum { FN_HOOK_ADD, FN_EMU_START, FN_EMU_STOP, FN_REG_READ, FN_REG_WRITE, FN_REG_READ_BATCH,
       FN_TLB_FLUSH_ALL, FN_TLB_FLUSH_PAGE, FN_TB_INVALIDATE, FN_COUNT };

typedef int (*uc_hook_add_fn)(void *uc, size_t *hh, int type, void *cb,
                              void *user_data, uint64_t begin, uint64_t end, ...);
typedef int (*uc_emu_start_fn)(void *uc, uint64_t begin, uint64_t until, uint64_t timeout,
                               size_t count);
typedef int (*uc_emu_stop_fn)(void *uc);
typedef int (*uc_reg_read_fn)(void *uc, int regid, void *value);
typedef int (*uc_reg_write_fn)(void *uc, int regid, const void *value);
typedef int (*uc_reg_read_batch_fn)(void *uc, int const *regs, void **vals, int count);
typedef void (*tlb_flush_all_fn)(void *uc);                     /* tcg_flush_softmmu_tlb */
typedef void (*tlb_flush_page_fn)(void *cpu, uint64_t vaddr);   /* tlb_flush_page */
typedef void (*tb_invalidate_fn)(void *uc, uint64_t start, uint64_t end);

#define CALL(st, type, idx) ((type)(st)->fn[idx])

#include "pagetable.c"
#include "tlbmodel.c"

/* ---- block cost cache (per engine): key = (paddr, size) ----
 * A direct-mapped array of recent blocks (by virtual pc, reset when the address space
 * changes) answers almost every lookup with one compare; behind it an open-addressing
 * table keeps every block seen, by physical address. */

static fp_block *block_slot(fp_state *st, uint64_t paddr, uint32_t size) {
    fp_block *slots = st->blocks;
    uint64_t mask = st->blocks_cap - 1, i = hash64(paddr ^ ((uint64_t)size << 48)) & mask;
    while (slots[i].size && !(slots[i].paddr == paddr && slots[i].size == size))
        i = (i + 1) & mask;
    return &slots[i];
}

static int blocks_rehash(fp_state *st, uint64_t newcap) {
    uint64_t oldcap = st->blocks_cap;
    fp_block *old = st->blocks, *fresh = calloc(newcap, sizeof(fp_block));
    if (!fresh) return -1;
    st->blocks = fresh;
    st->blocks_cap = newcap;
    st->blocks_count = 0;
    for (uint64_t j = 0; j < oldcap; j++)
        if (old[j].size) { *block_slot(st, old[j].paddr, old[j].size) = old[j]; st->blocks_count++; }
    free(old);
    return 0;
}

static int blocks_reserve(fp_state *st) {
    if (st->blocks && (st->blocks_count + 1) * 2 <= st->blocks_cap) return 0;
    return blocks_rehash(st, st->blocks_cap ? st->blocks_cap * 2 : 4096);
}

static inline fp_block *recent_slot(fp_state *st, uint64_t pc) {
    return &st->recent[(pc ^ (pc >> 10)) & (FP_RECENT_BLOCKS - 1)];
}

/* Forget the recent-block cache (the address space changed, or code was invalidated). */
void fp_recent_clear(fp_state *st) {
    memset(st->recent, 0, sizeof st->recent);
    st->last_block = NULL;
}

/* Forget every cached block cost. */
void fp_blocks_clear(fp_state *st) {
    if (st->blocks) memset(st->blocks, 0, st->blocks_cap * sizeof(fp_block));
    st->blocks_count = 0;
    fp_recent_clear(st);
}

/* Forget the cached costs of blocks that start in [paddr_lo, paddr_hi); returns how many. */
uint64_t fp_blocks_forget(fp_state *st, uint64_t paddr_lo, uint64_t paddr_hi) {
    uint64_t n = 0;
    for (uint64_t j = 0; j < st->blocks_cap; j++)
        if (st->blocks[j].size && st->blocks[j].paddr >= paddr_lo && st->blocks[j].paddr < paddr_hi) {
            st->blocks[j].size = 0; n++;
        }
    if (n) { st->blocks_count -= n; blocks_rehash(st, st->blocks_cap); }
    fp_recent_clear(st);
    return n;
}

static fp_state *clock_state;

/* Free the engine-private memory of a state (before the state itself). */
void fp_state_release(fp_state *st) {
    free(st->blocks);
    st->blocks = NULL; st->blocks_cap = st->blocks_count = 0;
    if (clock_state == st) clock_state = NULL;
}

/* No engine's clock is Unicorn's now (a new engine is being created: its TLB starts at 0). */
void fp_clock_reset(void) { clock_state = NULL; }

/* ---- Python callbacks (emu/cpu/fastpath.py) ---- */

/* Cost a block seen for the first time. */
static int fp_cost_block(void *handle, uint64_t pc, uint64_t paddr, uint32_t size,
                         uint32_t *icount, uint32_t *cycles);
/* A system call marked inline_ok: 1 = handled (*result is the return value), 0 = the
 * CPU must stop for it, -1 = the callback failed. */
static int fp_syscall(void *handle, int64_t *result);
/* A refused fill, offered to the kernel before the CPU stops (inline_faults): 0 = stop,
 * 1 = the fault was completed and the access may be retried, 2 = completed, but stop
 * here now (stop_reason is set). */
static int fp_fault(void *handle, uint64_t vaddr, int access);

/* ---- the simulated clock, as Unicorn sees it ----
 * QEMU resizes its softmmu TLB on every full flush from the host's wall clock (100 ms
 * windows, accel/tcg/cputlb.c), which makes the number of TLB fills depend on host
 * speed. libunicorn's gettimeofday() is pointed at this function instead, so that the
 * TLB's geometry is a function of the simulated clock of the engine running. */

static int fp_gettimeofday(struct timeval *tv, void *tz) {
    (void)tz;
    uint64_t ns = 0;
    if (clock_state && clock_state->frequency_hz)
        ns = (uint64_t)((__uint128_t)clock_state->cycles * 1000000000u / clock_state->frequency_hz);
    if (tv) { tv->tv_sec = (time_t)(ns / 1000000000u); tv->tv_usec = (suseconds_t)(ns % 1000000000u / 1000u); }
    return 0;
}

/* Point the GOT slot at `slot` (libunicorn's gettimeofday) at fp_gettimeofday; 0 or -1. */
int fp_patch_clock(void *slot) {
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t base = (uintptr_t)slot & ~(uintptr_t)(page - 1);
    size_t span = (uintptr_t)slot + sizeof(void *) - base > (uintptr_t)page ? 2 * (size_t)page
                                                                               : (size_t)page;
    if (mprotect((void *)base, span, PROT_READ | PROT_WRITE) != 0) return -1;
    *(void **)slot = (void *)fp_gettimeofday;
    return 0;
}

/* The load address of the shared object that contains `symbol` (0 if unknown). */
uint64_t fp_object_base(void *symbol) {
    Dl_info info;
    if (!dladdr(symbol, &info)) return 0;
    return (uint64_t)(uintptr_t)info.dli_fbase;
}

/* ---- hooks ---- */

#define UC_HOOK_INTR_ 1
#define UC_HOOK_INSN_ 2
#define UC_HOOK_BLOCK_ 8
#define UC_HOOK_TLB_FILL_ 131072

typedef struct { uint64_t paddr; uint32_t perms; } uc_tlb_entry_;

static inline void request_stop(fp_state *st, void *uc, int reason) {
    if (st->stop_reason == FP_STOP_NONE) st->stop_reason = reason;
    CALL(st, uc_emu_stop_fn, FN_EMU_STOP)(uc);
}

static inline int access_perm(int access) {
    return access == FP_ACCESS_WRITE ? FP_PTE_WRITE
         : access == FP_ACCESS_FETCH ? FP_PTE_EXEC : FP_PTE_READ;
}

static inline bool fill_from_pte(fp_state *st, uint64_t vaddr, int access, uc_tlb_entry_ *entry) {
    pt_walk_t w;
    if (!st->pt) return false;
    int found = pt_walk(st->pt, vaddr, &w);
    if (!found || !(w.perms & access_perm(access))) return false;
    mark_used(st->pt, w.leaf, access == FP_ACCESS_WRITE);
    entry->paddr = w.paddr | (vaddr & 0xFFF);
    /* Unicorn's TLB entry serves every access kind: a clean page's entry grants no write,
     * so that its first write comes back here and sets the dirty bit, as the hardware's
     * dirty-bit assist does */
    entry->perms = leaf_dirty(st->pt, *w.leaf) ? w.perms : w.perms & ~(uint32_t)FP_PTE_WRITE;
    st->tlb_fills++;
    if (st->tlbm) {                         /* detailed mode: the model charges walks */
        tlbm_filled(st->tlbm, vaddr & ~0xFFFULL, w.paddr);
        return true;
    }
    uint64_t cost = st->tlb_fill_cost;
    for (uint32_t l = 0; l < w.levels; l++) cost += st->walk_level_cycles[l];
    st->walks++;
    st->walk_cycles += cost;
    st->walks_by_levels[w.levels - 1]++;
    st->fills_by_size[w.shift == 12 ? 0 : w.shift == 16 ? 1 : 2]++;
    st->cycles += cost;
    return true;
}

static bool tlb_fill_hook(void *uc, uint64_t vaddr, int access, uc_tlb_entry_ *entry, void *user) {
    fp_state *st = user;
    if (fill_from_pte(st, vaddr, access, entry)) return true;
    st->tlb_misses++;
    st->fault_vaddr = vaddr;
    st->fault_access = access;
    if (st->inline_faults) {
        /* Unicorn restored the precise guest PC before calling us: the faulting instruction */
        CALL(st, uc_reg_read_fn, FN_REG_READ)(uc, st->pc_reg, &st->stop_pc);
        int done = fp_fault(st->py_handle, vaddr, access);
        if (done == 1 && fill_from_pte(st, vaddr, access, entry)) return true;
        if (done == 2) return false;        /* stop_reason set by the kernel */
    }
    if (st->stop_reason == FP_STOP_NONE) st->stop_reason = FP_STOP_FAULT;
    return false;
}

/* First execution of a block since the recent cache lost it: find or cost it. */
__attribute__((noinline)) static fp_block *block_miss(fp_state *st, uint64_t pc, uint32_t size) {
    fp_block *recent = recent_slot(st, pc);
    uint64_t page = pt_peek(st->pt, pc);
    /* a block that runs has a translation; without one (never expected) key it by pc */
    uint64_t paddr = page != UINT64_MAX ? page | (pc & 0xFFF) : pc | (1ULL << 63);
    fp_block *b = st->blocks ? block_slot(st, paddr, size) : NULL;
    if (!b || !b->size) {
        uint32_t icount = 0, cycles = 0;
        if (fp_cost_block(st->py_handle, pc, paddr, size, &icount, &cycles) != 0)
            request_stop(st, st->uc, FP_STOP_CALLBACK);
        st->block_misses++;
        if (blocks_reserve(st) == 0) {
            b = block_slot(st, paddr, size);
            b->paddr = paddr; b->size = size; b->icount = icount; b->cycles = cycles;
            st->blocks_count++;
        } else {            /* out of memory: cost it again next time */
            b = recent;
            b->paddr = paddr; b->size = size; b->icount = icount; b->cycles = cycles;
        }
    }
    if (b != recent) *recent = *b;
    recent->pc = pc;
    return recent;
}

/* softfloat's exception flags as x86 reports them: invalid, divide-by-zero, overflow,
 * underflow and inexact have the x86 bit positions; a denormal input flushed to zero (DAZ)
 * is DE, a tiny result flushed to zero (FZ) is underflow and inexact */
static inline uint16_t x86_flags(uint8_t f) {
    return (uint16_t)((f & 0x3D) | (f & 0x40 ? 0x02 : 0) | (f & 0x80 ? 0x30 : 0));
}

/* Move the flags softfloat accrued since the last call into MXCSR and the x87 status word,
 * where stmxcsr, fnstsw, fxsave and a signal frame read them; an unmasked x87 exception
 * sets ES and B, so that the next fwait raises #MF. */
static inline void fpu_merge(fp_state *st) {
    uint8_t f = *st->fpu_sse_flags;
    if (__builtin_expect(f != 0, 0)) { *st->fpu_mxcsr |= x86_flags(f); *st->fpu_sse_flags = 0; }
    f = *st->fpu_x87_flags;
    if (__builtin_expect(f != 0, 0)) {
        uint16_t fsw = *st->fpu_fsw | x86_flags(f);
        if (fsw & ~*st->fpu_fcw & 0x3F) fsw |= 0x8080;
        *st->fpu_fsw = fsw;
        *st->fpu_x87_flags = 0;
    }
}

/* Bring MXCSR and the x87 status word up to date (before Python reads or saves them). */
void fp_fpu_sync(fp_state *st) {
    if (st->fpu_mxcsr) fpu_merge(st);
}

/* Assert every stuck-at value whose time has not run out (before a block runs). */
static void assert_stuck(fp_state *st, void *uc) {
    for (uint32_t i = 0; i < st->n_stuck; i++) {
        fp_stuck *k = &st->stuck[i];
        if (st->cycles >= k->until) continue;
        uint64_t v = 0;
        if (k->reg >= 0) {
            CALL(st, uc_reg_read_fn, FN_REG_READ)(uc, k->reg, &v);
            uint64_t w = (v & k->and_mask) | k->or_mask;
            if (w != v) CALL(st, uc_reg_write_fn, FN_REG_WRITE)(uc, k->reg, &w);
        } else if (st->ram) {
            uint64_t paddr = k->paddr;
            if (k->pt) {
                uint64_t page = pt_peek(k->pt, k->vaddr);
                if (page == UINT64_MAX) continue;           /* no page there (yet) */
                paddr = page + (k->vaddr & 0xFFF);
            }
            if (paddr + k->width > st->ram_size) continue;
            memcpy(&v, st->ram + paddr, k->width);
            v = (v & k->and_mask) | k->or_mask;
            memcpy(st->ram + paddr, &v, k->width);
        }
    }
}

static void block_hook(void *uc, uint64_t pc, uint32_t size, void *user) {
    fp_state *st = user;
    if (st->fpu_mxcsr) fpu_merge(st);
    if (__builtin_expect(st->cycles >= st->cycle_stop, 0)) {
        st->stop_pc = pc; request_stop(st, uc, FP_STOP_DEADLINE); return;
    }
    if (__builtin_expect(st->instructions >= st->insn_stop, 0)) {
        st->stop_pc = pc; request_stop(st, uc, FP_STOP_INSN_LIMIT); return;
    }
    fp_block *b = recent_slot(st, pc);
    if (__builtin_expect(b->pc != pc || b->size != size, 0)) b = block_miss(st, pc, size);
    if (__builtin_expect(st->n_breakpoints != 0, 0)) {
        /* the first breakpoint at or after pc (they are sorted) */
        uint32_t lo = 0, hi = st->n_breakpoints;
        while (lo < hi) {
            uint32_t mid = (lo + hi) / 2;
            if (st->breakpoints[mid] < pc) lo = mid + 1; else hi = mid;
        }
        if (lo < st->n_breakpoints && st->breakpoints[lo] == pc && pc != st->resume_pc) {
            st->stop_pc = pc; request_stop(st, uc, FP_STOP_BREAKPOINT); return;
        }
        if (lo < st->n_breakpoints && st->breakpoints[lo] == pc) lo++;
        if (lo < st->n_breakpoints && st->breakpoints[lo] < pc + size) {
            st->stop_pc = pc; st->precise_pc = st->breakpoints[lo]; st->stop_block_size = size;
            request_stop(st, uc, FP_STOP_PRECISE);
            return;
        }
    }
    if (__builtin_expect(st->n_stuck != 0, 0)) assert_stuck(st, uc);
    if (__builtin_expect(st->instructions + b->icount > st->insn_stop, 0)) {
        st->stop_pc = pc; st->precise_pc = 0;       /* Python finds the instruction */
        st->stop_block_size = size;
        request_stop(st, uc, FP_STOP_PRECISE);
        return;
    }
    st->resume_pc = UINT64_MAX;     /* a step over a breakpoint covers one block */
    st->last_block = b;
    st->instructions += b->icount;
    st->cycles += b->cycles;
    if (st->tlbm) tlbm_fetch_block(st, pc, size, b->icount);
}

/* A system call: capture its number and arguments, count and charge it; calls marked
 * inline_ok are handled by Python right here and the CPU goes on. */
static void syscall_entry(void *uc, fp_state *st) {
    uint64_t vals[7];
    void *ptrs[7];
    for (int i = 0; i < 7; i++) ptrs[i] = &vals[i];
    CALL(st, uc_reg_read_batch_fn, FN_REG_READ_BATCH)(uc, st->sc_regs, ptrs, 7);
    st->sc_nr = vals[0];
    memcpy(st->sc_args, vals + 1, sizeof st->sc_args);
    st->cycles += st->syscall_cost;
    if (vals[0] < FP_MAX_SYSCALL) {
        st->sc_counts[vals[0]]++;
        if (st->inline_ok[vals[0]]) {
            int64_t result = 0;
            int done = fp_syscall(st->py_handle, &result);
            if (done == 1) {
                uint64_t value = (uint64_t)result;
                CALL(st, uc_reg_write_fn, FN_REG_WRITE)(uc, st->sc_ret_reg, &value);
                return;
            }
            if (done < 0) { request_stop(st, uc, FP_STOP_CALLBACK); return; }
        }
    }
    request_stop(st, uc, FP_STOP_SYSCALL);
}

static void syscall_insn_hook(void *uc, void *user) { syscall_entry(uc, user); }

static void interrupt_hook(void *uc, uint32_t intno, void *user) {
    fp_state *st = user;
    if ((int)intno == st->sc_intno) { syscall_entry(uc, st); return; }
    st->intno = intno;
    request_stop(st, uc, FP_STOP_EXCEPTION);
}

/* Install the hooks on an engine and remember its entry points (fns: FN_COUNT addresses;
 * the TLB and TB entries may be NULL). syscall_insn: the x86 UC_X86_INS_SYSCALL id, or 0.
 * Returns uc_err (0 = OK). */
int fp_attach(fp_state *st, void *uc, void **fns, void *py_handle, int syscall_insn) {
    memcpy(st->fn, fns, sizeof(void *) * FN_COUNT);
    st->uc = uc;
    st->py_handle = py_handle;
    st->resume_pc = UINT64_MAX;
    uc_hook_add_fn add = CALL(st, uc_hook_add_fn, FN_HOOK_ADD);
    size_t hh;
    int err = add(uc, &hh, UC_HOOK_TLB_FILL_, (void *)tlb_fill_hook, st, (uint64_t)1, (uint64_t)0);
    if (!err) err = add(uc, &hh, UC_HOOK_BLOCK_, (void *)block_hook, st, (uint64_t)1, (uint64_t)0);
    if (!err) err = add(uc, &hh, UC_HOOK_INTR_, (void *)interrupt_hook, st, (uint64_t)1, (uint64_t)0);
    if (!err && syscall_insn)
        err = add(uc, &hh, UC_HOOK_INSN_, (void *)syscall_insn_hook, st, (uint64_t)1, (uint64_t)0,
                  syscall_insn);
    return err;
}

/* The CPUState of an engine, found through the one uc_struct field we know the value of
 * (tcg_flush_tlb, a pointer to tcg_flush_softmmu_tlb) and checked by the CPUState's
 * back-pointer to the engine; NULL if the layout is not the expected one. Layout of
 * Unicorn 2.1.4's struct uc_struct: `cpu` is 9 pointers after `tcg_flush_tlb`. */
void *fp_find_cpu(void *uc, void *tcg_flush_tlb) {
    uint64_t *words = uc;
    for (int i = 0; i < 256; i++) {
        if (words[i] != (uint64_t)(uintptr_t)tcg_flush_tlb) continue;
        uint64_t *cpu = (uint64_t *)(uintptr_t)words[i + 9];
        if (!cpu) return NULL;
        for (int j = 0; j < 65536; j++)
            if (cpu[j] == (uint64_t)(uintptr_t)uc) return cpu;
        return NULL;
    }
    return NULL;
}

/* Run guest code from `begin` until a hook stops it or `until` is reached; records the PC
 * in stop_pc and returns uc_err. */
int fp_run(fp_state *st, uint64_t begin, uint64_t until) {
    clock_state = st;
    st->stop_reason = FP_STOP_NONE;
    int err = CALL(st, uc_emu_start_fn, FN_EMU_START)(st->uc, begin, until, 0, 0);
    if (st->fpu_mxcsr) fpu_merge(st);
    CALL(st, uc_reg_read_fn, FN_REG_READ)(st->uc, st->pc_reg, &st->stop_pc);
    return err;
}

/* Drop every translation cached in Unicorn's TLB. */
void fp_tlb_flush(fp_state *st) {
    clock_state = st;
    CALL(st, tlb_flush_all_fn, FN_TLB_FLUSH_ALL)(st->uc);
    st->tlb_flushes++;
}

/* Drop the cached translations of the virtual pages in [start, end): page by page up to
 * FP_FLUSH_CEILING pages (when the CPUState is known), else everything. */
void fp_tlb_flush_range(fp_state *st, uint64_t start, uint64_t end) {
    if (end <= start) return;
    fp_tlbm_invalidate(st, st->pt, start, end);
    uint64_t pages = ((end - start - 1) >> 12) + 1;       /* no overflow up to UINT64_MAX */
    if (!st->cpu || !st->fn[FN_TLB_FLUSH_PAGE] || pages > FP_FLUSH_CEILING) {
        fp_tlb_flush(st);
        return;
    }
    clock_state = st;
    for (uint64_t va = start & ~0xFFFULL; va < end; va += 0x1000) {
        CALL(st, tlb_flush_page_fn, FN_TLB_FLUSH_PAGE)(st->cpu, va);
        st->tlb_page_flushes++;
    }
}

/* Drop the translated code and the block costs of the physical frames [first, first+n):
 * their contents are about to change (freed for reuse, or written by the kernel). */
void fp_code_invalidate(fp_state *st, uint64_t first_frame, uint64_t n) {
    uint64_t lo = first_frame << 12, hi = (first_frame + n) << 12;
    clock_state = st;
    if (st->fn[FN_TB_INVALIDATE]) CALL(st, tb_invalidate_fn, FN_TB_INVALIDATE)(st->uc, lo, hi);
    fp_blocks_forget(st, lo, hi);
}

/* Drop the translated code of [paddr_lo, paddr_hi) only (the code is unchanged: its block
 * costs stay), so that it is translated again, for instance with a stop point inside. */
void fp_tb_invalidate(fp_state *st, uint64_t paddr_lo, uint64_t paddr_hi) {
    clock_state = st;
    if (st->fn[FN_TB_INVALIDATE]) CALL(st, tb_invalidate_fn, FN_TB_INVALIDATE)(st->uc, paddr_lo, paddr_hi);
}

/* The physical address `vaddr` translates to in the running space, or UINT64_MAX. */
uint64_t fp_translate(fp_state *st, uint64_t vaddr) {
    uint64_t page = pt_peek(st->pt, vaddr);
    return page == UINT64_MAX ? UINT64_MAX : page | (vaddr & 0xFFF);
}

/* Switch the fill hook to another address space's table (NULL: none). */
void fp_set_page_table(fp_state *st, fp_pagetable *pt) {
    st->pt = pt;
    fp_recent_clear(st);
}
