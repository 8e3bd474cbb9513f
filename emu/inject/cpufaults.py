"""CPU, memory and scheduling faults: applied at stop points of the run.

These faults change the machine's state between two kernel steps, the way ARCHIE, FAIL*
or rainbow change an emulator's: a register, bytes of memory (by virtual address, through
the page tables, so a shared frame is changed for every sharer, as a DRAM fault would
be), physical memory, or the page-table entry that maps an address; an instruction skip
moves the PC past `count` instructions; a hog is a new CPU-bound thread.

Their occurrences: executions of a PC (a breakpoint the machine stops at), system-call
entries of one name or ends of deferred faults of one cause (events: the fault acts at
the stop right after the step that had it), or the clock alone (the first block boundary
at or after `cycle`). A stuck-at value (set0, set1, overwrite) with a `duration` is
asserted again before every block until it runs out; a skip with a `duration` skips every
execution of its PC in that window. (The CPU's block hook does the asserting, in C.)

The machine asks for its stop points (`next_cycle`, `pcs`) and calls `at_stop` after a
step that reached one of them; everything else goes through `MachinePorts`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from emu.errors import EmuError
from emu.inject.armed import ArmedFault, Report
from emu.inject.spec import FOREVER, FaultKind, FaultSpec, Stream
from emu.kernel.process import Thread, ThreadState
from emu.trace.events import EventBus, FaultEnd, SyscallEnter

NEVER = (1 << 64) - 1
_REGISTER_BITS = {"xmm": 128, "v": 128, "fp": 80}
_NARROW = {"fcw": 16, "fsw": 16, "fptag": 16, "fop": 16, "mxcsr": 32, "fpsr": 32,
           "fpcr": 32, "nzcv": 32}


def register_bits(name: str) -> int:
    """The width of a register, by its name in emu.cpu.arch.SIGNAL_REGISTERS."""
    if name in _NARROW:
        return _NARROW[name]
    for prefix, bits in _REGISTER_BITS.items():
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return bits
    return 64


class MachinePorts(Protocol):
    """What CPU faults need of the machine (emu.machine.Machine provides it)."""

    def register_names(self) -> tuple[str, ...]:
        """The register names of the guest architecture."""

    def registers(self, tid: int | None = None) -> dict[str, int]:
        """A thread's registers by name."""

    def set_register(self, name: str, value: int, tid: int | None = None) -> None:
        """Set one register of a thread."""

    def translate(self, vaddr: int, pid: int | None) -> int | None:
        """The physical address `vaddr` maps to in process `pid`, if present."""

    def leaf_entry(self, vaddr: int, pid: int | None) -> int | None:
        """The physical address of the page-table entry that maps `vaddr`, if any."""

    def ram_size(self) -> int:
        """Bytes of physical RAM."""

    def read_physical(self, paddr: int, size: int) -> bytes:
        """Bytes of physical memory."""

    def write_physical(self, paddr: int, data: bytes) -> None:
        """Store bytes in physical memory (dropping translated code and TLB entries built
        from them)."""

    def drop_translations(self, pid: int | None, start: int, end: int) -> None:
        """Drop cached translations of [start, end) of process `pid`."""

    def stick(self, stuck: list[Stuck]) -> None:
        """Assert these before every block, until each one's time runs out."""

    def taint(self) -> None:
        """Memory the kernel keeps its bookkeeping in may have been corrupted."""

    def instructions_end(self, pc: int, count: int, pid: int | None) -> int:
        """The address just after `count` instructions from `pc`."""

    def current_thread(self) -> Thread | None:
        """The guest thread on the CPU, or the one that ran last."""

    def find_thread(self, tid: int) -> Thread | None:
        """A live thread by id."""

    def start_kernel_thread(self, name: str, priority: int,
                            body: Callable[[Thread], None]) -> Thread:
        """A new READY kernel thread running `body`."""

    def now(self) -> int:
        """The simulated clock."""

    def charge(self, cycles: int) -> None:
        """Advance the clock by kernel work."""

    def next_timer(self) -> int | None:
        """When the next timer falls due."""

    def end_kernel_thread(self, thread: Thread) -> None:
        """End a kernel thread."""

    def request_stop(self) -> None:
        """Stop the run at the end of this step."""

    def step(self) -> tuple[int, int]:
        """(the kernel step's number, the cycle it began at)."""


@dataclass(frozen=True)
class Stuck:
    """A lasting stuck-at value: a register, physical memory, or memory at `vaddr` of
    process `pid` (wherever a page is); (value & and_mask) | or_mask until `until`."""

    reg: str | None
    paddr: int | None
    vaddr: int | None
    pid: int | None
    width: int
    and_mask: int
    or_mask: int
    until: int


