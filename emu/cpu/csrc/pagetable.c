/* Page tables in the architecture's own format, in guest physical RAM.
 *
 * Each address space has a radix tree of 4 KiB table frames taken from emulated RAM:
 *  - x86-64: 4-level PML4 / PDPT / PD / PT; a 2 MiB page is a PD entry with PS; P, R/W,
 *    U/S, A, D and NX as the SDM defines them (Intel SDM vol. 3A, §4.5, tables 4-14..4-20);
 *  - AArch64: stage 1, 4 KiB granule, 48-bit VA, levels 0-3; a 2 MiB page is a level-2
 *    block descriptor, a 64 KiB page is 16 level-3 page descriptors with the Contiguous
 *    bit; AP[2:1], AF, UXN/PXN, nG and SH as the Arm ARM defines them (DDI 0487, D8.3), and
 *    Linux's conventions for what the architecture leaves to software: DBM (bit 51) marks a
 *    writable page, hardware dirty state is DBM with AP[2] clear, PTE_DIRTY is bit 55.
 *
 * Python speaks one format-neutral "soft" PTE at this API (fastpath.h: FP_PTE_*): frame
 * address, R/W/X as the mapping grants them, VALID, MODIFIED. Encoding keeps a soft R bit
 * and a PROT_NONE marker in the software-available bits (as Linux does: x86 _PAGE_PROTNONE,
 * arm64 PTE_PROT_NONE), so that soft PTEs round-trip exactly, while the walker the fill
 * hook uses reads only what the hardware would: on x86 a present page is readable.
 *
 * New table frames come from Python (fp_pt_add_table: the frame allocator is policy);
 * a call that needs one and has none returns FP_PT_NEED_TABLE, the caller supplies a
 * frame and calls again. Included by fastpath.c (one cffi unit), after fastpath.h.
 *
 * Invariants: every table frame of a tree is referenced by exactly one entry (or is the
 * root); `pages` counts the 4 KiB pages that valid soft leaf entries map; a PROT_NONE
 * leaf is never a table; the fill hook changes only the accessed and dirty bits. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NO_ROOT UINT64_MAX
#define STASH_MAX 8

struct fp_pagetable {
    uint8_t *ram;
    uint64_t ram_size;
    int format;             /* FP_PT_X86_64 or FP_PT_AARCH64 */
    uint64_t root;          /* physical address of the root table, NO_ROOT before the first map */
    uint64_t stash[STASH_MAX];  /* zeroed frames handed in for new tables */
    int nstash;
    uint64_t pages;         /* 4 KiB pages mapped by valid leaves (a block counts whole) */
    uint64_t tables;        /* table frames in the tree, root included */
    uint32_t asid;          /* address-space id the TLB model tags entries with (never reused) */
};

static uint32_t last_asid;

static inline uint64_t hash64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33;
    return x;
}

/* ---- the two formats' bits ---- */

#define X86_P        0x1ULL
#define X86_RW       0x2ULL
#define X86_US       0x4ULL
#define X86_A        0x20ULL
#define X86_D        0x40ULL
#define X86_PS       0x80ULL
#define X86_PROTNONE 0x100ULL        /* software (Linux: _PAGE_PROTNONE, the G bit's place) */
#define X86_SW_READ  0x200ULL        /* software: the mapping grants read */
#define X86_NX       (1ULL << 63)
#define X86_ADDR     0x000FFFFFFFFFF000ULL
#define X86_TABLE    (X86_P | X86_RW | X86_US | X86_A | X86_D)   /* Linux's _PAGE_TABLE */

#define A64_VALID    0x1ULL
#define A64_PAGE     0x2ULL          /* bits[1:0] = 11: table (levels 0-2) or page (level 3) */
#define A64_AP_EL0   (1ULL << 6)     /* AP[1]: EL0 may access */
#define A64_RDONLY   (1ULL << 7)     /* AP[2]: read-only */
#define A64_SH_INNER (3ULL << 8)
#define A64_AF       (1ULL << 10)
#define A64_NG       (1ULL << 11)
#define A64_DBM      (1ULL << 51)    /* Linux: PTE_WRITE */
#define A64_CONT     (1ULL << 52)
#define A64_PXN      (1ULL << 53)
#define A64_UXN      (1ULL << 54)
#define A64_DIRTY    (1ULL << 55)    /* software (Linux: PTE_DIRTY) */
#define A64_SW_READ  (1ULL << 56)    /* software: the mapping grants read */
#define A64_PROTNONE (1ULL << 58)    /* software (Linux: PTE_PROT_NONE) */
#define A64_ADDR     0x0000FFFFFFFFF000ULL

