"""Page tables in the architecture's format and the TLB model, on real guest runs: walks
read the levels the format has, the MMU's accessed and dirty bits land in the tables,
page-table frames come out of RAM and go back, and the detailed model counts what the
profile's TLBs would."""
from __future__ import annotations

import struct
from pathlib import Path

from emu.config import MemoryManagerFlags, RunConfig
from emu.machine import AfterInstructions, Machine, Stopped
from tests.conftest import run_emu


def test_fast_mode_walks_four_levels_for_small_pages_and_three_for_large(firmware, arch, tmp_path):
    small = run_emu("-m~v", firmware / arch / "sweep", "8", "4096", "2",
                    stats_path=tmp_path / "s.json", cwd=Path("/"))
    large = run_emu(firmware / arch / "sweep", "8", "4096", "2",
                    stats_path=tmp_path / "l.json", cwd=Path("/"))
    assert small.returncode == large.returncode == 0 and small.stdout == large.stdout
    s, l = small.stats["tlb"], large.stats["tlb"]
    assert s["walks"] == s["fills"] and s["walksByLevels"]["3"] == 0 == s["pageSizes"]["2M"]
    assert l["pageSizes"]["2M"] > 0 and l["walksByLevels"]["3"] == l["pageSizes"]["2M"]
    mm = small.stats["mm"]
    assert mm["page_table_frames"] >= 4 and mm["page_table_frames_at_exit"] == 0


def test_the_mmu_sets_accessed_and_dirty_bits_in_the_guests_page_tables(firmware, arch):
    machine = Machine(RunConfig(program=str(firmware / arch / "sweep"),
                                args=("4", "8192", "400"), root="/",
                                mm_flags=MemoryManagerFlags(variable_page_sizes=False)))
    stop = machine.run(AfterInstructions(1_000_000))       # well into the read passes
    assert isinstance(stop, Stopped)
    space = machine.kernel.processes[-1].space
    region = next(m for m in space.mappings() if m.length == 4 << 20)
    table = space.page_table
    touched = table.lookup(region.start >> 12)
    skipped = table.lookup((region.start >> 12) + 1)          # stride 8 KiB: never touched
    assert touched is not None and touched.accessed and touched.modified
    assert skipped is None
    # and the entry in RAM is the architecture's: walk from the root by hand
    ram = machine.ram.view
    entry_addr = table.root_frame << 12
    for level in range(4):
        index = (region.start >> (39 - 9 * level)) & 511
        entry = struct.unpack_from("<Q", ram, entry_addr + 8 * index)[0]
        entry_addr = entry & 0x0000FFFFFFFFF000
    if arch == "x86_64":
        assert entry & 0x1 and entry & 0x20 and entry & 0x40      # P, A, D
    else:
        assert entry & 0x3 == 0x3 and entry >> 10 & 1             # page descriptor, AF
    assert (entry & 0x0000FFFFFFFFF000) >> 12 == touched.frame
    machine.close()


def test_detailed_mode_counts_tlb_misses_and_large_pages_remove_them(firmware, arch, tmp_path):
    runs = {}
    for name, flags in (("v", []), ("nov", ["-m~v"])):
        runs[name] = run_emu("--tlb", "detailed", *flags, firmware / arch / "sweep", "16",
                             "4096", "3", stats_path=tmp_path / f"{name}.json", cwd=Path("/"))
        assert runs[name].returncode == 0
    model = {n: r.stats["tlb"]["model"] for n, r in runs.items()}
    pages = 16 * 256
    # every read pass touches 4096 pages: with 4 KiB pages each access misses the L1 DTLB
    assert model["nov"]["dtlb.readMisses"] >= 2 * pages
    assert model["v"]["dtlb.readMisses"] < model["nov"]["dtlb.readMisses"] / 10
    assert runs["v"].stats["cycles"] < runs["nov"].stats["cycles"]
    for m in model.values():
        assert m["dtlb.hits"] + m["dtlb.misses"] == m["dtlb.readHits"] + m["dtlb.readMisses"] \
            + m["dtlb.writeHits"] + m["dtlb.writeMisses"]
        assert m["itlb.instHits"] > 0 and m["l2tlb.misses"] <= m["dtlb.misses"] + m["itlb.misses"]


def test_detailed_mode_is_deterministic(firmware, arch, tmp_path):
    stats = []
    for i in range(2):
        run = run_emu("--tlb", "detailed", firmware / arch / "thread_touch", "3", "64",
                      stats_path=tmp_path / f"{i}.json", cwd=Path("/"))
        assert run.returncode == 0
        stats.append({k: v for k, v in run.stats.items() if k != "host"})
    assert stats[0] == stats[1]
