"""The machine's side of `MachinePorts`: what CPU faults may do to a run, over the
kernel, the CPU engine and physical RAM (built by emu.machine.Machine)."""
from __future__ import annotations

from typing import Callable

from emu.cpu.arch import SIGNAL_REGISTERS
from emu.cpu.engine import CpuEngine
from emu.cpu.fastpath import StuckValue
from emu.errors import EmuError
from emu.inject.cpufaults import Stuck
from emu.kernel.kernel import Kernel
from emu.kernel.process import Process, Thread, ThreadState
from emu.mm.frames import PAGE_SHIFT, PhysicalMemory
from emu.mm.uaccess import BadAddress


class KernelPorts:
    """MachinePorts over one machine's kernel, engine and RAM."""

    def __init__(self, kernel: Kernel, engine: CpuEngine, ram: PhysicalMemory,
                 register_names: tuple[str, ...],
                 registers: Callable[[int | None], dict[str, int]],
                 set_register: Callable[[str, int, int | None], None]) -> None:
        """Ports over these parts; register access is the Machine's own."""
        self.kernel = kernel
        self.engine = engine
        self.ram = ram
        self._names = register_names
        self._registers = registers
        self._set_register = set_register

    def register_names(self) -> tuple[str, ...]:
        """The register names of the guest architecture."""
        return self._names

    def registers(self, tid: int | None = None) -> dict[str, int]:
        """A thread's registers by name."""
        return self._registers(tid)

    def set_register(self, name: str, value: int, tid: int | None = None) -> None:
        """Set one register of a thread."""
        self._set_register(name, value, tid)

    def _process(self, pid: int | None) -> Process | None:
        for proc in self.kernel.processes:
            if proc.pid == pid and proc.alive:
                return proc
        return None

    def translate(self, vaddr: int, pid: int | None) -> int | None:
        """The physical address `vaddr` maps to in process `pid`, if present."""
        proc = self._process(pid)
        if proc is None:
            return None
        pte = proc.space.page_table.lookup(vaddr >> PAGE_SHIFT)
        return None if pte is None else (pte.frame << PAGE_SHIFT) | (vaddr & 0xFFF)

    def leaf_entry(self, vaddr: int, pid: int | None) -> int | None:
        """The physical address of the page-table entry that maps `vaddr` in `pid`."""
        proc = self._process(pid)
        return None if proc is None else proc.space.page_table.leaf_address(vaddr >> PAGE_SHIFT)

    def ram_size(self) -> int:
        """Bytes of physical RAM."""
        return self.ram.size

    def read_physical(self, paddr: int, size: int) -> bytes:
        """Bytes of physical memory."""
        return self.ram.read(paddr, size)

    def write_physical(self, paddr: int, data: bytes) -> None:
        """Store bytes in physical memory; translated code of the frame goes (the TLB keeps
        what it cached, as a real one would)."""
        self.ram.write(paddr, data)
        frames = self.kernel.frames
        for frame in range(paddr >> PAGE_SHIFT, ((paddr + len(data) - 1) >> PAGE_SHIFT) + 1):
            if frame < frames.total and frames.is_code(frame):
                self.engine.invalidate_code(frame)

    def stick(self, stuck: list[Stuck]) -> None:
        """Assert these before every block, until each one's time runs out."""
        ids = SIGNAL_REGISTERS[self.engine.spec.name]
        values = []
        for s in stuck:
            proc = self._process(s.pid) if s.vaddr is not None else None
            if s.vaddr is not None and proc is None:
                continue                        # its process is gone
            values.append(StuckValue(
                reg=ids[s.reg] if s.reg is not None else -1, paddr=s.paddr or 0,
                vaddr=s.vaddr or 0, table=proc.space.page_table.handle if proc else None,
                width=s.width, and_mask=s.and_mask, or_mask=s.or_mask, until=s.until))
        self.engine.set_stuck(values)

    def taint(self) -> None:
        """The kernel's bookkeeping may be corrupted: inconsistencies are counted, not bugs."""
        self.kernel.frames.tainted = True

    def drop_translations(self, pid: int | None, start: int, end: int) -> None:
        """Drop cached translations of [start, end) of process `pid`."""
        proc = self._process(pid)
        if proc is not None:
            proc.space.translations_changed(start, end)

    def instructions_end(self, pc: int, count: int, pid: int | None) -> int:
        """The address just after `count` instructions from `pc` (in `pid`'s memory)."""
        proc = self._process(pid)
        if proc is None:
            raise EmuError(f"no process {pid}")
        width = 4 * count if proc.arch == "aarch64" else 15 * count
        code, addr = b"", pc
        while len(code) < width:            # up to the first unmapped page
            n = min(width - len(code), 4096 - addr % 4096)
            try:
                code += proc.mem.inspect(addr, n)
            except BadAddress:
                break
            addr += n
        return pc + self.engine.instruction_end(code, pc, count)

    def current_thread(self) -> Thread | None:
        """The guest thread on the CPU, or the one that ran last."""
        thread = self.kernel.loaded_thread()
        return thread if thread is not None and thread.state is not ThreadState.DEAD else None

    def find_thread(self, tid: int) -> Thread | None:
        """A live thread by id."""
        return self.kernel.find_thread(tid)

    def start_kernel_thread(self, name: str, priority: int,
                            body: Callable[[Thread], None]) -> Thread:
        """A new READY kernel thread running `body`."""
        return self.kernel.start_kernel_thread(name, priority, body)

    def end_kernel_thread(self, thread: Thread) -> None:
        """End a kernel thread."""
        self.kernel.sched.kill(thread)

    def now(self) -> int:
        """The simulated clock."""
        return self.engine.cycles

    def charge(self, cycles: int) -> None:
        """Advance the clock by kernel work."""
        self.engine.charge(cycles)

    def next_timer(self) -> int | None:
        """When the next timer falls due."""
        return self.kernel.timers.next_due()

    def request_stop(self) -> None:
        """Stop the run at the end of this step."""
        self.kernel.request_stop()

    def step(self) -> tuple[int, int]:
        """(the kernel step's number, the cycle it began at)."""
        return self.kernel.steps, self.kernel.step_started