#define SOFT_PERMS (FP_PTE_READ | FP_PTE_WRITE | FP_PTE_EXEC)
#define CONT_PAGES 16

static inline uint64_t *table_at(const fp_pagetable *pt, uint64_t paddr) {
    return (uint64_t *)(pt->ram + paddr);
}

static inline unsigned level_index(uint64_t vpn, int level) {
    return (unsigned)(vpn >> (27 - 9 * level)) & 511;
}

/* The next-level table an entry of level 0-2 points to, or 0 (no table there; also when
 * the entry points outside RAM, which only a corrupted entry does: a fault injector's). */
static inline uint64_t next_table(const fp_pagetable *pt, uint64_t e) {
    uint64_t a;
    if (pt->format == FP_PT_X86_64)
        a = (e & X86_P) && !(e & X86_PS) ? e & X86_ADDR : 0;
    else
        a = (e & 3) == 3 ? e & A64_ADDR : 0;
    return a && a + 4096 <= pt->ram_size ? a : 0;
}

static inline uint64_t table_entry(const fp_pagetable *pt, uint64_t paddr) {
    return pt->format == FP_PT_X86_64 ? paddr | X86_TABLE : paddr | A64_VALID | A64_PAGE;
}

/* Whether a level-2 entry is a 2 MiB leaf (x86 PS, AArch64 block), valid or PROT_NONE. */
static inline int is_block(const fp_pagetable *pt, uint64_t e) {
    if (pt->format == FP_PT_X86_64) return (e & X86_PS) != 0;
    return e && (e & 3) == 1;
}

/* The architecture entry of a soft PTE (a level-3 page, or a block when `block`). */
static uint64_t encode(const fp_pagetable *pt, uint64_t soft, int block, int cont) {
    uint64_t addr = soft & FP_PTE_ADDR_MASK, perms = soft & SOFT_PERMS;
    int mod = (soft & FP_PTE_MODIFIED) != 0;
    if (pt->format == FP_PT_X86_64) {
        uint64_t e = (addr & X86_ADDR) | X86_US | (perms ? X86_P : X86_PROTNONE);
        if (perms & FP_PTE_WRITE) e |= X86_RW;
        if (perms & FP_PTE_READ) e |= X86_SW_READ;
        if (!(perms & FP_PTE_EXEC)) e |= X86_NX;
        if (mod) e |= X86_D;
        if (soft & FP_PTE_ACCESSED) e |= X86_A;
        if (block) e |= X86_PS;
        return e;
    }
    uint64_t e = (addr & A64_ADDR) | A64_SH_INNER | A64_NG | A64_PXN;
    e |= perms ? (A64_VALID | (block ? 0 : A64_PAGE)) : A64_PROTNONE | (block ? 0 : A64_PAGE);
    if (perms & (FP_PTE_READ | FP_PTE_WRITE)) e |= A64_AP_EL0;
    if (perms & FP_PTE_WRITE) e |= A64_DBM | (mod ? 0 : A64_RDONLY);
    else e |= A64_RDONLY;
    if (!(perms & FP_PTE_EXEC)) e |= A64_UXN;
    if (perms & FP_PTE_READ) e |= A64_SW_READ;
    if (mod) e |= A64_DIRTY;
    if (soft & FP_PTE_ACCESSED) e |= A64_AF;
    if (cont) e |= A64_CONT;
    return e;
}

/* The soft PTE of an architecture leaf entry (0 if it maps nothing). */
static uint64_t decode(const fp_pagetable *pt, uint64_t e) {
    if (pt->format == FP_PT_X86_64) {
        if (!(e & (X86_P | X86_PROTNONE))) return 0;
        uint64_t s = (e & X86_ADDR) | FP_PTE_VALID;
        if (e & X86_P) {
            if (e & X86_SW_READ) s |= FP_PTE_READ;
            if (e & X86_RW) s |= FP_PTE_WRITE;
            if (!(e & X86_NX)) s |= FP_PTE_EXEC;
        }
        if (e & X86_D) s |= FP_PTE_MODIFIED;
        if (e & X86_A) s |= FP_PTE_ACCESSED;
        return s;
    }
    if (!(e & (A64_VALID | A64_PROTNONE))) return 0;
    uint64_t s = (e & A64_ADDR) | FP_PTE_VALID;
    if (e & A64_VALID) {
        if (e & A64_SW_READ) s |= FP_PTE_READ;
        if (e & A64_DBM) s |= FP_PTE_WRITE;
        if (!(e & A64_UXN)) s |= FP_PTE_EXEC;
    }
    if ((e & A64_DIRTY) || ((e & A64_DBM) && !(e & A64_RDONLY))) s |= FP_PTE_MODIFIED;
    if (e & A64_AF) s |= FP_PTE_ACCESSED;
    return s;
}

