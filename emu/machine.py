"""The composition root: builds RAM, frames, CPU and kernel from a RunConfig and runs the program."""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import IO, Any

from emu.config import RunConfig
from emu.cpu.arch import ARCHES
from emu.cpu.engine import CpuEngine
from emu.errors import EmuError
from emu.kernel.guestfs import GuestRoot
from emu.kernel.kernel import Kernel
from emu.loader.elf import read_elf
from emu.mm.frames import PAGE_SIZE, FrameAllocator, PhysicalMemory
from emu.profile import load_profile
from emu.trace.events import EventBus, JsonLinesWriter
from emu.trace.stats import RunStats, build_report

MIN_RAM = 1 << 20


@dataclass(frozen=True)
class RunResult:
    """How a run ended, and its statistics report."""

    exit_code: int                 # as a shell reports it (128 + signal when killed)
    exit_signal: int
    report: dict[str, Any]


def run_program(config: RunConfig, events: IO[str] | None = None) -> RunResult:
    """Load and run `config.program` to completion; kernel events go to `events` as JSON lines."""
    started = time.perf_counter()
    image = read_elf(config.program)
    if config.arch not in ("auto", image.arch):
        raise EmuError(f"{config.program} is an {image.arch} program, not {config.arch}")
    if not os.path.isdir(config.root):
        raise EmuError(f"guest root {config.root!r} is not a directory")
    if config.ram_bytes < MIN_RAM or config.ram_bytes % PAGE_SIZE:
        raise EmuError(f"--ram must be at least {MIN_RAM >> 20}M and a multiple of {PAGE_SIZE}")
    if config.mm_threads < 1:
        raise EmuError("--mm-threads must be at least 1")
    profile = load_profile(config.profile)
    spec = ARCHES[image.arch]
    ram = PhysicalMemory(config.ram_bytes)
    frames = FrameAllocator(config.ram_bytes // PAGE_SIZE)
    bus = EventBus()
    stats = RunStats()
    bus.subscribe(stats)
    if events is not None:
        bus.subscribe(JsonLinesWriter(events))
    kernel: Kernel | None = None

    def read_code(vaddr: int, size: int) -> bytes:
        assert kernel is not None and kernel.sched.current is not None
        return kernel.sched.current.process.mem.peek(vaddr, size)

    engine = CpuEngine(spec, ram.host_address, ram.size, read_code, profile.instructions,
                       profile.tlb_fill)
    kernel = Kernel(engine, ram, frames, GuestRoot(config.root), profile, bus, stats,
                    insn_limit=config.max_instructions, mm_threads=config.mm_threads,
                    faults_in_place=config.faults_in_place,
                    large_pages=config.mm_flags.variable_page_sizes)
    proc = kernel.spawn(image, [config.program, *config.args], list(config.env), config.uid,
                        lock=config.mm_flags.lock_all, superlock=config.mm_flags.superlock_all)
    try:
        kernel.run()
    finally:
        engine.fastpath.release()
    status = proc.exit
    assert status is not None
    stats.finish(engine.cycles)
    threads = [{"pid": t.process.pid, "tid": t.tid, "name": t.name, "priority": t.base_priority,
                "policy": t.policy.name, "cycles_by_state": dict(sorted(
                    stats.threads[(t.process.pid, t.tid)].by_state.items()))}
               for p in kernel.processes for t in p.threads]
    st = engine.fastpath.state
    report = build_report(
        arch=spec.name, program=config.program, exit_code=status.shell_code,
        exit_signal=status.signal, instructions=st.instructions, cycles=st.cycles,
        tlb_fills=st.tlb_fills, stats=stats, mm=kernel.memory_counters(),
        syscalls=kernel.syscalls.counts, threads=threads,
        host={"wall_seconds": round(time.perf_counter() - started, 6)})
    return RunResult(status.shell_code, status.signal, report)


@contextlib.contextmanager
def open_events(path: str | None):  # type: ignore[no-untyped-def]
    """The --events file opened for writing (or None), with one-line errors."""
    if path is None:
        yield None
        return
    try:
        stream = open(path, "w")
    except OSError as exc:
        raise EmuError(f"cannot write events file {path}: {exc.strerror}") from None
    with stream:
        yield stream
