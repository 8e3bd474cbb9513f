/* The emulator's hot paths in C: page-table storage and walk (TLB fill),
 * per-block instruction/cycle accounting and stop deadlines.
 *
 * Unicorn's entry points are never linked: Python hands us the addresses of
 * uc_hook_add and uc_emu_stop from the libunicorn it loaded (fp_attach), so
 * this module survives pip's build isolation and any install location.
 *
 * Invariants:
 *  - a page table maps a virtual page number to at most one PTE;
 *  - the fill hook never changes a page table: a miss only records the fault;
 *  - a block's cost is computed once (by Python, with capstone) and cached
 *    until fp_blocks_clear;
 *  - last_block points at a copy of the executing block's cost, valid until
 *    the next block starts (a recent-cache slot is only rewritten on entry). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdbool.h>
#include "fastpath.h"

/* ---- page tables: open addressing, linear probing, key = vpn + 1 ---- */

struct fp_pagetable {
    uint64_t *keys;   /* 0 = empty slot */
    uint64_t *ptes;
    uint64_t cap;     /* power of two */
    uint64_t count;
};

static inline uint64_t hash64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33;
    return x;
}

fp_pagetable *fp_pt_new(void) {
    fp_pagetable *pt = calloc(1, sizeof *pt);
    if (!pt) return NULL;
    pt->cap = 1024;
    pt->keys = calloc(pt->cap, sizeof(uint64_t));
    pt->ptes = calloc(pt->cap, sizeof(uint64_t));
    if (!pt->keys || !pt->ptes) { free(pt->keys); free(pt->ptes); free(pt); return NULL; }
    return pt;
}

void fp_pt_free(fp_pagetable *pt) {
    if (!pt) return;
    free(pt->keys); free(pt->ptes); free(pt);
}

static inline uint64_t pt_slot(const fp_pagetable *pt, uint64_t key) {
    uint64_t mask = pt->cap - 1, i = hash64(key) & mask;
    while (pt->keys[i] && pt->keys[i] != key) i = (i + 1) & mask;
    return i;
}

static inline uint64_t pt_get_key(const fp_pagetable *pt, uint64_t key) {
    uint64_t i = pt_slot(pt, key);
    return pt->keys[i] ? pt->ptes[i] : 0;
}

/* Key of the large page of size 1 << shift that contains virtual page `vpn` (small
 * pages use vpn + 1, far below bit 60). */
static inline uint64_t large_key(uint64_t vpn, unsigned shift) {
    return (1ULL << 60) | ((uint64_t)shift << 52) | (vpn >> (shift - 12));
}

uint64_t fp_pt_get(const fp_pagetable *pt, uint64_t vpn) { return pt_get_key(pt, vpn + 1); }

static int pt_grow(fp_pagetable *pt) {
    uint64_t oldcap = pt->cap, *ok = pt->keys, *op = pt->ptes;
    uint64_t *nk = calloc(oldcap * 2, sizeof(uint64_t));
    uint64_t *np = calloc(oldcap * 2, sizeof(uint64_t));
    if (!nk || !np) { free(nk); free(np); return -1; }
    pt->keys = nk; pt->ptes = np; pt->cap = oldcap * 2;
    for (uint64_t j = 0; j < oldcap; j++)
        if (ok[j]) { uint64_t i = pt_slot(pt, ok[j]); pt->keys[i] = ok[j]; pt->ptes[i] = op[j]; }
    free(ok); free(op);
    return 0;
}

/* Set the PTE of a virtual page (pte != 0). Returns 0, or -1 out of memory. */
static int pt_set_key(fp_pagetable *pt, uint64_t key, uint64_t pte) {
    if ((pt->count + 1) * 4 > pt->cap * 3 && pt_grow(pt)) return -1;
    uint64_t i = pt_slot(pt, key);
    if (!pt->keys[i]) { pt->keys[i] = key; pt->count++; }
    pt->ptes[i] = pte;
    return 0;
}

int fp_pt_set(fp_pagetable *pt, uint64_t vpn, uint64_t pte) { return pt_set_key(pt, vpn + 1, pte); }

static uint64_t pt_clear_key(fp_pagetable *pt, uint64_t key);

/* Remove a virtual page's PTE; returns the old PTE (0 if none). */
uint64_t fp_pt_clear(fp_pagetable *pt, uint64_t vpn) { return pt_clear_key(pt, vpn + 1); }

/* The large-page entry (page size 1 << shift) covering `vpn`, 0 if none. */
uint64_t fp_pt_get_large(const fp_pagetable *pt, uint64_t vpn, unsigned shift) {
    return pt_get_key(pt, large_key(vpn, shift));
}

