"""Fault resolution: decide what a fault the fast path could not resolve needs.

`resolve_fault` never blocks and never changes memory (Zircon's PageRequest style).
It returns one of three distinct cases:

- `Resolved(cause)`: the translation is already there (retry the access);
- `NeedsPage(request)`: a `PageRequest` for the pager to carry out — perhaps after
  the backing store was read (`request.needs_read`); the caller waits, then retries;
- `Deliver(signal, code, addr)`: the thread gets SIGSEGV or SIGBUS.

The pager's `service` answers with the same kind of result (`Resolved` or `Deliver`).
"""
from __future__ import annotations

import enum
import signal
from dataclasses import dataclass

from emu.cpu.fastpath import lib
from emu.mm.frames import PAGE_SHIFT
from emu.mm.vmspace import PROT_EXEC, PROT_READ, PROT_WRITE, AddressSpace, Mapping, Share


class Access(enum.IntEnum):
    """The kind of memory access that faulted (values are Unicorn's)."""

    READ = 16
    WRITE = 17
    FETCH = 18

    @property
    def prot(self) -> int:
        """The PROT_* bit this access needs."""
        return _ACCESS_PROT[self]


_ACCESS_PROT = {Access.READ: PROT_READ, Access.WRITE: PROT_WRITE, Access.FETCH: PROT_EXEC}
ACCESS_BY_VALUE = {a.value: a for a in Access}
assert (Access.READ, Access.WRITE, Access.FETCH) == (
    lib.FP_ACCESS_READ, lib.FP_ACCESS_WRITE, lib.FP_ACCESS_FETCH), "fastpath.h disagrees"


class FaultCause(enum.Enum):
    """Why a fault happened; the keys of `faults.by_cause` in the stats."""

    ZERO_FILL = "zero_fill"         # committed anonymous page set up on first touch
    LAZY_ALLOC = "lazy_alloc"       # MAP_LAZY / MAP_NORESERVE page: frame allocated now
    PAGE_IN = "page_in"             # page read from a file
    CACHED = "cached"               # file page already in the page cache: mapped, no I/O
    WRITE_TRACK = "write_track"     # first write to a present, not yet modified page
    COW = "cow"                     # private copy made of a shared page
    SIGBUS = "sigbus"
    SIGSEGV = "sigsegv"
    SPURIOUS = "spurious"           # translation already present (another fault fixed it)


# si_code values (Linux asm-generic/siginfo.h)
SEGV_MAPERR = 1
SEGV_ACCERR = 2
BUS_ADRERR = 2
BUS_OBJERR = 3
SI_CODE_NAMES = {(signal.SIGSEGV, SEGV_MAPERR): "SEGV_MAPERR", (signal.SIGSEGV, SEGV_ACCERR): "SEGV_ACCERR",
                 (signal.SIGBUS, BUS_ADRERR): "BUS_ADRERR", (signal.SIGBUS, BUS_OBJERR): "BUS_OBJERR"}


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Work for the pager: make the page at `vaddr` of `mapping` present."""

    vaddr: int
    access: Access
    mapping: Mapping
    cause: FaultCause
    needs_read: bool = False        # the page must first be read from the backing store


@dataclass(frozen=True, slots=True)
class Resolved:
    """Nothing (more) to do: the page is there with the access allowed; `cause` says what
    made it so (SPURIOUS: another fault had fixed it already)."""

    cause: FaultCause


@dataclass(frozen=True, slots=True)
class NeedsPage:
    """The pager must make the page present (after a read from the backing store if
    `request.needs_read`)."""

    request: PageRequest

    @property
    def cause(self) -> FaultCause:
        """What kind of page work it is."""
        return self.request.cause


@dataclass(frozen=True, slots=True)
class Deliver:
    """The fault cannot be resolved: the thread gets `signal` with `code`, at `addr`."""

    signal: int
    code: int
    addr: int
    cause: FaultCause


Resolution = Resolved | NeedsPage | Deliver
"""What the resolver decided."""


def resolve_fault(space: AddressSpace, vaddr: int, access: Access) -> Resolution:
    """Decide what the fault at `vaddr` needs; never blocks, never changes memory."""
    mapping = space.find(vaddr)
    if mapping is None:
        return Deliver(signal.SIGSEGV, SEGV_MAPERR, vaddr, FaultCause.SIGSEGV)
    if not mapping.prot & access.prot:
        return Deliver(signal.SIGSEGV, SEGV_ACCERR, vaddr, FaultCause.SIGSEGV)
    pte = space.page_table.lookup(vaddr >> PAGE_SHIFT)
    obj = mapping.obj
    needs_read = False
    if pte is not None:
        if pte.perms & access.prot:
            return Resolved(FaultCause.SPURIOUS)
        # present but read-only in a writable mapping: the page's first write — a private
        # mapping whose frame is shared (with the page cache, or after fork) gets its own copy
        shared = mapping.share is Share.PRIVATE and space.frame_shared(pte.frame)
        cause = FaultCause.COW if shared else FaultCause.WRITE_TRACK
    elif obj.cached:
        offset = mapping.object_offset(vaddr)
        if offset >= obj.file.size:                 # wholly past the end of the file
            return Deliver(signal.SIGBUS, BUS_ADRERR, vaddr, FaultCause.SIGBUS)
        needs_read = not obj.file.is_cached(offset >> PAGE_SHIFT)
        if mapping.share is Share.PRIVATE and access is Access.WRITE:
            cause = FaultCause.COW
        else:
            cause = FaultCause.PAGE_IN if needs_read else FaultCause.CACHED
    elif obj.is_file:
        cause, needs_read = FaultCause.PAGE_IN, True
    else:
        cause = FaultCause.LAZY_ALLOC if mapping.lazy else FaultCause.ZERO_FILL
    return NeedsPage(PageRequest(vaddr, access, mapping, cause, needs_read))


def initial_perms(mapping: Mapping, access: Access) -> tuple[int, bool]:
    """(PTE permissions, modified) for a page being set up by `access`.

    A page set up by a read or fetch is mapped read-only even in a writable
    mapping, so that its first write faults and marks it modified (write
    tracking); a page set up by a write is writable and modified at once.
    """
    if access is Access.WRITE:
        return mapping.prot, True
    return mapping.prot & ~PROT_WRITE, False
