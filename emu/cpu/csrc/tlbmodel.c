/* The detailed TLB model (`--tlb detailed`): set-associative L1 instruction and data TLBs
 * and a unified L2 TLB sized from the machine profile, entries tagged with an address-
 * space id and a page size, and page walks through the real page tables (pagetable.c)
 * with a page-walk cache of non-leaf entries. Every data access (a Unicorn memory hook)
 * and every instruction fetch (one lookup per executed block, and one more when the block
 * crosses a page; the block's other instructions count as hits on that entry) goes
 * through it, and what misses is charged in cycles. Unicorn's own TLB still translates:
 * this model only decides what the hardware would have paid.
 *
 * Unicorn's memory hooks report physical addresses (with UC_TLB_VIRTUAL the hooks run
 * after translation), so the fill hook records, per physical frame, the virtual page it
 * last filled a Unicorn TLB entry for (`rmap`); every access goes through such an entry,
 * so this names the virtual page accessed, except for a frame mapped at two virtual
 * pages of one space at once, where it names the one filled last.
 *
 * Included by fastpath.c after pagetable.c. Counters are named as gem5 names its TLB
 * statistics (hits, misses, readMisses, writeMisses, instHits, instMisses, walks,
 * walkServiceTime) and live in fp_state (fastpath.h) for Python to read.
 *
 * Invariants: an entry is valid only with a page size its array holds; a level's arrays
 * are probed together and a fill goes to one array; replacement decisions depend only on
 * the access sequence (random replacement uses a fixed-seed xorshift), so runs are
 * deterministic. */
#include <stdint.h>
#include <stdlib.h>

#define UC_HOOK_MEM_READ_  1024
#define UC_HOOK_MEM_WRITE_ 2048
#define TLBM_MAX_ARRAYS 4
#define TLBM_SIZES 5
static const uint8_t TLBM_SHIFTS[TLBM_SIZES] = {12, 16, 20, 21, 30};  /* bit i of `sizes` */

typedef struct {
    uint64_t tag;       /* vaddr >> shift */
    uint64_t stamp;     /* LRU: last use; FIFO: fill time */
    uint32_t asid;
    uint8_t shift;
    uint8_t valid;
} tlbm_entry;

typedef struct {
    uint32_t sets, ways, sizes;     /* sets: a power of two; sizes: bits of TLBM_SHIFTS */
    tlbm_entry *e;                  /* sets * ways */
} tlbm_array;

typedef struct {
    tlbm_array arr[TLBM_MAX_ARRAYS];
    tlbm_entry *last;               /* the entry that hit last: probed first */
    int n;
    uint32_t hit_cycles;
    int repl;                       /* FP_REPL_* */
} tlbm_level;

struct fp_tlbmodel {
    uint64_t *rmap;                 /* physical frame -> virtual page last filled for it */
    uint64_t frames;
    tlbm_level level[3];            /* FP_TLB_L1I, FP_TLB_L1D, FP_TLB_L2 */
    tlbm_array pwc;                 /* page-walk cache: one size, tags carry the level */
    uint32_t pwc_levels;            /* bit l: entries of level l are cached */
    uint32_t pwc_hit_cycles;
    uint64_t stamp, rng;
};

fp_tlbmodel *fp_tlbm_new(void) {
    fp_tlbmodel *m = calloc(1, sizeof *m);
    if (m) m->rng = 0x9E3779B97F4A7C15ULL;
    return m;
}

void fp_tlbm_free(fp_tlbmodel *m) {
    if (!m) return;
    for (int l = 0; l < 3; l++)
        for (int a = 0; a < m->level[l].n; a++) free(m->level[l].arr[a].e);
    free(m->pwc.e);
    free(m->rmap);
    free(m);
}

static int array_init(tlbm_array *a, uint32_t entries, uint32_t ways, uint32_t sizes) {
    if (!entries || !ways || entries % ways) return -1;
    uint32_t sets = entries / ways;
    if (sets & (sets - 1)) return -1;
    a->e = calloc(entries, sizeof *a->e);
    if (!a->e) return -1;
    a->sets = sets; a->ways = ways; a->sizes = sizes;
    return 0;
}

