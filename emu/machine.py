"""The composition root: builds RAM, frames, CPU and kernel from a RunConfig and runs the program."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from emu.config import RunConfig
from emu.cpu.arch import ARCHES
from emu.cpu.engine import CpuEngine
from emu.errors import EmuError
from emu.kernel.guestfs import GuestRoot
from emu.kernel.kernel import Kernel
from emu.loader.elf import read_elf
from emu.mm.frames import PAGE_SIZE, FrameAllocator, PhysicalMemory
from emu.trace.stats import RunStats, build_report

MIN_RAM = 1 << 20


@dataclass(frozen=True)
class RunResult:
    """How a run ended, and its statistics report."""

    exit_code: int                 # as a shell reports it (128 + signal when killed)
    exit_signal: int
    report: dict[str, Any]


def run_program(config: RunConfig) -> RunResult:
    """Load and run `config.program` to completion."""
    started = time.perf_counter()
    image = read_elf(config.program)
    if config.arch not in ("auto", image.arch):
        raise EmuError(f"{config.program} is an {image.arch} program, not {config.arch}")
    if not os.path.isdir(config.root):
        raise EmuError(f"guest root {config.root!r} is not a directory")
    if config.ram_bytes < MIN_RAM or config.ram_bytes % PAGE_SIZE:
        raise EmuError(f"--ram must be at least {MIN_RAM >> 20}M and a multiple of {PAGE_SIZE}")
    spec = ARCHES[image.arch]
    ram = PhysicalMemory(config.ram_bytes)
    frames = FrameAllocator(config.ram_bytes // PAGE_SIZE)
    stats = RunStats()
    kernel: Kernel | None = None

    def read_code(vaddr: int, size: int) -> bytes:
        assert kernel is not None and kernel.current is not None
        return kernel.current.process.mem.peek(vaddr, size)

    engine = CpuEngine(spec, ram.host_address, ram.size, read_code)
    kernel = Kernel(engine, ram, frames, GuestRoot(config.root), stats,
                    insn_limit=config.max_instructions)
    argv = [config.program, *config.args]
    proc = kernel.spawn(image, argv, list(config.env), config.uid)
    try:
        kernel.run()
    finally:
        engine.fastpath.release()
    status = proc.exit
    assert status is not None
    st = engine.fastpath.state
    report = build_report(
        arch=spec.name, program=config.program, exit_code=status.shell_code,
        exit_signal=status.signal, instructions=st.instructions, cycles=st.cycles,
        tlb_fills=st.tlb_fills, stats=stats, frames_total=frames.total,
        frames_peak=frames.peak, syscalls=kernel.syscalls.counts,
        host={"wall_seconds": round(time.perf_counter() - started, 6)})
    return RunResult(status.shell_code, status.signal, report)