@dataclass
class _Pending:
    """A fault flagged by an event, applied at the next stop: the thread the event was of."""

    fault: ArmedFault
    tid: int


class CpuFaults:
    """The faults applied at stop points: register, memory and PTE values, skips, hogs."""

    def __init__(self, ports: MachinePorts, bus: EventBus, report: Report,
                 resolve_pc: Callable[[str], int], default_pid: Callable[[], int]) -> None:
        """Faults over the machine's `ports`; `resolve_pc` turns a pc= key (an address or
        SYMBOL[+OFFSET]) into an address, `default_pid` names the first guest process."""
        self.ports = ports
        self.bus = bus
        self.report = report
        self.resolve_pc = resolve_pc
        self.default_pid = default_pid
        self.faults: list[ArmedFault] = []
        self._pc: dict[int, list[ArmedFault]] = {}
        self._address: dict[int, int] = {}          # fault number -> its vaddr= or pte= address
        self._events: list[_Pending] = []
        self._subscribed = False
        self._stuck: list[Stuck] = []

    def add(self, fault: ArmedFault) -> None:
        """Watch one more fault; EmuError if its target cannot exist on this machine."""
        spec = fault.spec
        target = spec.vaddr if spec.vaddr is not None else spec.pte
        if target is not None:
            self._address[fault.number] = (target if isinstance(target, int)
                                           else self.resolve_pc(target))
        self._check_target(fault)
        self.faults.append(fault)
        if spec.stream is Stream.PC:
            assert spec.pc is not None
            self._pc.setdefault(self.resolve_pc(spec.pc), []).append(fault)
        elif spec.stream in (Stream.SYSCALL, Stream.FAULT_END) and not self._subscribed:
            self._subscribed = True
            self.bus.subscribe(self._event, (SyscallEnter, FaultEnd))

    def retire(self, keep: list[ArmedFault]) -> None:
        """Watch only the faults of `keep`."""
        kept = {id(f) for f in keep}
        self.faults = [f for f in self.faults if id(f) in kept]
        self._pc = {pc: [f for f in faults if id(f) in kept] for pc, faults in self._pc.items()}
        self._pc = {pc: faults for pc, faults in self._pc.items() if faults}
        self._events = [p for p in self._events if id(p.fault) in kept]

    def _check_target(self, fault: ArmedFault) -> None:
        spec = fault.spec
        where = f"fault {fault.number} ({spec.text()})"
        if spec.reg is not None:
            names = self.ports.register_names()
            if spec.reg not in names:
                raise EmuError(f"{where}: no register {spec.reg!r} (known: {', '.join(names)})")
            if spec.bits.bit_length() > register_bits(spec.reg):
                raise EmuError(f"{where}: {spec.reg} has {register_bits(spec.reg)} bits")
            if spec.value is not None and spec.value.bit_length() > register_bits(spec.reg):
                raise EmuError(f"{where}: value does not fit in {spec.reg}")
            if spec.duration and register_bits(spec.reg) > 64:
                raise EmuError(f"{where}: a lasting fault needs a register of at most 64 bits")
            return
        width = spec.memory_width
        if spec.kind in (FaultKind.SKIP, FaultKind.HOG):
            return
        if spec.bits.bit_length() > 8 * width or (spec.value or 0).bit_length() > 8 * width:
            raise EmuError(f"{where}: the bits do not fit in width={width}")
        if spec.paddr is not None and spec.paddr + width > self.ports.ram_size():
            raise EmuError(f"{where}: paddr {spec.paddr:#x} is past the end of RAM "
                           f"({self.ports.ram_size():#x} bytes)")
        address = self._address.get(fault.number, spec.paddr)
        if address is not None and address % 4096 + width > 4096:
            raise EmuError(f"{where}: the {width} bytes at {address:#x} cross a page boundary")

    # ---- stop points ----

    def next_cycle(self) -> int:
        """The next cycle the run must stop at for these faults (NEVER if none)."""
        best = NEVER
        for fault in self.faults:
            trigger, spec = fault.trigger, fault.spec
            if trigger.fired_at is None:
                if spec.stream is Stream.CLOCK and spec.cycle is not None \
                        and not fault.recording:
                    best = min(best, spec.cycle)
        return best

    def pcs(self) -> tuple[int, ...]:
        """Addresses the run must stop at before executing them."""
        now = self.ports.now()
        return tuple(sorted(pc for pc, faults in self._pc.items()
                            if any(f.trigger.fired_at is None or _rehits(f.spec)
                                   and f.trigger.active(now) for f in faults)))

    def _event(self, event: SyscallEnter | FaultEnd) -> None:
        """An occurrence of a system-call or fault stream: count it, and if it is hit,
        apply the fault at the stop that ends this step."""
        now = event.ts
        step = self.ports.step()
        for fault in self.faults:
            spec = fault.spec
            if isinstance(event, SyscallEnter):
                if spec.stream is not Stream.SYSCALL or event.name != spec.syscall:
                    continue
            elif spec.stream is not Stream.FAULT_END or event.cause != spec.fault \
                    or event.origin != "user" or not fault.trigger.keeps(addr=event.vaddr):
                continue                    # (a kernel copy-in/out's fault is not deferred)
            if self._hit(fault, now, step):
                self._events.append(_Pending(fault, event.tid))
                self.ports.request_stop()

    def at_stop(self, breakpoint_pc: int | None) -> None:
        """A stop point was reached (`breakpoint_pc`: the run stopped before executing it):
        apply every fault that is due."""
        now = self.ports.now()
        step = self.ports.step()
        pending, self._events = self._events, []
        for item in pending:
            self._apply(item.fault, self.ports.find_thread(item.tid))
        if breakpoint_pc is not None:
            thread = self.ports.current_thread()
            for fault in self._pc.get(breakpoint_pc, ()):
                if self._hit(fault, now, step):
                    self._apply(fault, thread)
        for fault in self.faults:
            trigger, spec = fault.trigger, fault.spec
            if fault.recording:
                continue
            if trigger.fired_at is None and spec.stream is Stream.CLOCK \
                    and spec.cycle is not None and now >= spec.cycle:
                trigger.fired_at = now
                trigger.seen += 1
                self._apply(fault, self.ports.current_thread())

    @staticmethod
    def _hit(fault: ArmedFault, now: int, step: tuple[int, int]) -> bool:
        """Offer an occurrence: whether the fault acts on it — when it fires, and, for a
        skip with a duration, at every occurrence while the duration lasts (a stuck-at
        value is asserted by the block hook meanwhile; a hog starts once)."""
        fired_before = fault.trigger.fired_at is not None
        hit = fault.trigger.offer(now, step)
        return hit and (not fired_before or _rehits(fault.spec))

    # ---- applying ----

    def _apply(self, fault: ArmedFault, thread: Thread | None) -> None:
        kind = fault.spec.kind
        if kind is FaultKind.SKIP:
            self._skip(fault, thread)
        elif kind is FaultKind.HOG:
            self._hog(fault, thread)
        else:
            self._set_value(fault, thread, quiet=False)

    def _skip(self, fault: ArmedFault, thread: Thread | None) -> None:
        if thread is None or thread.state is ThreadState.DEAD:
            self.report(fault, thread, "no thread to skip instructions of")
            return
        count = fault.spec.count or 1
        pid = thread.process.pid
        try:
            target = self.ports.instructions_end(thread.pc, count, pid)
        except (EmuError, ValueError) as exc:
            self.report(fault, thread, f"cannot decode {count} instruction(s) at "
                                       f"{thread.pc:#x}: {exc}")
            return
        self.report(fault, thread, f"skipped {count} instruction(s) at {thread.pc:#x}: "
                                   f"resumes at {target:#x}")
        self.ports.set_register("pc" if "pc" in self.ports.register_names() else "rip",
                                target, thread.tid)

    def _hog(self, fault: ArmedFault, thread: Thread | None) -> None:
        spec = fault.spec
        prio = spec.prio or 10
        end = self.ports.now() + spec.duration if spec.duration else FOREVER
        ports = self.ports

        def body(hog: Thread) -> None:
            now = ports.now()
            if now >= end:
                ports.end_kernel_thread(hog)
                return
            due = ports.next_timer()
            run = min(max(hog.slice_left, 1), end - now,
                      max(1, due - now) if due is not None else NEVER)
            ports.charge(run)
        hog = ports.start_kernel_thread("hog", prio, body)
        self.report(fault, thread, f"CPU-bound thread {hog.tid} at priority {prio} started"
                    + (f" for {spec.duration} cycles" if spec.duration else ""))

    def _stick(self, fault: ArmedFault, reg: str | None, paddr: int | None, vaddr: int | None,
               pid: int | None, width: int) -> None:
        """Keep a set0/set1/overwrite fault with a duration asserted before every block
        (by the CPU's block hook) until its duration runs out."""
        spec = fault.spec
        bits = 64 if reg is not None else 8 * width
        full = (1 << bits) - 1
        if spec.kind is FaultKind.SET0:
            and_mask, or_mask = full & ~spec.bits, 0
        elif spec.kind is FaultKind.SET1:
            and_mask, or_mask = full, spec.bits
        else:
            and_mask, or_mask = 0, (spec.value or 0) & full
        assert fault.trigger.fired_at is not None
        until = min(fault.trigger.fired_at + spec.duration, NEVER)
        now = self.ports.now()
        self._stuck = [s for s in self._stuck if s.until > now]
        self._stuck.append(Stuck(reg, paddr, vaddr, pid, width, and_mask, or_mask, until))
        self.ports.stick(self._stuck)

    def _set_value(self, fault: ArmedFault, thread: Thread | None, quiet: bool) -> None:
        spec = fault.spec
        if spec.reg is not None:
            tid = spec.tid if spec.tid is not None else (thread.tid if thread else None)
            try:
                old = self.ports.registers(tid)[spec.reg]
            except EmuError as exc:
                if not quiet:
                    self.report(fault, thread, f"no effect: {exc}")
                return
            new = _changed(spec.kind, old, spec.bits, spec.value, register_bits(spec.reg))
            if new != old:
                self.ports.set_register(spec.reg, new, tid)
            if _lasting(spec):
                self._stick(fault, spec.reg, None, None, None, 8)
            if not quiet:
                self.report(fault, thread if thread is None or tid is None else
                            self.ports.find_thread(tid) or thread,
                            f"{spec.reg} {old:#x} -> {new:#x}")
            return
        pid = spec.pid if spec.pid is not None else (
            thread.process.pid if thread is not None else self.default_pid())
        width = spec.memory_width
        if spec.paddr is not None:
            paddr: int | None = spec.paddr
            where = f"paddr {spec.paddr:#x}"
        elif spec.vaddr is not None:
            vaddr = self._address[fault.number]
            paddr = self.ports.translate(vaddr, pid)
            where = f"vaddr {vaddr:#x}"
        else:
            vaddr = self._address[fault.number]
            paddr = self.ports.leaf_entry(vaddr, pid)
            where = f"the PTE of {vaddr:#x}"
        lasting = _lasting(spec)
        if paddr is None:
            if lasting and spec.vaddr is not None:
                self._stick(fault, None, None, self._address[fault.number], pid, width)
                self.report(fault, thread, f"{where} of pid {pid} stuck from when a page is "
                                           "there")
            elif not quiet:
                self.report(fault, thread, f"no effect: {where} is not mapped in pid {pid}")
            return
        old = int.from_bytes(self.ports.read_physical(paddr, width), "little")
        new = _changed(spec.kind, old, spec.bits, spec.value, 8 * width)
        if new != old:
            if spec.vaddr is None:          # a page-table entry, or memory that may hold one
                self.ports.taint()
            self.ports.write_physical(paddr, new.to_bytes(width, "little"))
            if spec.pte is not None:
                page = self._address[fault.number] & ~0xFFF
                self.ports.drop_translations(pid, page, page + 0x1000)
        if lasting:
            if spec.vaddr is not None:          # the cell of whatever page is there
                self._stick(fault, None, None, self._address[fault.number], pid, width)
            else:
                self._stick(fault, None, paddr, None, None, width)
        if not quiet:
            self.report(fault, thread, f"{where} (paddr {paddr:#x}, {width} byte(s)): "
                                       f"{old:#x} -> {new:#x}")


def _rehits(spec: FaultSpec) -> bool:
    """Whether a fault acts again at its occurrences within its duration (a skip)."""
    return spec.kind is FaultKind.SKIP


def _lasting(spec: FaultSpec) -> bool:
    """Whether a fault is a stuck-at value asserted again before every block."""
    return bool(spec.duration) and spec.kind in (FaultKind.SET0, FaultKind.SET1,
                                                 FaultKind.OVERWRITE)


def _changed(kind: FaultKind, old: int, bits: int, value: int | None, width: int) -> int:
    """`old` with the fault's change applied, kept to `width` bits."""
    mask = (1 << width) - 1
    if kind is FaultKind.BITFLIP:
        return (old ^ bits) & mask
    if kind is FaultKind.SET0:
        return old & ~bits & mask
    if kind is FaultKind.SET1:
        return (old | bits) & mask
    assert kind is FaultKind.OVERWRITE and value is not None
    return value & mask