/* Set a level's lookup cost and replacement policy. */
void fp_tlbm_level(fp_tlbmodel *m, int level, uint32_t hit_cycles, int repl) {
    m->level[level].hit_cycles = hit_cycles;
    m->level[level].repl = repl;
}

/* Add an array of `entries` entries, `ways` ways, holding the page sizes in `sizes` (bits of
 * 4K, 64K, 1M, 2M, 1G) to a level. 0, or -1 (bad geometry, too many arrays, no memory). */
int fp_tlbm_array(fp_tlbmodel *m, int level, uint32_t entries, uint32_t ways, uint32_t sizes) {
    tlbm_level *lv = &m->level[level];
    if (lv->n >= TLBM_MAX_ARRAYS || !sizes) return -1;
    if (array_init(&lv->arr[lv->n], entries, ways, sizes)) return -1;
    lv->n++;
    return 0;
}

/* Configure the page-walk cache (entries == 0: none). 0, or -1. */
int fp_tlbm_walk_cache(fp_tlbmodel *m, uint32_t entries, uint32_t ways, uint32_t levels,
                       uint32_t hit_cycles) {
    m->pwc_levels = entries ? levels : 0;
    m->pwc_hit_cycles = hit_cycles;
    return entries ? array_init(&m->pwc, entries, ways, 1) : 0;
}

static inline uint64_t next_random(fp_tlbmodel *m) {
    m->rng ^= m->rng << 13; m->rng ^= m->rng >> 7; m->rng ^= m->rng << 17;
    return m->rng;
}

/* Probe one array for a tag of page size `shift`; the entry or NULL. */
static inline tlbm_entry *probe(tlbm_array *a, uint64_t tag, uint8_t shift, uint32_t asid) {
    tlbm_entry *set = a->e + (tag & (a->sets - 1)) * a->ways;
    for (uint32_t w = 0; w < a->ways; w++)
        if (set[w].valid && set[w].tag == tag && set[w].shift == shift && set[w].asid == asid)
            return &set[w];
    return NULL;
}

/* Look `vaddr` up in a level; the page-size shift of the entry that hit, or 0. */
static int level_lookup(fp_tlbmodel *m, tlbm_level *lv, uint64_t vaddr, uint32_t asid) {
    tlbm_entry *last = lv->last;
    if (last && last->valid && last->asid == asid && last->tag == vaddr >> last->shift) {
        if (lv->repl == FP_REPL_LRU) last->stamp = m->stamp;
        return last->shift;
    }
    for (int a = 0; a < lv->n; a++)
        for (int i = 0; i < TLBM_SIZES; i++) {
            if (!(lv->arr[a].sizes >> i & 1)) continue;
            uint8_t shift = TLBM_SHIFTS[i];
            tlbm_entry *e = probe(&lv->arr[a], vaddr >> shift, shift, asid);
            if (e) {
                if (lv->repl == FP_REPL_LRU) e->stamp = m->stamp;
                lv->last = e;
                return shift;
            }
        }
    return 0;
}

/* Put the translation of `vaddr` (a page of size `shift`) in a level: in the first array
 * that holds that size, else splintered to the largest smaller size an array holds. */
static void level_fill(fp_tlbmodel *m, tlbm_level *lv, uint64_t vaddr, uint32_t asid,
                       int shift) {
    tlbm_array *best = NULL;
    uint8_t best_shift = 0;
    for (int a = 0; a < lv->n; a++)
        for (int i = 0; i < TLBM_SIZES; i++)
            if ((lv->arr[a].sizes >> i & 1) && TLBM_SHIFTS[i] <= shift &&
                TLBM_SHIFTS[i] > best_shift) { best = &lv->arr[a]; best_shift = TLBM_SHIFTS[i]; }
    if (!best) return;
    uint64_t tag = vaddr >> best_shift;
    tlbm_entry *set = best->e + (tag & (best->sets - 1)) * best->ways, *victim = NULL;
    for (uint32_t w = 0; w < best->ways && !victim; w++) if (!set[w].valid) victim = &set[w];
    if (!victim) {
        if (lv->repl == FP_REPL_RANDOM) victim = &set[next_random(m) % best->ways];
        else {
            victim = &set[0];
            for (uint32_t w = 1; w < best->ways; w++)
                if (set[w].stamp < victim->stamp) victim = &set[w];
        }
    }
    victim->tag = tag; victim->shift = best_shift; victim->asid = asid;
    victim->valid = 1; victim->stamp = m->stamp;
}

