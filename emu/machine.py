"""The composition root: `Machine` builds every collaborator from a RunConfig and runs it.

It builds the CPU engine, physical memory, the scheduler, the timers, the backing
store and its device, the page cache and the pager, procnto's memory manager, the
fault entry, the syscall table and its per-family services, and the kernel, and
hands each its collaborators; nothing below builds anything itself.

Clients — the CLI, the tests, a debugger, an injector — drive it with a step API:
`run(until=...)` stops at a simulated cycle, after N instructions, at a guest PC, on an
event, or at exit, and can be called again to resume. `read_memory`/`write_memory`
go through the page tables without faulting anything in or charging any cycle, and
`registers`/`set_register` read and write one thread's registers.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterator

from emu.config import RunConfig
from emu.cpu.arch import ARCHES, SIGNAL_REGISTERS, X86_FP_REGISTERS
from emu.cpu.engine import NEVER, CpuEngine, StopKind
from emu.errors import EmuError
from emu.kernel.clock import Clock
from emu.kernel.device import BlockDevice, Device
from emu.kernel.faults import FaultEntry
from emu.kernel.family import Family
from emu.kernel.futex import FutexTable
from emu.kernel.guestfs import GuestRoot
from emu.kernel.io import BackingStore
from emu.kernel.itimers import ItimerTable
from emu.kernel.kernel import Kernel
from emu.kernel.process import ExitStatus, Process, Thread, ThreadState
from emu.kernel.residency import Residency
from emu.kernel.resources import ResourceHooks, SystemFacts
from emu.kernel.sched import Scheduler
from emu.kernel.hostio import HostPoller
from emu.kernel.locks import LockTable
from emu.kernel.pipes import FifoTable
from emu.kernel.procfs import ProcFs
from emu.kernel.sigdeliver import SignalDelivery
from emu.kernel.sigframe import FRAMES
from emu.kernel.waitq import Blocking
from emu.kernel.syscalls import MemoryServices, Services, SyscallTable
from emu.kernel.sysvshm import SysvShm
from emu.kernel.timers import TimerQueue
from emu.kernel.waits import Waits
from emu.inject.injector import Injector
from emu.inject.ports import KernelPorts
from emu.inject.spec import FaultSpec
from emu.loader import symbols
from emu.loader.elf import read_elf
from emu.mm.frames import PAGE_SIZE, FrameAllocator, PhysicalMemory
from emu.mm.pagecache import PageCache
from emu.mm.pagetable import PageTableFormat, TableFrames
from emu.mm.pager import Pager
from emu.mm.prefault import Prefaulter
from emu.mm.uaccess import BadAddress
from emu.profile import load_profile
from emu.servers.devb import DeviceDriver
from emu.servers.procnto import MemoryManager
from emu.trace.diagnostics import DiagnosticPrinter
from emu.trace.strace import StraceWriter
from emu.trace.events import (Diagnostic, Event, EventBus, FaultEnd, JsonLinesWriter,
                              ProcessCreate, ProcessExec, ProcessExit, RunEnd, RunStart,
                              ThreadCreate)
from emu.trace.stats import RunStats

MIN_RAM = 1 << 20
Instrument = Callable[[Event], None]


# ---- what `run` may stop at, and what it returns ----

@dataclass(frozen=True)
class AtCycle:
    """Stop at the first block boundary at or after this simulated cycle (absolute)."""

    cycle: int


@dataclass(frozen=True)
class AfterInstructions:
    """Stop once this many more instructions have retired (exact: 1 is a single step)."""

    count: int


@dataclass(frozen=True)
class AtPc:
    """Stop before any thread executes the instruction at one of these addresses."""

    pcs: tuple[int, ...]

    def __init__(self, *pcs: int) -> None:
        """Breakpoints at `pcs`."""
        object.__setattr__(self, "pcs", tuple(pcs))


@dataclass(frozen=True)
class OnEvent:
    """Stop as soon as an event of `kinds` (default: any) satisfies `predicate`."""

    predicate: Callable[[Event], bool]
    kinds: tuple[type[Event], ...] | None = None


Until = AtCycle | AfterInstructions | AtPc | OnEvent


@dataclass(frozen=True)
class Stopped:
    """`run` returned at a stop point; the run can go on (call `run` again)."""

    until: Until
    cycle: int
    instructions: int
    pid: int                        # the thread that was running (0 if none)
    tid: int
    pc: int
    event: Event | None = None      # the event that matched (OnEvent)


@dataclass(frozen=True)
class Exited:
    """Every guest process has ended: how the first one did."""

    status: ExitStatus


@dataclass(frozen=True)
class RunResult:
    """How a run ended, and its statistics report."""

    exit_code: int                 # as a shell reports it (128 + signal when killed)
    exit_signal: int
    report: dict[str, Any]


class Machine:
    """One guest program on one simulated machine, built from a RunConfig."""

    def __init__(self, config: RunConfig, *, instruments: tuple[Instrument, ...] = (),
                 events: IO[str] | None = None, device: Device | None = None,
                 diagnostics: Instrument | None = None, strace: IO[str] | None = None) -> None:
        """Build the machine and load `config.program` (not run yet). `instruments` see every
        event, `events` gets them as JSON lines, `device` replaces the backing store's block
        device, `diagnostics` receives the kernel's messages (default: stderr), `strace` gets
        every system call as strace shows it (--strace)."""
        self.started = time.perf_counter()
        image = read_elf(config.program)
        if config.arch not in ("auto", image.arch):
            raise EmuError(f"{config.program} is an {image.arch} program, not {config.arch}")
        if not os.path.isdir(config.root):
            raise EmuError(f"guest root {config.root!r} is not a directory")
        if config.ram_bytes < MIN_RAM or config.ram_bytes % PAGE_SIZE:
            raise EmuError(f"--ram must be at least {MIN_RAM >> 20}M and a multiple of {PAGE_SIZE}")
        if config.mm_threads < 1:
            raise EmuError("--mm-threads must be at least 1")
        if config.mm_priority is not None and not 1 <= config.mm_priority <= 255:
            raise EmuError("--mm-priority must be 1-255")
        if config.device_driver is not None and not 1 <= config.device_driver <= 255:
            raise EmuError("--device-driver must be a priority 1-255")
        if config.tlb not in ("fast", "detailed"):
            raise EmuError(f"--tlb must be fast or detailed, not {config.tlb!r}")
        self.config = config
        profile = self.profile = load_profile(config.profile, config.profile_overrides)
        profile.check_arch(image.arch)
        spec = ARCHES[image.arch]
        costs = profile.kernel

        # events first: everything built below may publish
        bus = self.bus = EventBus()
        self.stats = RunStats()
        self.stats.subscribe_to(bus)
        if events is not None:
            bus.subscribe(JsonLinesWriter(events))
        bus.subscribe(diagnostics or DiagnosticPrinter(), (Diagnostic,))
        for instrument in instruments:
            bus.subscribe(instrument, getattr(instrument, "kinds", None))

        # the hardware
        ram = self.ram = PhysicalMemory(config.ram_bytes)
        frames = self.frames = FrameAllocator(config.ram_bytes // PAGE_SIZE)
        engine = self.engine = CpuEngine(spec, ram.host_address, ram.size, self._read_code,
                                         profile.instructions, profile.tlb_fill,
                                         syscall_cost=costs.syscall,
                                         frequency_hz=profile.frequency_hz,
                                         walk_level_cycles=profile.walk.level_cycles)
        if config.tlb == "detailed":
            engine.model_tlb(profile.tlb, profile.walk.cache)
        frames.on_code_freed = engine.invalidate_code
        tables = self.tables = TableFrames(ram, frames, PageTableFormat.of_arch(spec.name))
        clock = Clock(engine.now, profile.frequency_hz)
        device = device or BlockDevice(profile.cycles(profile.read_page_ns),
                                       profile.cycles(profile.write_page_ns))

        # the kernel's parts
        timers = TimerQueue()
        sched = Scheduler(bus, engine.now, profile.time_slice)
        waits = Waits(sched, timers)
        futexes = FutexTable(sched)
        store = BackingStore(device, bus, timers, engine.now)
        page_cache = PageCache(frames, ram, engine.invalidate_code)
        pager = Pager(ram, frames, page_cache)
        driver = (DeviceDriver(sched, timers, engine.charge, costs.driver_interrupt)
                  if config.device_driver is not None else None)
        mm = MemoryManager(sched, bus, waits, store, pager, costs, engine.now, engine.charge,
                           config.mm_priority, driver.wait_for if driver else None)
        self.prefaulter = Prefaulter(config.prefault, pager.service) if config.prefault.most else None
        faults = FaultEntry(engine, sched, mm, timers, store, pager, frames, costs, bus,
                            self.prefaulter)
        syscalls = SyscallTable.for_arch(spec.name, on_unknown=self._unknown_syscall)
        kernel = self.kernel = Kernel(
            engine=engine, ram=ram, frames=frames, root=GuestRoot(config.root), profile=profile,
            clock=clock, bus=bus, sched=sched, timers=timers, waits=waits, futexes=futexes,
            store=store, faults=faults, mm=mm, syscalls=syscalls, tables=tables,
            insn_limit=config.max_instructions, cycle_limit=config.max_cycles,
            large_pages=config.mm_flags.variable_page_sizes, seed=config.seed)
        kernel.start(config.mm_threads, config.mm_priority, driver, config.device_driver or 0)
        assert kernel.procnto is not None
        residency = Residency(pager, engine.now, engine.charge, costs, store, bus)
        signals = SignalDelivery(engine, sched, bus, kernel.processes, kernel.end_process,
                                 kernel.procnto)
        blocking = Blocking(sched, timers, FRAMES[spec.name].syscall_insn_size, signals.waiting)
        locks = LockTable()
        family = Family(kernel, blocking, locks)
        host_io = HostPoller(blocking)
        itimers = ItimerTable(timers, clock, sched.cpu_time, signals.send, kernel.find_thread)
        shm = SysvShm(frames, ram, kernel.processes, engine.invalidate_code)
        self._follow_processes(kernel, ResourceHooks(
            self._find_process, lambda: sched.current, sched.cpu_time,
            on_exec=(itimers.on_exec, shm.forget), on_exit=(itimers.forget, shm.forget)))
        services = Services(threads=kernel, clock=clock,
                            memory=MemoryServices(page_cache, residency, store, waits),
                            signals=signals, family=family, blocking=blocking, host=host_io,
                            locks=locks, fifos=FifoTable(), procfs=ProcFs(
                                kernel.processes, lambda: kernel.procnto, ram.size,
                                lambda: frames.free_count, clock.now_ns, spec.name,
                                sched.cpu_time, profile.frequency_hz, shm),
                            system=SystemFacts(ram.size, frames, kernel.processes, clock),
                            itimers=itimers, shm=shm)
        kernel.connect(services, signals, family, residency, host_io)
        syscalls.bus = bus              # SyscallEnter/Exit, built only when someone listens
        if strace is not None:
            bus.subscribe(StraceWriter(spec.name, lambda pid, vaddr, size: self.read_memory(
                vaddr, size, pid), self._pending_result, strace), StraceWriter.kinds)

        # the CPU's shortcuts into the kernel
        engine.fastpath.on_syscall = kernel.inline_syscall
        engine.fastpath.set_inline_syscalls(list(syscalls.inline))
        if config.faults_in_place:
            engine.fastpath.complete_faults_with(faults.complete_in_place)
        if not engine.fastpath.clock_is_simulated:
            kernel.diagnose(None, "cannot point Unicorn's clock at the simulated one: TLB fill "
                                  "counts may vary with host speed")

        self.process = kernel.spawn(image, [config.program, *config.args], list(config.env),
                                    config.uid, lock=config.mm_flags.lock_all,
                                    superlock=config.mm_flags.superlock_all)
        bus.publish(RunStart(engine.cycles, self.process.pid, 0, spec.name, self.process.exe_path,
                             frames.total))
        self._ended: Exited | None = None
        ports = KernelPorts(kernel, engine, ram, tuple(SIGNAL_REGISTERS[spec.name]),
                            self.registers, self.set_register)
        self.injector = Injector(bus, ports, frames, store, mm, sched,
                                 lambda: (kernel.steps, kernel.step_started),
                                 lambda text: symbols.resolve(config.program, text,
                                                              image.load_bias),
                                 lambda: self.process.pid, config.seed)
        if config.faults:
            self.arm(config.faults)

    # ---- running ----

    def run(self, until: Until | None = None) -> Stopped | Exited:
        """Run until `until` (or, without it, until every guest process has ended); call
        again to go on from where it stopped. Injected faults act at their own stop points
        on the way, which are not the client's."""
        if self._ended is not None:
            return self._ended
        kernel, engine, injector = self.kernel, self.engine, self.injector
        hit: list[Event] = []
        watcher: Instrument | None = None
        client_cycle = NEVER
        client_pcs: tuple[int, ...] = ()
        if isinstance(until, AtCycle):
            client_cycle = until.cycle
        elif isinstance(until, AfterInstructions):
            if until.count < 0:
                raise ValueError("AfterInstructions needs a count of at least 0")
            kernel.until_instructions = engine.instructions + until.count
        elif isinstance(until, AtPc):
            client_pcs = until.pcs
        elif isinstance(until, OnEvent):
            predicate = until.predicate

            def watch(event: Event) -> None:
                if not hit and predicate(event):
                    hit.append(event)
                    kernel.request_stop()
            watcher = watch
            self.bus.subscribe(watcher, until.kinds)

        def set_stop_points() -> None:
            kernel.until_cycle = min(client_cycle, injector.next_cycle())
            engine.set_breakpoints(sorted({*client_pcs, *injector.pcs()}))
        if injector.stops_needed and injector.next_cycle() <= engine.cycles:
            injector.at_stop(None)          # armed where its moment has come already
        set_stop_points()
        try:
            stopped = self._stop_point(until, hit)
            if stopped is not None:
                return stopped
            while kernel.step():
                requested = kernel.take_stop_request()
                if injector.stops_needed and (requested or engine.cycles >= kernel.until_cycle):
                    stop = kernel.last_stop
                    at_pc = (stop.pc if requested and stop is not None
                             and stop.kind is StopKind.BREAKPOINT_PC else None)
                    injector.at_stop(at_pc)
                    set_stop_points()
                if not requested and not self._reached(until):
                    continue
                stopped = self._stop_point(until, hit)
                if stopped is not None:
                    return stopped
                self._step_over_breakpoint()
        finally:
            kernel.until_cycle = kernel.until_instructions = NEVER
            engine.set_breakpoints([])
            if watcher is not None:
                self.bus.unsubscribe(watcher)
        return self._finish()

    def _step_over_breakpoint(self) -> None:
        """The run goes on from a breakpoint stop: the thread there starts past it."""
        stop = self.kernel.last_stop
        if stop is not None and stop.kind is StopKind.BREAKPOINT_PC:
            thread = self.kernel.loaded_thread()
            if thread is not None and thread.pc == stop.pc:
                thread.step_over = stop.pc
            self.kernel.last_stop = None

    def limit_cycles(self, limit: int) -> None:
        """From now on, end the run (SIGXCPU, exit reason "cycle_limit") when the clock
        reaches `limit` (--max-cycles)."""
        self.kernel.cycle_limit = limit or NEVER

    def arm(self, faults: tuple[FaultSpec, ...], seen: tuple[int, ...] = ()) -> None:
        """Arm injected faults now (trigger i having seen `seen[i]` occurrences so far: a run
        resumed part-way); EmuError if one cannot apply to this machine. Faults that change
        how the memory manager serves a fault make every fault take the ordinary path."""
        self.injector.arm(faults, seen)
        if not self.injector.in_place_allowed:
            self.engine.fastpath.complete_faults_with(None)

    def _reached(self, until: Until | None) -> bool:
        """Whether a cycle or instruction stop point has been reached."""
        if isinstance(until, AtCycle):
            return self.engine.cycles >= until.cycle
        if isinstance(until, AfterInstructions):
            return self.engine.instructions >= self.kernel.until_instructions
        return False

    def _stop_point(self, until: Until | None, hit: list[Event]) -> Stopped | None:
        """The Stopped to return now, if `until` is met."""
        if until is None or not self.kernel.live_guests:
            return None
        engine, kernel = self.engine, self.kernel
        met = (self._reached(until)
               or (isinstance(until, AtPc) and kernel.last_stop is not None
                   and kernel.last_stop.kind is StopKind.BREAKPOINT_PC
                   and kernel.last_stop.pc in until.pcs)
               or (isinstance(until, OnEvent) and bool(hit)))
        if not met:
            return None
        thread = kernel.sched.current
        if thread is None or thread.body is not None:
            thread = kernel.loaded_thread()
        pid, tid, pc = (thread.process.pid, thread.tid, thread.pc) if thread else (0, 0, 0)
        if isinstance(until, AtPc):
            self._step_over_breakpoint()
        return Stopped(until, engine.cycles, engine.instructions, pid, tid, pc,
                       hit[0] if hit else None)

    def _finish(self) -> Exited:
        """The run has ended: publish the CPU's counters (RunEnd) once."""
        if self._ended is None:
            engine = self.engine
            st = engine.fastpath.state
            counts = {**{self.kernel.syscalls.name_of(nr): n
                         for nr, n in engine.fastpath.syscall_counts().items()},
                      **self.kernel.syscalls.counts}
            self.bus.publish(RunEnd(
                engine.cycles, self.process.pid, 0, st.instructions, st.cycles, st.tlb_fills,
                st.tlb_flushes, st.tlb_page_flushes, self.frames.peak,
                tuple(sorted(counts.items())), st.walks, st.walk_cycles,
                tuple(st.walks_by_levels), tuple(st.fills_by_size), self.tables.peak,
                self.tables.in_use, sum(p.space.prefault_unused for p in self.kernel.processes),
                tuple(sorted(engine.tlb_model.stats().items())) if engine.tlb_model else (),
                self.frames.bad_page_states))
            status = self.process.exit
            assert status is not None
            self._ended = Exited(status)
        return self._ended

    def result(self) -> RunResult:
        """Run to the end (if not there yet) and report: exit status and `--stats`."""
        ended = self.run()
        assert isinstance(ended, Exited)
        report = self.stats.report(
            {"wall_seconds": round(time.perf_counter() - self.started, 6)})
        return RunResult(ended.status.shell_code, ended.status.signal, report)

    def close(self) -> None:
        """Free the engine's C-side caches (the machine cannot run any more)."""
        self.engine.fastpath.release()

    # ---- inspecting and changing the guest (no faults, no cycles) ----

    def threads(self) -> list[Thread]:
        """Every guest thread that has not ended."""
        return [t for p in self.kernel.processes if p is not self.kernel.procnto
                for t in p.live_threads()]

    def thread(self, tid: int | None = None) -> Thread:
        """A live guest thread (default: the one that ran last, or the first)."""
        if tid is None:
            loaded = self.kernel.loaded_thread()
            if loaded is not None and loaded.state is not ThreadState.DEAD:
                return loaded
            live = self.threads()
            if not live:
                raise EmuError("no guest thread is alive")
            return live[0]
        found = self.kernel.find_thread(tid)
        if found is None or found.body is not None:
            raise EmuError(f"no guest thread {tid}")
        return found

    def _process(self, pid: int | None) -> Process:
        if pid is None:
            return self.thread().process
        for proc in self.kernel.processes:
            if proc.pid == pid and proc is not self.kernel.procnto:
                return proc
        raise EmuError(f"no guest process {pid}")

    def read_memory(self, vaddr: int, size: int, pid: int | None = None) -> bytes:
        """`size` bytes at `vaddr` as the guest would read them (pages not yet present show
        their backing contents); never faults, ignores protections, charges nothing.
        EmuError where nothing is mapped."""
        try:
            return self._process(pid).mem.inspect(vaddr, size)
        except BadAddress as exc:
            raise EmuError(f"cannot read {size} bytes at {vaddr:#x}: nothing mapped at {exc}") \
                from None

    def write_memory(self, vaddr: int, data: bytes, pid: int | None = None) -> None:
        """Store `data` at `vaddr` in present, unshared pages (whatever their protection);
        never faults, charges nothing. EmuError, with nothing written, otherwise."""
        try:
            self._process(pid).mem.poke(vaddr, bytes(data))
        except BadAddress as exc:
            raise EmuError(f"cannot write {len(data)} bytes at {vaddr:#x}: {exc}") from None

    def registers(self, tid: int | None = None) -> dict[str, int]:
        """A thread's registers, by the names of emu.cpu.arch.SIGNAL_REGISTERS."""
        thread = self.thread(tid)
        arch = thread.process.arch
        if thread is self.kernel.loaded_thread():
            regs = self.engine.read_registers()
        else:
            regs = {}
            for name, reg in SIGNAL_REGISTERS[arch].items():
                value = thread.context.reg_read(reg)
                if isinstance(value, tuple):
                    value = value[0] | (value[1] << 64)
                regs[name] = value
        regs["rip" if arch == "x86_64" else "pc"] = thread.pc
        return regs

    def set_register(self, name: str, value: int, tid: int | None = None) -> None:
        """Set one register of a thread (the PC too: the thread resumes there)."""
        thread = self.thread(tid)
        arch = thread.process.arch
        ids = SIGNAL_REGISTERS[arch]
        if name not in ids:
            raise EmuError(f"unknown {arch} register {name!r}")
        if name == ("rip" if arch == "x86_64" else "pc"):
            thread.pc = value
            return
        if thread is self.kernel.loaded_thread():
            self.engine.write_registers({name: value})
        elif ids[name] in X86_FP_REGISTERS and arch == "x86_64":
            thread.context.reg_write(ids[name], (value & (2**64 - 1), (value >> 64) & 0xFFFF))
        else:
            thread.context.reg_write(ids[name], value)

    # ---- internals ----

    def _read_code(self, vaddr: int, size: int) -> bytes:
        """Guest code of the thread on the CPU (for costing blocks the first time they run)."""
        thread = self.kernel.loaded_thread()
        assert thread is not None
        return thread.process.mem.peek(vaddr, size)

    def _pending_result(self, tid: int) -> int | None:
        """The system-call result a woken thread `tid` is about to return (for --strace)."""
        thread = self.kernel.find_thread(tid)
        return None if thread is None else thread.pending_result

    def _find_process(self, pid: int) -> Process | None:
        """Any process, live or ended, by pid (pids are never reused)."""
        return next((p for p in reversed(self.kernel.processes) if p.pid == pid), None)

    def _follow_processes(self, kernel: Kernel, hooks: ResourceHooks) -> None:
        """Apply the resource rules (limits, names, capabilities, timers, SysV shm) as
        processes fork, exec, exit and fault, and as threads are created."""
        def process(event: Event) -> Process:
            proc = self._find_process(event.pid)
            assert proc is not None, f"event of unknown pid {event.pid}"
            return proc

        def on_event(event: Event) -> None:
            if isinstance(event, FaultEnd):
                hooks.fault_ended(event.pid, event.cause, event.signal)
            elif isinstance(event, ThreadCreate):
                thread = kernel.find_thread(event.tid)
                if thread is not None:
                    hooks.thread_created(thread)
            elif isinstance(event, ProcessCreate):
                hooks.process_created(process(event))
            elif isinstance(event, ProcessExec):
                hooks.process_execed(process(event))
            elif isinstance(event, ProcessExit):
                hooks.process_exited(process(event))
        self.bus.subscribe(on_event, (FaultEnd, ThreadCreate, ProcessCreate, ProcessExec,
                                      ProcessExit))

    def _unknown_syscall(self, name: str, nr: int, arch: str) -> None:
        self.kernel.diagnose(self.kernel.sched.current, f"unimplemented system call {name} "
                                                        f"({nr}) on {arch}: returning ENOSYS")


def run_program(config: RunConfig, events: IO[str] | None = None,
                strace: IO[str] | None = None) -> RunResult:
    """Load and run `config.program` to completion; kernel events go to `events` as JSON lines,
    system calls to `strace` as strace shows them."""
    machine = Machine(config, events=events, strace=strace)
    try:
        return machine.result()
    finally:
        machine.close()


@contextlib.contextmanager
def open_events(path: str | None) -> Iterator[IO[str] | None]:
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