/* Install the large-page entry covering `vpn`; 0, or -1 out of memory. */
int fp_pt_set_large(fp_pagetable *pt, uint64_t vpn, unsigned shift, uint64_t pte) {
    return pt_set_key(pt, large_key(vpn, shift), pte);
}

/* Remove the large-page entry covering `vpn`; returns it (0 if none). */
uint64_t fp_pt_clear_large(fp_pagetable *pt, uint64_t vpn, unsigned shift) {
    return pt_clear_key(pt, large_key(vpn, shift));
}

static uint64_t pt_clear_key(fp_pagetable *pt, uint64_t key) {
    uint64_t mask = pt->cap - 1, i = pt_slot(pt, key);
    if (!pt->keys[i]) return 0;
    uint64_t old = pt->ptes[i];
    pt->keys[i] = 0; pt->ptes[i] = 0; pt->count--;
    /* backward-shift the rest of the cluster so probing stays correct */
    for (uint64_t j = (i + 1) & mask; pt->keys[j]; j = (j + 1) & mask) {
        uint64_t k = pt->keys[j], p = pt->ptes[j];
        pt->keys[j] = 0; pt->ptes[j] = 0;
        uint64_t s = pt_slot(pt, k);
        pt->keys[s] = k; pt->ptes[s] = p;
    }
    return old;
}

uint64_t fp_pt_count(const fp_pagetable *pt) { return pt->count; }

/* Copy up to max (vpn, pte) pairs with lo <= vpn < hi into out; returns how many. */
uint64_t fp_pt_range(const fp_pagetable *pt, uint64_t lo, uint64_t hi,
                     uint64_t *out, uint64_t max) {
    uint64_t n = 0;
    for (uint64_t j = 0; j < pt->cap && n < max; j++) {
        uint64_t k = pt->keys[j];
        if (k && !(k >> 60) && k - 1 >= lo && k - 1 < hi) {   /* small pages only */ out[2 * n] = k - 1; out[2 * n + 1] = pt->ptes[j]; n++; }
    }
    return n;
}

/* ---- block cost cache (per engine): key = (pc, size) ----
 * A direct-mapped array of recent blocks answers almost every lookup with one
 * compare; behind it an open-addressing table keeps every block seen. */

static fp_block *block_slot(fp_state *st, uint64_t pc, uint32_t size) {
    fp_block *slots = st->blocks;
    uint64_t mask = st->blocks_cap - 1, i = hash64(pc ^ ((uint64_t)size << 48)) & mask;
    while (slots[i].size && !(slots[i].pc == pc && slots[i].size == size)) i = (i + 1) & mask;
    return &slots[i];
}

static int blocks_reserve(fp_state *st) {
    if (st->blocks && (st->blocks_count + 1) * 2 <= st->blocks_cap) return 0;
    uint64_t oldcap = st->blocks_cap;
    fp_block *old = st->blocks, *fresh = calloc(oldcap ? oldcap * 2 : 4096, sizeof(fp_block));
    if (!fresh) return -1;
    st->blocks = fresh;
    st->blocks_cap = oldcap ? oldcap * 2 : 4096;
    for (uint64_t j = 0; j < oldcap; j++)
        if (old[j].size) *block_slot(st, old[j].pc, old[j].size) = old[j];
    free(old);
    return 0;
}

static inline fp_block *recent_slot(fp_state *st, uint64_t pc) {
    return &st->recent[(pc ^ (pc >> 10)) & (FP_RECENT_BLOCKS - 1)];
}

/* Forget every cached block cost (code changed or was unmapped). */
void fp_blocks_clear(fp_state *st) {
    if (st->blocks) memset(st->blocks, 0, st->blocks_cap * sizeof(fp_block));
    memset(st->recent, 0, sizeof st->recent);
    st->blocks_count = 0;
    st->last_block = NULL;
}

/* Free the engine-private memory of a state (before the state itself). */
void fp_state_release(fp_state *st) {
    free(st->blocks);
    st->blocks = NULL; st->blocks_cap = st->blocks_count = 0;
}

/* ---- hooks ---- */

typedef int (*uc_hook_add_fn)(void *uc, size_t *hh, int type, void *cb,
                              void *user_data, uint64_t begin, uint64_t end, ...);
typedef int (*uc_emu_stop_fn)(void *uc);

/* Implemented in Python (emu/cpu/fastpath.py): cost a block seen for the first time. */
static int fp_cost_block(void *handle, uint64_t pc, uint32_t size, uint32_t *icount, uint32_t *cycles);
/* Implemented in Python: complete a fault without leaving the CPU when the kernel can prove
 * that no other guest thread would run meanwhile; returns 1 when the page is now mapped. */
