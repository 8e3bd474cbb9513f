"""The injector of one run: the faults of its plan, armed, and every hit reported.

The machine builds it with the kernel's parts and its own ports, and arms the run's
faults after the program is loaded, before its first instruction (`arm`). A campaign
may arm faults later instead, in a run resumed from a snapshot, telling how many
occurrences each trigger had seen by then (`seen`); or have a golden run only record
the occurrences of triggers (`record`), never firing.

Every hit is an `InjectFired` event (cycle, pid, tid, pc, what it did); every armed
fault an `InjectArmed` event. `--stats` counts both (`inject.armed`, `inject.fired`).
"""
from __future__ import annotations

from typing import Callable, Sequence

from emu.inject.armed import ArmedFault, Subject
from emu.inject.cpufaults import NEVER, CpuFaults, MachinePorts
from emu.inject.kernelfaults import KernelFaults, StepClock, subject_ids
from emu.inject.spec import FaultSpec
from emu.inject.trigger import Occurrence, Trigger
from emu.kernel.io import BackingStore
from emu.kernel.process import Thread
from emu.kernel.sched import Scheduler
from emu.mm.frames import FrameAllocator
from emu.servers.procnto import MemoryManager
from emu.trace.events import EventBus, InjectArmed, InjectFired


class Injector:
    """The armed faults of one run."""

    def __init__(self, bus: EventBus, ports: MachinePorts, frames: FrameAllocator,
                 store: BackingStore, mm: MemoryManager, sched: Scheduler,
                 step: StepClock, resolve_pc: Callable[[str], int],
                 default_pid: Callable[[], int], seed: int) -> None:
        """An injector with nothing armed, over the machine's parts."""
        self.bus = bus
        self.ports = ports
        self.seed = seed
        self.faults: list[ArmedFault] = []
        self.kernel_faults = KernelFaults(frames, store, mm, sched, ports.find_thread,
                                          ports.now, step, self._report)
        self.cpu = CpuFaults(ports, bus, self._report, resolve_pc, default_pid)

    def arm(self, specs: Sequence[FaultSpec], seen: Sequence[int] = ()) -> None:
        """Arm `specs` as faults 1, 2, ... of the plan (after any armed before); trigger i
        starts as having seen `seen[i]` occurrences (a run resumed part-way)."""
        now = self.ports.now()
        for i, spec in enumerate(specs):
            fault = self._add(spec, seen[i] if i < len(seen) else 0, record=False)
            if self.bus.wants(InjectArmed):
                self.bus.publish(InjectArmed(now, 0, 0, fault.number, spec.kind.value,
                                             spec.text()))

    def record(self, specs: Sequence[FaultSpec]) -> list[list[Occurrence]]:
        """Watch the triggers of `specs` without ever firing; the lists fill with each one's
        occurrences as the run goes (a golden run)."""
        logs = []
        for spec in specs:
            log = self._add(spec, 0, record=True).trigger.record
            assert log is not None
            logs.append(log)
        return logs

    def recorded(self, index: int) -> int:
        """How many occurrences the `index`-th recording trigger (of `record`'s order) has
        seen so far."""
        return [f for f in self.faults if f.recording][index].trigger.seen

    def retire_recorders(self) -> None:
        """Stop every recording trigger (a run forked from a recording one, which arms its
        own faults instead)."""
        keep = [f for f in self.faults if not f.recording]
        self.kernel_faults.retire(keep)
        self.cpu.retire(keep)
        self.faults = keep

    def _add(self, spec: FaultSpec, seen: int, record: bool) -> ArmedFault:
        number = len(self.faults) + 1
        fault = ArmedFault(number, spec, Trigger(spec, self.seed, seen=seen,
                                                 record=[] if record else None))
        if spec.kind.family in ("cpu", "sched"):
            self.cpu.add(fault)
        else:
            self.kernel_faults.add(fault)
        self.faults.append(fault)
        return fault

    # ---- what the machine asks ----

    @property
    def watching(self) -> bool:
        """Whether any fault is armed or recording."""
        return bool(self.faults)

    @property
    def stops_needed(self) -> bool:
        """Whether faults applied at stop points are watched."""
        return bool(self.cpu.faults)

    @property
    def in_place_allowed(self) -> bool:
        """Whether faults may still be completed inside the fill hook (no armed memory-
        manager or frame fault could change how one goes)."""
        return not self.kernel_faults.armed

    def next_cycle(self) -> int:
        """The next cycle the run must stop at for a fault (NEVER if none)."""
        return self.cpu.next_cycle() if self.cpu.faults else NEVER

    def pcs(self) -> tuple[int, ...]:
        """Addresses the run must stop at for a fault."""
        return self.cpu.pcs() if self.cpu.faults else ()

    def at_stop(self, breakpoint_pc: int | None) -> None:
        """The run stopped at a stop point of the faults: apply what is due."""
        self.cpu.at_stop(breakpoint_pc)

    def fired(self) -> list[ArmedFault]:
        """The armed faults that fired."""
        return [f for f in self.faults if f.trigger.fired_at is not None]

    # ---- reporting ----

    def _report(self, fault: ArmedFault, thread: Subject | Thread | None, detail: str) -> None:
        if self.bus.wants(InjectFired):
            pid, tid, pc = subject_ids(thread)
            self.bus.publish(InjectFired(self.ports.now(), pid, tid, fault.number,
                                         fault.spec.kind.value, pc, detail))
