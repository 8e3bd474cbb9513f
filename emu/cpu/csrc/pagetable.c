/* Page tables of the C fast path: a hash table per address space from virtual page
 * number to a 64-bit PTE (fastpath.h gives the layout), small and large pages, and the
 * walk the fill hook and the block hook use. Included by fastpath.c (one cffi unit), after
 * fastpath.h (which the cffi cdef reads too, so it carries no include guard).
 *
 * Invariant: a page table maps a virtual page number to at most one PTE; the fill hook
 * never changes a page table. */
#include <stdint.h>
#include <stdlib.h>

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
        if (k && !(k >> 60) && k - 1 >= lo && k - 1 < hi) {   /* small pages only */
            out[2 * n] = k - 1; out[2 * n + 1] = pt->ptes[j]; n++;
        }
    }
    return n;
}

/* The PTE translating `vaddr` in `pt` (small or large) and the byte offset of vaddr's
 * page inside a large page; 0 if none. */
static inline uint64_t pt_translate(const fp_state *st, const fp_pagetable *pt, uint64_t vaddr,
                                    uint64_t *offset) {
    uint64_t vpn = vaddr >> 12, pte = pt_get_key(pt, vpn + 1);
    *offset = 0;
    for (int k = 0; !(pte & FP_PTE_VALID) && k < 2 && st->large_shift[k]; k++) {
        unsigned shift = st->large_shift[k];
        pte = pt_get_key(pt, large_key(vpn, shift));
        *offset = vaddr & ((1ULL << shift) - 1) & ~0xFFFULL;
    }
    return pte;
}
