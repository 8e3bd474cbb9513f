/* Declarations shared by the cffi cdef and the C fast path (emu/cpu/_fastpath.c).
 * Everything here is plain C data: Python owns the policy, C walks the tables. */

/* PTE layout (uint64): physical frame address in bits 12..51, flags below. */
#define FP_PTE_READ      0x1   /* == UC_PROT_READ */
#define FP_PTE_WRITE     0x2   /* == UC_PROT_WRITE */
#define FP_PTE_EXEC      0x4   /* == UC_PROT_EXEC */
#define FP_PTE_VALID     0x8
#define FP_PTE_MODIFIED  0x10  /* software bit: page written since last clean */
#define FP_PTE_ADDR_MASK 0x000FFFFFFFFFF000ULL

/* Why the last emu_start returned (set by the hooks). */
#define FP_STOP_NONE        0
#define FP_STOP_FAULT       1   /* TLB miss the fast path could not resolve */
#define FP_STOP_INSN_LIMIT  2   /* --max-instructions reached */
#define FP_STOP_DEADLINE    3   /* simulated-clock deadline (cycle_stop) reached */

/* Access types as passed by Unicorn's TLB-fill hook. */
#define FP_ACCESS_READ  16
#define FP_ACCESS_WRITE 17
#define FP_ACCESS_FETCH 18

typedef struct fp_pagetable fp_pagetable;

/* Cost of one translated block, computed once (by Python, with capstone). */
typedef struct fp_block {
    uint64_t pc;
    uint32_t size, icount, cycles;
} fp_block;

#define FP_RECENT_BLOCKS 1024   /* direct-mapped cache in front of the block table */

typedef struct fp_state {
    fp_pagetable *pt;           /* page table of the running address space */
    uint64_t tlb_fills;         /* fast-path refills (hits) */
    uint64_t tlb_misses;        /* fills refused: handed to the fault resolver */
    uint64_t fault_vaddr;       /* address of the last refused fill */
    int fault_access;           /* FP_ACCESS_* of the last refused fill */
    int stop_reason;            /* FP_STOP_* */
    uint64_t instructions;      /* instructions of executed blocks (block entry) */
    uint64_t insn_stop;         /* stop once instructions >= insn_stop (UINT64_MAX: never) */
    uint64_t cycles;            /* simulated cycles charged by executed blocks */
    uint64_t cycle_stop;        /* stop once cycles >= cycle_stop (UINT64_MAX: never) */
    uint64_t tlb_fill_cost;     /* cycles charged per fast-path refill */
    int inline_faults;          /* offer misses to Python before stopping (fp_fault) */
    uint32_t large_shift[2];    /* large page sizes the fill hook looks up (0: none) */
    const fp_block *last_block; /* the block executing now (valid until the next block) */
    uint64_t block_misses;      /* blocks costed by Python (first execution) */
    /* private to the C side: */
    fp_block *blocks;           /* block cost table (open addressing) */
    uint64_t blocks_cap, blocks_count;
    fp_block recent[FP_RECENT_BLOCKS];
    void *emu_stop;             /* uc_emu_stop, resolved at run time */
    void *cost_handle;          /* Python object that costs new blocks */
} fp_state;
