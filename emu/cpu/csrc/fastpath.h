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
#define FP_STOP_DEADLINE    3   /* simulated-clock deadline reached */

/* Access types as passed by Unicorn's TLB-fill hook. */
#define FP_ACCESS_READ  16
#define FP_ACCESS_WRITE 17
#define FP_ACCESS_FETCH 18

typedef struct fp_pagetable fp_pagetable;

typedef struct fp_state {
    fp_pagetable *pt;           /* page table of the running address space */
    uint64_t tlb_fills;         /* fast-path refills (hits) */
    uint64_t tlb_misses;        /* fills refused: handed to the fault resolver */
    uint64_t fault_vaddr;       /* address of the last refused fill */
    int fault_access;           /* FP_ACCESS_* of the last refused fill */
    int stop_reason;            /* FP_STOP_* */
    uint64_t instructions;      /* instructions of executed blocks (block entry) */
    uint64_t insn_limit;        /* stop once instructions >= insn_limit; 0 = none */
    uint64_t cycles;            /* simulated cycles charged by executed blocks */
    uint64_t deadline;          /* stop once cycles >= deadline; 0 = none */
    uint64_t block_pc;          /* start of the block executing now */
    uint32_t block_icount;      /* its instruction count */
    uint32_t block_size;        /* and its size in bytes */
    uint64_t block_misses;      /* blocks costed by Python (first execution) */
    /* private to the C side: */
    void *blocks;               /* block cost cache */
    uint64_t blocks_cap, blocks_count;
    void *emu_stop;             /* uc_emu_stop, resolved at run time */
    void *cost_handle;          /* Python object that costs new blocks */
} fp_state;