/* What the hardware lets a user-mode access do through a valid leaf (FP_PTE_R/W/X). */
static inline uint32_t hw_perms(const fp_pagetable *pt, uint64_t e) {
    if (pt->format == FP_PT_X86_64) {
        if (!(e & X86_P)) return 0;
        return FP_PTE_READ | (e & X86_RW ? FP_PTE_WRITE : 0) | (e & X86_NX ? 0 : FP_PTE_EXEC);
    }
    if (!(e & A64_VALID)) return 0;
    uint32_t p = e & A64_UXN ? 0 : FP_PTE_EXEC;
    if (e & A64_AP_EL0) {
        p |= FP_PTE_READ;
        if (!(e & A64_RDONLY) || (e & A64_DBM)) p |= FP_PTE_WRITE;   /* DBM: hardware dirty */
    }
    return p;
}

/* Whether a leaf is dirty as the hardware sees it (x86 D; arm64 writable with AP[2] clear,
 * or Linux's software PTE_DIRTY). */
static inline int leaf_dirty(const fp_pagetable *pt, uint64_t e) {
    if (pt->format == FP_PT_X86_64) return (e & X86_D) != 0;
    return (e & A64_DIRTY) || ((e & A64_DBM) && !(e & A64_RDONLY));
}

/* The hardware's accessed (and, for a write, dirty) update of a leaf it used. */
static inline void mark_used(const fp_pagetable *pt, uint64_t *e, int write) {
    if (pt->format == FP_PT_X86_64) *e |= X86_A | (write ? X86_D : 0);
    else *e = (*e | A64_AF) & ~(write ? A64_RDONLY : 0);
}

/* ---- the tree ---- */

fp_pagetable *fp_pt_new(uint8_t *ram, uint64_t ram_size, int format) {
    fp_pagetable *pt = calloc(1, sizeof *pt);
    if (!pt) return NULL;
    pt->ram = ram; pt->ram_size = ram_size; pt->format = format; pt->root = NO_ROOT;
    pt->asid = ++last_asid;
    return pt;
}

/* Free the C bookkeeping (table frames are Python's: fp_pt_release_tables first). */
void fp_pt_free(fp_pagetable *pt) { free(pt); }

/* Hand in a frame for a new table; it is zeroed here. 0, or -1 when the stash is full. */
int fp_pt_add_table(fp_pagetable *pt, uint64_t frame) {
    if (pt->nstash >= STASH_MAX || (frame + 1) << 12 > pt->ram_size) return -1;
    memset(pt->ram + (frame << 12), 0, 4096);
    pt->stash[pt->nstash++] = frame << 12;
    return 0;
}

static inline uint64_t take_table(fp_pagetable *pt) {
    pt->tables++;
    return pt->stash[--pt->nstash];
}

/* The entry of level `level` (0-3) on the way to `vpn`, creating tables down to it when
 * `create`; NULL if a table is missing (and not created), a block is in the way, or the
 * stash ran dry (*need set). */
static uint64_t *slot_at(fp_pagetable *pt, uint64_t vpn, int level, int create, int *need) {
    if (pt->root == NO_ROOT) {
        if (!create) return NULL;
        if (!pt->nstash) { *need = 1; return NULL; }
        pt->root = take_table(pt);
    }
    uint64_t table = pt->root;
    for (int l = 0; l < level; l++) {
        uint64_t *e = table_at(pt, table) + level_index(vpn, l);
        uint64_t next = next_table(pt, *e);
        if (!next) {
            if (*e || !create) return NULL;          /* a leaf (block) or nothing */
            if (!pt->nstash) { *need = 1; return NULL; }
            next = take_table(pt);
            *e = table_entry(pt, next);
        }
        table = next;
    }
    return table_at(pt, table) + level_index(vpn, level);
}