static inline void count(fp_tlb_stats *s, int kind, int hit) {
    if (hit) { s->hits++; if (kind == 2) s->inst_hits++; else if (kind) s->write_hits++; else s->read_hits++; }
    else { s->misses++; if (kind == 2) s->inst_misses++; else if (kind) s->write_misses++; else s->read_misses++; }
}

/* A page walk for `vaddr` through the page-walk cache: its cycles (0 walk if unmapped). */
static uint64_t model_walk(fp_state *st, fp_tlbmodel *m, uint64_t vaddr, uint32_t asid,
                           pt_walk_t *w, int *found) {
    *found = st->pt ? pt_walk(st->pt, vaddr, w) : 0;
    if (!st->pt) return 0;
    int levels = (int)w->levels, start = 0;
    uint64_t cost = 0;
    /* the deepest non-leaf entry the walk cache holds lets the walk start below it */
    for (int l = levels - 2; l >= 0 && m->pwc_levels; l--) {
        if (!(m->pwc_levels >> l & 1)) continue;
        uint64_t tag = ((vaddr >> (39 - 9 * l)) << 2) | (uint64_t)l;
        if (probe(&m->pwc, tag, 12, asid)) { start = l + 1; cost += m->pwc_hit_cycles; break; }
    }
    if (m->pwc_levels) { if (start) st->tlbm_stats.pwc_hits++; else st->tlbm_stats.pwc_misses++; }
    for (int l = start; l < levels; l++) {
        cost += st->walk_level_cycles[l];
        if (l < levels - 1 && (m->pwc_levels >> l & 1)) {
            tlbm_level one = {.arr = {m->pwc}, .n = 1, .repl = FP_REPL_LRU};
            level_fill(m, &one, ((vaddr >> (39 - 9 * l)) << 2 | (uint64_t)l) << 12, asid, 12);
        }
    }
    st->walks++;
    st->walk_cycles += cost;
    if (levels) st->walks_by_levels[levels - 1]++;
    return cost;
}

/* One access (kind 0 read, 1 write, 2 fetch) through the model: the cycles it costs. */
static uint64_t tlbm_access(fp_state *st, uint64_t vaddr, int kind) {
    fp_tlbmodel *m = st->tlbm;
    uint32_t asid = st->pt ? st->pt->asid : 0;
    int l1 = kind == 2 ? FP_TLB_L1I : FP_TLB_L1D;
    m->stamp++;
    if (level_lookup(m, &m->level[l1], vaddr, asid)) { count(&st->tlbm_stats.level[l1], kind, 1); return 0; }
    count(&st->tlbm_stats.level[l1], kind, 0);
    uint64_t cost = m->level[FP_TLB_L2].hit_cycles;
    int shift = level_lookup(m, &m->level[FP_TLB_L2], vaddr, asid);
    count(&st->tlbm_stats.level[FP_TLB_L2], kind, shift != 0);
    if (!shift) {
        pt_walk_t w;
        int found;
        cost += model_walk(st, m, vaddr, asid, &w, &found);
        if (!found) return cost;
        shift = (int)w.shift;
        st->fills_by_size[shift == 12 ? 0 : shift == 16 ? 1 : 2]++;
        level_fill(m, &m->level[FP_TLB_L2], vaddr, asid, shift);
    }
    level_fill(m, &m->level[l1], vaddr, asid, shift);
    return cost;
}

