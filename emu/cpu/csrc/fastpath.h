/* Declarations shared by the cffi cdef and the C fast path (emu/cpu/csrc/fastpath.c).
 * Everything here is plain C data: Python owns the policy, C walks the tables.
 *
 * This file is the ONE definition of the constants that cross the C/Python boundary;
 * the Python modules that use them (emu/mm/pagetable.py, emu/mm/fault.py,
 * emu/cpu/engine.py) assert at import that their own names agree. */

/* PTE layout (uint64): physical frame address in bits 12..51, flags below. The R/W/X
 * bits equal Linux's PROT_READ/WRITE/EXEC and Unicorn's UC_PROT_*. */
#define FP_PTE_READ      0x1
#define FP_PTE_WRITE     0x2
#define FP_PTE_EXEC      0x4
#define FP_PTE_VALID     0x8
#define FP_PTE_MODIFIED  0x10  /* software bit: page written since last clean */
#define FP_PTE_ACCESSED  0x20  /* the walker used the entry (x86 A, arm64 AF) */
#define FP_PTE_ADDR_MASK 0x000FFFFFFFFFF000ULL

/* Why the last fp_run returned (set by the hooks). */
#define FP_STOP_NONE        0   /* emu_start returned by itself (an `until` address) */
#define FP_STOP_FAULT       1   /* TLB miss the fast path could not resolve */
#define FP_STOP_INSN_LIMIT  2   /* the instruction budget is used up exactly */
#define FP_STOP_DEADLINE    3   /* simulated-clock deadline (cycle_stop) reached */
#define FP_STOP_SYSCALL     4   /* a system call that needs the kernel outside the CPU */
#define FP_STOP_EXCEPTION   5   /* another CPU exception: intno says which */
#define FP_STOP_BREAKPOINT  6   /* a breakpoint at the start of the next block */
#define FP_STOP_PRECISE     7   /* a stop point lies inside the next block: precise_pc */
#define FP_STOP_CALLBACK    8   /* a Python callback failed (callback_error) */
#define FP_STOP_FAULT_DONE  9   /* a fault was completed in place, then the CPU stopped at
                                   the faulting instruction (its block's rest not charged) */

/* Access types as passed by Unicorn's TLB-fill hook (== UC_MEM_READ/WRITE/FETCH). */
#define FP_ACCESS_READ  16
#define FP_ACCESS_WRITE 17
#define FP_ACCESS_FETCH 18

#define FP_MAX_SYSCALL      1024   /* per-number counters and the inline table cover 0..1023 */
#define FP_MAX_BREAKPOINTS  4096
#define FP_MAX_STUCK        8
#define FP_RECENT_BLOCKS    1024   /* direct-mapped cache in front of the block table */
#define FP_FLUSH_CEILING    32     /* a wider ranged TLB flush flushes everything (Linux: 33) */

/* Page-table formats (fp_pt_new) and what a table-building call returns when it needs
 * a new table frame from Python (fp_pt_add_table, then call again). */
#define FP_PT_X86_64      0
#define FP_PT_AARCH64     1
#define FP_PT_NEED_TABLE  -2

typedef struct fp_pagetable fp_pagetable;
typedef struct fp_tlbmodel fp_tlbmodel;

/* The detailed TLB model's levels and replacement policies (tlbmodel.c). */
#define FP_TLB_L1I 0
#define FP_TLB_L1D 1
#define FP_TLB_L2  2
#define FP_REPL_LRU    0
#define FP_REPL_FIFO   1
#define FP_REPL_RANDOM 2

/* One TLB's counters, named as gem5's (hits, misses, readHits, ..., instMisses). */
typedef struct fp_tlb_stats {
    uint64_t hits, misses, read_hits, read_misses, write_hits, write_misses,
             inst_hits, inst_misses;
} fp_tlb_stats;

typedef struct fp_tlbm_stats {
    fp_tlb_stats level[3];      /* FP_TLB_L1I, FP_TLB_L1D, FP_TLB_L2 */
    uint64_t pwc_hits, pwc_misses;  /* walks that started below the root thanks to the cache */
    uint64_t invalidations;     /* entries dropped by ranged invalidation */
} fp_tlbm_stats;

/* Cost of one translated block, computed once (by Python, with capstone). Blocks are
 * known by the physical address of their first instruction, so that two processes
 * with different code at one virtual address never share a cost. */
typedef struct fp_block {
    uint64_t pc;            /* virtual address in the space that ran it last */
    uint64_t paddr;         /* physical address of the first instruction */
    uint32_t size, icount, cycles;
} fp_block;

/* A stuck-at value: memory (`paddr`, or `vaddr` through page table `pt` whenever a page
 * is there, `width` bytes) or a register of at most 64 bits (Unicorn id `reg`) becomes
 * (value & and_mask) | or_mask before every block while the clock is below `until`. */
typedef struct fp_stuck {
    uint64_t until;
    uint64_t paddr;
    uint64_t vaddr;
    const fp_pagetable *pt;     /* NULL: paddr */
    uint64_t and_mask, or_mask;
    int reg;                    /* -1: memory */
    uint32_t width;
} fp_stuck;

typedef struct fp_state {
    fp_pagetable *pt;           /* page table of the running address space */
    uint64_t tlb_fills;         /* fast-path refills */
    uint64_t tlb_misses;        /* fills refused: handed to the fault resolver */
    uint64_t tlb_flushes;       /* whole-TLB flushes */
    uint64_t tlb_page_flushes;  /* single-page flushes (ranged invalidation) */
    uint64_t fault_vaddr;       /* address of the last refused fill */
    int fault_access;           /* FP_ACCESS_* of the last refused fill */
    int stop_reason;            /* FP_STOP_* */
    uint32_t intno;             /* the CPU exception of FP_STOP_EXCEPTION */
    uint64_t stop_pc;           /* the PC when fp_run returned */
    uint64_t precise_pc;        /* FP_STOP_PRECISE: where inside the next block to stop */
    uint32_t stop_block_size;   /* FP_STOP_PRECISE: the size of that block */
    uint64_t instructions;      /* instructions of executed blocks */
    uint64_t insn_stop;         /* stop once instructions reach insn_stop (UINT64_MAX: never) */
    uint64_t cycles;            /* the simulated clock */
    uint64_t cycle_stop;        /* stop at the first block boundary at or after this clock */
    uint64_t tlb_fill_cost;     /* cycles charged per fast-path refill */
    uint64_t syscall_cost;      /* cycles charged per system call entry */
    uint64_t frequency_hz;      /* simulated clock rate (what Unicorn is told the time is) */
    int inline_faults;          /* offer refused fills to the kernel before stopping (fp_fault) */
    int pc_reg;                 /* Unicorn id of the program counter */
    uint32_t walk_level_cycles[4];  /* cycles per table entry read, by level (root first) */
    uint64_t walks;             /* page walks that found a valid leaf (fast mode: each fill) */
    uint64_t walk_cycles;       /* cycles charged for them, fill cost included */
    uint64_t walks_by_levels[4];    /* walks that read 1, 2, 3, 4 entries */
    uint64_t fills_by_size[3];  /* TLB entries filled for 4 KiB, 64 KiB and 2 MiB pages */
    fp_tlbmodel *tlbm;          /* the detailed TLB model (NULL: fast mode) */
    fp_tlbm_stats tlbm_stats;
    const fp_block *last_block; /* the block executing now (valid until the next block) */
    uint64_t block_misses;      /* blocks costed by Python (first execution) */
    /* system calls: captured by the C hook; `inline_ok[nr]` calls are handed to Python
     * inside the hook and the CPU goes on, the others stop it */
    uint64_t sc_nr;
    uint64_t sc_args[6];
    uint64_t sc_counts[FP_MAX_SYSCALL];
    uint8_t inline_ok[FP_MAX_SYSCALL];
    int sc_regs[7];             /* Unicorn ids: number, then the six argument registers */
    int sc_ret_reg;
    int sc_intno;               /* the interrupt number of a system call (AArch64 svc), or -1 */
    /* breakpoints: stop before the instruction at any of these addresses (ascending) */
    uint64_t breakpoints[FP_MAX_BREAKPOINTS];
    uint32_t n_breakpoints;
    uint64_t resume_pc;         /* a breakpoint here is stepped over once (resuming from it) */
    /* stuck-at values (a fault injector's): asserted before every block until `until` */
    fp_stuck stuck[FP_MAX_STUCK];
    uint32_t n_stuck;
    uint8_t *ram;               /* physical RAM (for stuck memory) */
    uint64_t ram_size;
    /* x86 floating-point flags (Unicorn 2.1 / QEMU 5.0 keep softfloat's accrued flags in
     * env->sse_status and env->fp_status and never copy them into MXCSR or the x87 status
     * word): where those live in the engine's CPUX86State, NULL when not found */
    uint32_t *fpu_mxcsr;
    uint8_t *fpu_sse_flags;
    uint16_t *fpu_fsw;
    uint16_t *fpu_fcw;
    uint8_t *fpu_x87_flags;
    /* private to the C side: */
    fp_block *blocks;           /* block cost table (open addressing) */
    uint64_t blocks_cap, blocks_count;
    fp_block recent[FP_RECENT_BLOCKS];
    void *uc;                   /* the engine (uc_engine *) */
    void *cpu;                  /* its CPUState *, when found (ranged TLB flushes) */
    void *fn[12];                /* Unicorn entry points, resolved at run time */
    void *py_handle;            /* the Python FastPath object */
} fp_state;