/* The soft PTE of the 4 KiB page `vpn` (inside a large page: its part), 0 if none. */
uint64_t fp_pt_get(const fp_pagetable *pt, uint64_t vpn) {
    int need = 0;
    uint64_t *e2 = slot_at((fp_pagetable *)pt, vpn, 2, 0, &need);
    if (!e2) return 0;
    if (is_block(pt, *e2)) {
        uint64_t s = decode(pt, *e2);
        return s ? s + ((vpn & 511) << 12) : 0;
    }
    uint64_t *e3 = slot_at((fp_pagetable *)pt, vpn, 3, 0, &need);
    return e3 ? decode(pt, *e3) : 0;
}

/* The physical address of the leaf entry that maps `vpn` (a 2 MiB block, or a level-3
 * entry that is not empty), UINT64_MAX if none: where a fault injector corrupts it. */
uint64_t fp_pt_leaf_address(const fp_pagetable *pt, uint64_t vpn) {
    int need = 0;
    uint64_t *e = slot_at((fp_pagetable *)pt, vpn, 2, 0, &need);
    if (e && !is_block(pt, *e)) e = slot_at((fp_pagetable *)pt, vpn, 3, 0, &need);
    return e && *e ? (uint64_t)((uint8_t *)e - pt->ram) : UINT64_MAX;
}

/* The 4 KiB pages a level-2 or level-3 entry maps as a leaf (a table maps none itself). */
static inline uint64_t leaf_pages(const fp_pagetable *pt, uint64_t e, int level) {
    if (level == 2) return is_block(pt, e) && decode(pt, e) ? 512 : 0;
    return decode(pt, e) ? 1 : 0;
}

/* Install the soft PTE of 4 KiB page `vpn`: 0, FP_PT_NEED_TABLE, or -1 when a large page
 * covers it (split it first). */
int fp_pt_set(fp_pagetable *pt, uint64_t vpn, uint64_t soft) {
    int need = 0;
    uint64_t *e = slot_at(pt, vpn, 3, 1, &need);
    if (!e) return need ? FP_PT_NEED_TABLE : -1;
    uint64_t entry = soft ? encode(pt, soft, 0, 0) : 0;
    pt->pages += leaf_pages(pt, entry, 3) - leaf_pages(pt, *e, 3);
    *e = entry;
    return 0;
}

/* Remove the entry of 4 KiB page `vpn`; returns the old soft PTE (0 if none). */
uint64_t fp_pt_clear(fp_pagetable *pt, uint64_t vpn) {
    int need = 0;
    uint64_t *e = slot_at(pt, vpn, 3, 0, &need);
    if (!e) return 0;
    uint64_t old = decode(pt, *e);
    pt->pages -= leaf_pages(pt, *e, 3);
    *e = 0;
    return old;
}

/* The large entry (page size 1 << shift: 16 or 21) whose range holds `vpn`, 0 if none. */
uint64_t fp_pt_get_large(const fp_pagetable *pt, uint64_t vpn, unsigned shift) {
    int need = 0;
    if (shift == 21) {
        uint64_t *e = slot_at((fp_pagetable *)pt, vpn, 2, 0, &need);
        return e && is_block(pt, *e) ? decode(pt, *e) : 0;
    }
    if (shift != 16 || pt->format != FP_PT_AARCH64) return 0;
    uint64_t *e = slot_at((fp_pagetable *)pt, vpn & ~(uint64_t)(CONT_PAGES - 1), 3, 0, &need);
    return e && (*e & A64_CONT) ? decode(pt, *e) : 0;
}

/* Install a large entry for the aligned range holding `vpn` (its level-3 entries, if any,
 * must be clear): 0, FP_PT_NEED_TABLE, or -1 (a size this format cannot map). */
int fp_pt_set_large(fp_pagetable *pt, uint64_t vpn, unsigned shift, uint64_t soft) {
    int need = 0;
    if (shift == 21) {
        uint64_t *e = slot_at(pt, vpn, 2, 1, &need);
        if (!e) return need ? FP_PT_NEED_TABLE : -1;
        uint64_t table = next_table(pt, *e);
        if (table) {                    /* an empty page table goes: the block replaces it */
            uint64_t *t = table_at(pt, table);
            for (int i = 0; i < 512; i++) if (t[i]) return -1;
            if (pt->nstash < STASH_MAX) pt->stash[pt->nstash++] = table;
            else return -1;
            pt->tables--;
        }
        pt->pages += 512 - leaf_pages(pt, *e, 2);
        *e = encode(pt, soft, 1, 0);
        return 0;
    }
    if (shift != 16 || pt->format != FP_PT_AARCH64) return -1;
    uint64_t base = vpn & ~(uint64_t)(CONT_PAGES - 1);
    uint64_t *e = slot_at(pt, base, 3, 1, &need);
    if (!e) return need ? FP_PT_NEED_TABLE : -1;
    for (int i = 0; i < CONT_PAGES; i++) {
        pt->pages += 1 - leaf_pages(pt, e[i], 3);
        e[i] = encode(pt, soft + ((uint64_t)i << 12), 0, 1);
    }
    return 0;
}