/* Instruction fetch of a block of `icount` instructions at pc (size bytes). */
static inline void tlbm_fetch_block(fp_state *st, uint64_t pc, uint32_t size, uint32_t icount) {
    st->cycles += tlbm_access(st, pc, 2);
    if (icount > 1) {
        fp_tlb_stats *s = &st->tlbm_stats.level[FP_TLB_L1I];
        s->hits += icount - 1; s->inst_hits += icount - 1;
    }
    if (size && ((pc + size - 1) >> 12) != (pc >> 12)) st->cycles += tlbm_access(st, pc + size - 1, 2);
}

/* The fill hook translated virtual page `vpage` to physical page `ppage`. */
static inline void tlbm_filled(fp_tlbmodel *m, uint64_t vpage, uint64_t ppage) {
    if ((ppage >> 12) < m->frames) m->rmap[ppage >> 12] = vpage;
}

static void mem_hook(void *uc, int type, uint64_t paddr, int size, int64_t value, void *user) {
    fp_state *st = user;
    fp_tlbmodel *m = st->tlbm;
    int kind = type == FP_ACCESS_WRITE ? 1 : 0;
    if ((paddr >> 12) >= m->frames) return;
    uint64_t address = m->rmap[paddr >> 12] | (paddr & 0xFFF);
    st->cycles += tlbm_access(st, address, kind);
    if (size > 0 && ((address & 0xFFF) + (uint64_t)size) > 0x1000)
        st->cycles += tlbm_access(st, address + (uint64_t)size - 1, kind);
}

static void invalidate_array(tlbm_array *a, uint32_t asid, uint64_t lo, uint64_t hi, int pwc,
                             uint64_t *dropped) {
    for (uint64_t i = 0; i < (uint64_t)a->sets * a->ways; i++) {
        tlbm_entry *e = &a->e[i];
        if (!e->valid || e->asid != asid) continue;
        uint64_t start, end;
        if (pwc) {          /* tag = (vaddr >> (39 - 9l)) << 2 | l: the span of that entry */
            int l = (int)(e->tag & 3);
            start = (e->tag >> 2) << (39 - 9 * l); end = start + (1ULL << (39 - 9 * l));
        } else {
            start = e->tag << e->shift; end = start + (1ULL << e->shift);
        }
        if (start < hi && end > lo) { e->valid = 0; (*dropped)++; }
    }
}

/* Drop the model's entries of address space `pt` that translate [lo, hi), walk-cache
 * entries included (the kernel changed or freed those translations or tables). */
void fp_tlbm_invalidate(fp_state *st, const fp_pagetable *pt, uint64_t lo, uint64_t hi) {
    fp_tlbmodel *m = st->tlbm;
    if (!m || !pt) return;
    uint32_t asid = pt->asid;
    for (int l = 0; l < 3; l++)
        for (int a = 0; a < m->level[l].n; a++)
            invalidate_array(&m->level[l].arr[a], asid, lo, hi, 0, &st->tlbm_stats.invalidations);
    if (m->pwc.e) invalidate_array(&m->pwc, asid, lo, hi, 1, &st->tlbm_stats.invalidations);
}

/* Send every access of the engine, whose RAM has `frames` frames, through model `m`
 * (after fp_attach); with `hook` 0 no memory hook is installed and only fp_tlbm_access
 * feeds the model (tests). Returns uc_err, or -1 out of memory. */
int fp_tlbm_attach(fp_state *st, fp_tlbmodel *m, uint64_t frames, int hook) {
    size_t hh;
    m->rmap = calloc(frames, sizeof *m->rmap);
    if (!m->rmap) return -1;
    m->frames = frames;
    st->tlbm = m;
    if (!hook) return 0;
    return CALL(st, uc_hook_add_fn, FN_HOOK_ADD)(st->uc, &hh, UC_HOOK_MEM_READ_ | UC_HOOK_MEM_WRITE_,
                                                (void *)mem_hook, st, (uint64_t)1, (uint64_t)0);
}

/* One access (0 read, 1 write, 2 fetch) of virtual address `vaddr` through the model, as
 * the hooks make it; returns the cycles it costs (not charged to the clock). */
uint64_t fp_tlbm_access(fp_state *st, uint64_t vaddr, int kind) {
    return st->tlbm ? tlbm_access(st, vaddr, kind) : 0;
}
