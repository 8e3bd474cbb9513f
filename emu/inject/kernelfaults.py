"""Operating-system faults: the memory manager's and the backing store's.

These act inside the kernel operation they break, so they are hooks the kernel calls at
each occurrence, installed only while a fault of their kind is armed (free otherwise):

- `FrameAllocator.refuse` — each demand for memory that may fail: a commitment at mmap
  (ENOMEM), a lazy allocation, a copy-on-write copy, a page-cache page (SIGBUS/BUS_OBJERR);
- `BackingStore.faults` — each transfer: reads (page-ins, populate, read(2) of a regular
  file) and writes (msync, write-back at munmap/exit, fsync) may fail with EIO; timed
  transfers may take longer;
- `MemoryManager.faults` — each fault pulse (lost, then re-sent after `timeout`) and each
  fault procnto takes (held back `cycles` before it serves it).
"""
from __future__ import annotations

import errno as errno_mod
from typing import Callable

from emu.inject.armed import ArmedFault, Report, Subject
from emu.inject.spec import FaultKind
from emu.kernel.faultjob import FaultJob
from emu.kernel.io import BackingStore
from emu.kernel.process import Thread
from emu.kernel.sched import Scheduler
from emu.mm.fault import resolve_fault
from emu.mm.frames import FrameAllocator
from emu.servers.procnto import MemoryManager

DEFAULT_PULSE_TIMEOUT = 1_000_000     # cycles until a lost pulse is sent again (1 ms at 1 GHz)
_READS = ("page_in", "populate", "read")
StepClock = Callable[[], tuple[int, int]]
"""() -> (the kernel step's number, the cycle it began at)."""