static int fp_fault(void *handle, uint64_t vaddr, int access);

#define UC_HOOK_BLOCK_ 8
#define UC_HOOK_TLB_FILL_ 131072

typedef struct { uint64_t paddr; uint32_t perms; } uc_tlb_entry_;

static inline int access_perm(int access) {
    return access == FP_ACCESS_WRITE ? FP_PTE_WRITE
         : access == FP_ACCESS_FETCH ? FP_PTE_EXEC : FP_PTE_READ;
}

static inline bool fill_from_pte(fp_state *st, uint64_t vaddr, int access, uc_tlb_entry_ *entry) {
    if (!st->pt) return false;
    uint64_t vpn = vaddr >> 12, pte = pt_get_key(st->pt, vpn + 1), offset = 0;
    for (int k = 0; !(pte & FP_PTE_VALID) && k < 2 && st->large_shift[k]; k++) {
        unsigned shift = st->large_shift[k];
        pte = pt_get_key(st->pt, large_key(vpn, shift));
        offset = vaddr & ((1ULL << shift) - 1) & ~0xFFFULL;   /* page within the large page */
    }
    if (!(pte & FP_PTE_VALID) || !(pte & access_perm(access))) return false;
    entry->paddr = ((pte & FP_PTE_ADDR_MASK) + offset) | (vaddr & 0xFFF);
    entry->perms = (uint32_t)(pte & (FP_PTE_READ | FP_PTE_WRITE | FP_PTE_EXEC));
    st->tlb_fills++;
    st->cycles += st->tlb_fill_cost;
    return true;
}

static bool tlb_fill_hook(void *uc, uint64_t vaddr, int access,
                          uc_tlb_entry_ *entry, void *user) {
    fp_state *st = user;
    (void)uc;
    if (fill_from_pte(st, vaddr, access, entry)) return true;
    if (st->inline_faults && fp_fault(st->cost_handle, vaddr, access)
            && fill_from_pte(st, vaddr, access, entry))
        return true;
    st->tlb_misses++;
    st->fault_vaddr = vaddr;
    st->fault_access = access;
    st->stop_reason = FP_STOP_FAULT;
    return false;
}

/* First execution of a block since the recent cache lost it: find or cost it. */
__attribute__((noinline)) static fp_block *block_miss(fp_state *st, uint64_t pc, uint32_t size) {
    fp_block *recent = recent_slot(st, pc);
    fp_block *b = st->blocks ? block_slot(st, pc, size) : NULL;
    if (!b || !b->size) {
        uint32_t icount = 0, cycles = 0;
        fp_cost_block(st->cost_handle, pc, size, &icount, &cycles);
        st->block_misses++;
        if (blocks_reserve(st) == 0) {
            b = block_slot(st, pc, size);
            b->pc = pc; b->size = size; b->icount = icount; b->cycles = cycles;
            st->blocks_count++;
        } else {            /* out of memory: cost it again next time */
            recent->pc = pc; recent->size = size; recent->icount = icount; recent->cycles = cycles;
            return recent;
        }
    }
    *recent = *b;
    return recent;
}

static void block_hook(void *uc, uint64_t pc, uint32_t size, void *user) {
    fp_state *st = user;
    fp_block *b = recent_slot(st, pc);
    if (__builtin_expect(b->pc != pc || b->size != size, 0)) b = block_miss(st, pc, size);
    st->last_block = b;
    st->instructions += b->icount;
    st->cycles += b->cycles;
    if (__builtin_expect(st->instructions >= st->insn_stop || st->cycles >= st->cycle_stop, 0)
            && st->stop_reason == FP_STOP_NONE) {
        st->stop_reason = st->instructions >= st->insn_stop ? FP_STOP_INSN_LIMIT : FP_STOP_DEADLINE;
        ((uc_emu_stop_fn)st->emu_stop)(uc);
    }
}

/* Install the TLB-fill and block hooks on an engine. Returns uc_err (0 = OK). */
int fp_attach(void *uc, void *hook_add, void *emu_stop, fp_state *st, void *cost_handle) {
    uc_hook_add_fn add = (uc_hook_add_fn)hook_add;
    size_t hh;
    st->emu_stop = emu_stop;
    st->cost_handle = cost_handle;
    int err = add(uc, &hh, UC_HOOK_TLB_FILL_, (void *)tlb_fill_hook, st, (uint64_t)1, (uint64_t)0);
    if (err) return err;
    return add(uc, &hh, UC_HOOK_BLOCK_, (void *)block_hook, st, (uint64_t)1, (uint64_t)0);
}