/* Remove the large entry of the range holding `vpn`; returns its soft PTE (0 if none). */
uint64_t fp_pt_clear_large(fp_pagetable *pt, uint64_t vpn, unsigned shift) {
    uint64_t old = fp_pt_get_large(pt, vpn, shift);
    if (!old) return 0;
    int need = 0;
    if (shift == 21) {
        uint64_t *e = slot_at(pt, vpn, 2, 0, &need);
        pt->pages -= 512;
        *e = 0;
    } else {
        uint64_t *e = slot_at(pt, vpn & ~(uint64_t)(CONT_PAGES - 1), 3, 0, &need);
        for (int i = 0; i < CONT_PAGES; i++) { pt->pages -= leaf_pages(pt, e[i], 3); e[i] = 0; }
    }
    return old;
}

uint64_t fp_pt_count(const fp_pagetable *pt) { return pt->pages; }

uint64_t fp_pt_tables(const fp_pagetable *pt) { return pt->tables; }

uint64_t fp_pt_root(const fp_pagetable *pt) { return pt->root; }

static uint64_t range_rec(const fp_pagetable *pt, uint64_t table, int level, uint64_t base,
                          uint64_t lo, uint64_t hi, uint64_t *out, uint64_t max, uint64_t n) {
    uint64_t span = 1ULL << (9 * (3 - level)), *t = table_at(pt, table);
    uint64_t first = lo > base ? (lo - base) / span : 0;
    for (uint64_t i = first; i < 512 && n < max; i++) {
        uint64_t start = base + i * span;
        if (start >= hi) break;
        uint64_t e = t[i];
        if (!e) continue;
        uint64_t next = level < 3 ? next_table(pt, e) : 0;
        if (next) { n = range_rec(pt, next, level + 1, start, lo, hi, out, max, n); continue; }
        uint64_t soft = decode(pt, e);
        if (!soft) continue;
        for (uint64_t v = start > lo ? start : lo; v < start + span && v < hi && n < max; v++) {
            out[2 * n] = v; out[2 * n + 1] = soft + ((v - start) << 12); n++;
        }
    }
    return n;
}

/* Copy up to max (vpn, soft PTE) pairs with lo <= vpn < hi into out, in vpn order, large
 * pages as their 4 KiB parts; returns how many. */
uint64_t fp_pt_range(const fp_pagetable *pt, uint64_t lo, uint64_t hi,
                     uint64_t *out, uint64_t max) {
    if (pt->root == NO_ROOT || lo >= hi) return 0;
    return range_rec(pt, pt->root, 0, 0, lo, hi, out, max, 0);
}

static int all_zero(const uint64_t *t) {
    for (int i = 0; i < 512; i++) if (t[i]) return 0;
    return 1;
}

static uint64_t prune_rec(fp_pagetable *pt, uint64_t table, int level, uint64_t base,
                          uint64_t lo, uint64_t hi, uint64_t *out, uint64_t max, uint64_t n) {
    uint64_t span = 1ULL << (9 * (3 - level)), *t = table_at(pt, table);
    uint64_t first = lo > base ? (lo - base) / span : 0;
    for (uint64_t i = first; i < 512 && level < 3 && n < max; i++) {
        uint64_t start = base + i * span;
        if (start >= hi) break;
        uint64_t next = next_table(pt, t[i]);
        if (!next) continue;
        n = prune_rec(pt, next, level + 1, start, lo, hi, out, max, n);
        if (n < max && all_zero(table_at(pt, next))) {
            out[n++] = next >> 12; t[i] = 0; pt->tables--;
        }
    }
    return n;
}

/* Take out the tables below the root that map nothing in [lo, hi) (after an unmap);
 * their frames (up to max) go to out for Python to free. Returns how many. */
