"""cffi build script for the C fast path (`emu.cpu._fastpath`).

Run by setup.py (cffi_modules) at install time, or directly:
`python emu/cpu/fastpath_build.py` builds the module in place (for development).
"""
from __future__ import annotations

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
CSRC = HERE / "csrc"
HEADER = (CSRC / "fastpath.h").read_text()

ffibuilder = FFI()
ffibuilder.cdef(
    HEADER
    + """
fp_pagetable *fp_pt_new(uint8_t *ram, uint64_t ram_size, int format);
void fp_pt_free(fp_pagetable *pt);
int fp_pt_add_table(fp_pagetable *pt, uint64_t frame);
uint64_t fp_pt_tables(const fp_pagetable *pt);
uint64_t fp_pt_root(const fp_pagetable *pt);
uint64_t fp_pt_prune(fp_pagetable *pt, uint64_t lo, uint64_t hi, uint64_t *out, uint64_t max);
uint64_t fp_pt_release_tables(fp_pagetable *pt, uint64_t *out, uint64_t max);
uint64_t fp_pt_walk_bench(fp_pagetable *pt, const uint64_t *vaddrs, uint64_t n, uint64_t rounds);
uint64_t fp_pt_get(const fp_pagetable *pt, uint64_t vpn);
uint64_t fp_pt_leaf_address(const fp_pagetable *pt, uint64_t vpn);
int fp_pt_set(fp_pagetable *pt, uint64_t vpn, uint64_t pte);
uint64_t fp_pt_clear(fp_pagetable *pt, uint64_t vpn);
uint64_t fp_pt_count(const fp_pagetable *pt);
uint64_t fp_pt_get_large(const fp_pagetable *pt, uint64_t vpn, unsigned shift);
int fp_pt_set_large(fp_pagetable *pt, uint64_t vpn, unsigned shift, uint64_t pte);
uint64_t fp_pt_clear_large(fp_pagetable *pt, uint64_t vpn, unsigned shift);
uint64_t fp_pt_range(const fp_pagetable *pt, uint64_t lo, uint64_t hi, uint64_t *out, uint64_t max);
fp_tlbmodel *fp_tlbm_new(void);
void fp_tlbm_free(fp_tlbmodel *m);
void fp_tlbm_level(fp_tlbmodel *m, int level, uint32_t hit_cycles, int repl);
int fp_tlbm_array(fp_tlbmodel *m, int level, uint32_t entries, uint32_t ways, uint32_t sizes);
int fp_tlbm_walk_cache(fp_tlbmodel *m, uint32_t entries, uint32_t ways, uint32_t levels, uint32_t hit_cycles);
int fp_tlbm_attach(fp_state *st, fp_tlbmodel *m, uint64_t frames, int hook);
uint64_t fp_tlbm_access(fp_state *st, uint64_t vaddr, int kind);
void fp_tlbm_invalidate(fp_state *st, const fp_pagetable *pt, uint64_t lo, uint64_t hi);
void fp_recent_clear(fp_state *st);
void fp_blocks_clear(fp_state *st);
uint64_t fp_blocks_forget(fp_state *st, uint64_t paddr_lo, uint64_t paddr_hi);
void fp_state_release(fp_state *st);
void fp_clock_reset(void);
int fp_patch_clock(void *slot);
uint64_t fp_object_base(void *symbol);
int fp_attach(fp_state *st, void *uc, void **fns, void *py_handle, int syscall_insn);
void *fp_find_cpu(void *uc, void *tcg_flush_tlb);
void fp_fpu_sync(fp_state *st);
int fp_run(fp_state *st, uint64_t begin, uint64_t until);
void fp_tlb_flush(fp_state *st);
void fp_tlb_flush_range(fp_state *st, uint64_t start, uint64_t end);
void fp_code_invalidate(fp_state *st, uint64_t first_frame, uint64_t n);
void fp_set_page_table(fp_state *st, fp_pagetable *pt);
void fp_tb_invalidate(fp_state *st, uint64_t paddr_lo, uint64_t paddr_hi);
uint64_t fp_translate(fp_state *st, uint64_t vaddr);
extern "Python" int fp_cost_block(void *, uint64_t, uint64_t, uint32_t, uint32_t *, uint32_t *);
extern "Python" int fp_syscall(void *, int64_t *);
extern "Python" int fp_fault(void *, uint64_t, int);
"""
)
ffibuilder.set_source(
    "emu.cpu._fastpath",
    '#include "fastpath.c"\n',
    include_dirs=[str(CSRC)],
    depends=[str(CSRC / "fastpath.c"), str(CSRC / "pagetable.c"), str(CSRC / "tlbmodel.c"), str(CSRC / "fastpath.h")],
    extra_compile_args=["-O2", "-std=c99", "-Wall"],
)

if __name__ == "__main__":
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        built = Path(ffibuilder.compile(tmpdir=tmp, verbose=False))
        shutil.copy(built, HERE / built.name)