class KernelFaults:
    """The hooks of the memory manager's and backing store's faults."""

    def __init__(self, frames: FrameAllocator, store: BackingStore, mm: MemoryManager,
                 sched: Scheduler, find_thread: Callable[[int], Thread | None],
                 now: Callable[[], int], step: StepClock, report: Report) -> None:
        """Hooks over these kernel parts; `report` publishes each hit."""
        self.frames = frames
        self.store = store
        self.mm = mm
        self.sched = sched
        self.find_thread = find_thread
        self.now = now
        self.step = step
        self.report = report
        self.faults: dict[FaultKind, list[ArmedFault]] = {}

    def add(self, fault: ArmedFault) -> None:
        """Watch one more fault (installing the hook its kind needs)."""
        self.faults.setdefault(fault.spec.kind, []).append(fault)
        kind = fault.spec.kind
        if kind is FaultKind.FRAME_ALLOC:
            self.frames.refuse = self._frame_demand
        elif kind.family == "store":
            self.store.faults = self
        else:
            self.mm.faults = self

    def retire(self, keep: list[ArmedFault]) -> None:
        """Watch only the faults of `keep` (hooks no fault needs any more are removed)."""
        kept = {id(f) for f in keep}
        self.faults = {kind: [f for f in faults if id(f) in kept]
                       for kind, faults in self.faults.items()}
        self.faults = {kind: faults for kind, faults in self.faults.items() if faults}
        if FaultKind.FRAME_ALLOC not in self.faults:
            self.frames.refuse = None
        if not any(kind.family == "store" for kind in self.faults):
            self.store.faults = None
        if not any(kind.family == "mm" and kind is not FaultKind.FRAME_ALLOC
                   for kind in self.faults):
            self.mm.faults = None

    @property
    def armed(self) -> bool:
        """Whether a fault that can fire (not only record) is watched: faults completed in
        place inside the fill hook must then take the ordinary path."""
        return any(not f.recording for faults in self.faults.values() for f in faults)

    def _hits(self, kind: FaultKind, **attrs: object) -> list[ArmedFault]:
        """Offer one occurrence to every fault of `kind`; those it hits."""
        hit = []
        now = self.now()
        step = self.step()
        for fault in self.faults.get(kind, ()):
            if fault.trigger.keeps(**attrs) and fault.trigger.offer(now, step):  # type: ignore[arg-type]
                hit.append(fault)
        return hit

    # ---- frames ----

    def _frame_demand(self, purpose: str, vaddr: int, pages: int) -> bool:
        """FrameAllocator.refuse: whether this demand fails."""
        hit = self._hits(FaultKind.FRAME_ALLOC, cause=purpose, addr=vaddr)
        for fault in hit:
            self.report(fault, self._on_behalf(), f"{purpose} of {pages} page(s) at "
                                                   f"{vaddr:#x} refused")
        return bool(hit)

    def _on_behalf(self) -> Thread | None:
        """The thread memory is being found for: the running one, or the one whose fault the
        running memory-manager thread serves."""
        thread = self.sched.current
        if thread is not None and thread.body is not None:
            job = thread.job
            return job.thread if isinstance(job, FaultJob) else None
        return thread

    # ---- the backing store (StoreFaults) ----

    def transfer(self, pid: int, tid: int, write: bool, reason: str, file: str,
                 timed: bool) -> tuple[int, int]:
        """(errno, extra cycles) of one transfer on behalf of (pid, tid)."""
        kind = FaultKind.WRITE_ERROR if write else FaultKind.READ_ERROR
        error = 0
        if write or reason in _READS:
            for fault in self._hits(kind, file=file):
                error = fault.spec.errno or errno_mod.EIO
                self.report(fault, self.find_thread(tid),
                            f"{reason} of {file or 'memory'} fails: "
                            f"{errno_mod.errorcode.get(error, error)}")
        extra = 0
        if timed:
            for fault in self._hits(FaultKind.LATENCY, file=file, write=write):
                extra += fault.spec.cycles or 0
                self.report(fault, self.find_thread(tid),
                            f"{reason} of {file or 'memory'} takes {fault.spec.cycles} "
                            "cycles more")
        return error, extra

    # ---- the memory manager (ServerFaults) ----

    def _fault_attrs(self, job: FaultJob, kind: FaultKind) -> dict[str, object]:
        """What a fault's occurrence is known by: its cause (only if a filter asks) and
        address."""
        attrs: dict[str, object] = {"addr": job.vaddr}
        if any(f.spec.cause is not None for f in self.faults.get(kind, ())):
            verdict = job.decided or resolve_fault(job.space, job.vaddr, job.access)
            attrs["cause"] = verdict.cause.value
        return attrs

    def pulse_lost(self, job: FaultJob) -> int:
        """Cycles until the pulse of `job` is sent again (0: it is not lost)."""
        if FaultKind.PULSE_LOSS not in self.faults:
            return 0
        timeout = 0
        for fault in self._hits(FaultKind.PULSE_LOSS, **self._fault_attrs(job,
                                                                          FaultKind.PULSE_LOSS)):
            timeout = max(timeout, fault.spec.timeout or DEFAULT_PULSE_TIMEOUT)
            self.report(fault, job.thread, f"pulse of the fault at {job.vaddr:#x} lost; "
                                           f"sent again in {timeout} cycles")
        return timeout

    def serve_delay(self, job: FaultJob) -> int:
        """Cycles procnto is held back before serving `job`."""
        if FaultKind.MM_DELAY not in self.faults:
            return 0
        delay = 0
        for fault in self._hits(FaultKind.MM_DELAY, **self._fault_attrs(job, FaultKind.MM_DELAY)):
            delay += fault.spec.cycles or 0
            self.report(fault, job.thread, f"procnto held back {fault.spec.cycles} cycles "
                                           f"before serving the fault at {job.vaddr:#x}")
        return delay


def subject_ids(thread: Subject | None) -> tuple[int, int, int]:
    """(pid, tid, pc) of the thread a fault hit (zeros if none)."""
    if thread is None:
        return 0, 0, 0
    return getattr(thread.process, "pid", 0), thread.tid, thread.pc