uint64_t fp_pt_prune(fp_pagetable *pt, uint64_t lo, uint64_t hi, uint64_t *out, uint64_t max) {
    if (pt->root == NO_ROOT || lo >= hi) return 0;
    return prune_rec(pt, pt->root, 0, 0, lo, hi, out, max, 0);
}

static uint64_t collect_rec(fp_pagetable *pt, uint64_t table, int level, uint64_t *out,
                            uint64_t max, uint64_t n) {
    uint64_t *t = table_at(pt, table);
    for (int i = 0; i < 512 && level < 3; i++) {
        uint64_t next = next_table(pt, t[i]);
        if (next) n = collect_rec(pt, next, level + 1, out, max, n);
    }
    if (n < max) out[n++] = table >> 12;
    return n;
}

/* Give up every table frame, root and unused stash included (the space is going away);
 * their frame numbers go to out (max must be at least fp_pt_tables + the stash). */
uint64_t fp_pt_release_tables(fp_pagetable *pt, uint64_t *out, uint64_t max) {
    uint64_t n = pt->root == NO_ROOT ? 0 : collect_rec(pt, pt->root, 0, out, max, 0);
    while (pt->nstash && n < max) out[n++] = pt->stash[--pt->nstash] >> 12;
    pt->root = NO_ROOT; pt->tables = 0; pt->pages = 0;
    return n;
}

/* ---- the walk (fill hook, block hook, debugger translation) ---- */

typedef struct {
    uint64_t paddr;     /* physical address of the 4 KiB page holding the address */
    uint32_t perms;     /* what the hardware lets user mode do (FP_PTE_R/W/X) */
    uint32_t levels;    /* table entries read (1..4) */
    uint32_t shift;     /* page size of the leaf: 12, 16 (contiguous) or 21 */
    uint64_t *leaf;     /* the leaf entry (NULL: none) */
} pt_walk_t;

/* Walk `pt` for `vaddr` as the MMU would: 1 with a valid leaf in *w, 0 without one
 * (w->levels still says how many entries were read). */
static inline int pt_walk(const fp_pagetable *pt, uint64_t vaddr, pt_walk_t *w) {
    w->levels = 0; w->leaf = NULL; w->perms = 0;
    if (pt->root == NO_ROOT || vaddr >> 48) return 0;
    uint64_t vpn = vaddr >> 12, table = pt->root;
    for (int level = 0; level < 4; level++) {
        uint64_t *e = table_at(pt, table) + level_index(vpn, level);
        w->levels++;
        uint64_t next = level < 3 ? next_table(pt, *e) : 0;
        if (next) { table = next; continue; }
        if (level < 2 || (level == 2 && !is_block(pt, *e))) return 0;
        uint32_t perms = hw_perms(pt, *e);
        if (!perms) return 0;
        uint64_t addr = *e & (pt->format == FP_PT_X86_64 ? X86_ADDR : A64_ADDR);
        if (addr + (level == 2 ? 0x200000ULL : 0x1000ULL) > pt->ram_size) return 0;
        if (level == 2) {
            w->shift = 21;
            w->paddr = (addr & ~0x1FFFFFULL) + (vaddr & 0x1FF000);
        } else {
            w->shift = pt->format == FP_PT_AARCH64 && (*e & A64_CONT) ? 16 : 12;
            w->paddr = addr;
        }
        w->perms = perms;
        w->leaf = e;
        return 1;
    }
    return 0;
}

/* The physical page `vaddr` translates to in `pt` (any permission), and its size shift;
 * UINT64_MAX if none. No accessed bit is set: this is a peek, not an access. */
static inline uint64_t pt_peek(const fp_pagetable *pt, uint64_t vaddr) {
    pt_walk_t w;
    return pt && pt_walk(pt, vaddr, &w) ? w.paddr : UINT64_MAX;
}

/* Benchmark entry (tools/bench_tlb.py): walk `pt` for each of n addresses `rounds` times,
 * as the fill hook does (accessed bits included); returns how many walks found a leaf. */
uint64_t fp_pt_walk_bench(fp_pagetable *pt, const uint64_t *vaddrs, uint64_t n, uint64_t rounds) {
    uint64_t found = 0;
    pt_walk_t w;
    for (uint64_t r = 0; r < rounds; r++)
        for (uint64_t i = 0; i < n; i++)
            if (pt_walk(pt, vaddrs[i], &w)) { mark_used(pt, w.leaf, 0); found++; }
    return found;
}
