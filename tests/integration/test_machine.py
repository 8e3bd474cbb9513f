"""The Machine's step API, driven in this process: stop at a cycle, after N instructions, at a
PC or on an event, resume, and inspect memory and registers without changing the run."""
from __future__ import annotations

import errno
import signal
from pathlib import Path

import capstone
import pytest
from elftools.elf.elffile import ELFFile

from emu.config import RunConfig
from emu.errors import EmuError
from emu.kernel.device import BlockDevice, fail_nth
from emu.machine import AfterInstructions, AtCycle, AtPc, Exited, Machine, OnEvent, Stopped
from emu.profile import load_profile
from emu.trace.diagnostics import DiagnosticLog
from emu.trace.events import DeviceRequest, FaultBegin, FaultEnd

PC = {"x86_64": "rip", "aarch64": "pc"}
ITERATIONS = 40


def _symbol(program: Path, name: str) -> int:
    with open(program, "rb") as f:
        return ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name(name)[0]["st_value"]


def _loop_head(program: Path, arch: str) -> int:
    """The target of the backward branch in compute_loop's mix(): the loop body's start."""
    start = _symbol(program, "mix")
    with open(program, "rb") as f:
        elf = ELFFile(f)
        text = elf.get_section_by_name(".text")
        code = text.data()[start - text["sh_addr"]:start - text["sh_addr"] + 256]
    cs = capstone.Cs(*((capstone.CS_ARCH_X86, capstone.CS_MODE_64) if arch == "x86_64"
                       else (capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)))
    for insn in cs.disasm(code, start):
        target = insn.op_str.split("#")[-1].strip()
        if insn.mnemonic.startswith(("j", "b")) and target.startswith("0x") \
                and int(target, 16) < insn.address:
            return int(target, 16)
    raise AssertionError("no loop in mix")


def machine(firmware: Path, arch: str, program: str = "compute_loop", *args: str,
            **kwargs) -> Machine:  # type: ignore[no-untyped-def]
    return Machine(RunConfig(program=str(firmware / arch / program),
                             args=args or (str(ITERATIONS),)), **kwargs)


def _report(m: Machine) -> dict:  # type: ignore[type-arg]
    report = m.result().report
    report.pop("host")
    return report


@pytest.fixture
def straight(firmware: Path, arch: str) -> dict:  # type: ignore[type-arg]
    """The report of an uninterrupted run."""
    return _report(machine(firmware, arch))


def test_single_steps_are_exact_and_change_nothing(firmware: Path, arch: str, straight) -> None:  # type: ignore[no-untyped-def]
    m = machine(firmware, arch)
    first = m.run(AfterInstructions(1))
    assert isinstance(first, Stopped) and first.instructions == 1
    pcs = [first.pc]
    for n in range(2, 40):
        step = m.run(AfterInstructions(1))
        assert isinstance(step, Stopped) and step.instructions == n
        pcs.append(step.pc)
    assert len(set(pcs)) > 10
    assert _report(m) == straight


@pytest.mark.parametrize("chunk", [1, 997, 100_000])
def test_stopping_every_n_instructions_changes_nothing(firmware: Path, arch: str, straight,
                                                       chunk: int) -> None:  # type: ignore[no-untyped-def]
    m = machine(firmware, arch)
    stops = 0
    while isinstance(stop := m.run(AfterInstructions(chunk if stops else 1000)), Stopped):
        assert stop.instructions == 1000 + chunk * stops
        stops += 1
        if chunk == 1 and stops > 300:
            break
    assert _report(m) == straight


def test_stopping_at_cycles_changes_nothing(firmware: Path, arch: str, straight) -> None:  # type: ignore[no-untyped-def]
    m = machine(firmware, arch)
    cycles = []
    target = 0
    while isinstance(stop := m.run(AtCycle(target)), Stopped):
        assert stop.cycle >= target
        cycles.append(stop.cycle)
        target = stop.cycle + 250_000
    assert len(cycles) > 10
    assert _report(m) == straight


def test_a_breakpoint_in_a_loop_hits_every_iteration(firmware: Path, arch: str, straight) -> None:  # type: ignore[no-untyped-def]
    head = _loop_head(firmware / arch / "compute_loop", arch)
    m = machine(firmware, arch)
    hits = 0
    while isinstance(stop := m.run(AtPc(head)), Stopped):
        assert stop.pc == head and m.registers()[PC[arch]] == head
        hits += 1
    assert hits in (ITERATIONS - 1, ITERATIONS)        # the first may enter below the head
    assert _report(m) == straight


def test_stop_on_an_event(firmware: Path, arch: str, straight) -> None:  # type: ignore[no-untyped-def]
    m = machine(firmware, arch)
    stop = m.run(OnEvent(lambda e: e.origin == "user", (FaultBegin,)))
    assert isinstance(stop, Stopped) and isinstance(stop.event, FaultBegin)
    assert stop.event.origin == "user"
    ends = []
    m.bus.subscribe(ends.append, (FaultEnd,))
    assert m.run(OnEvent(lambda e: True, (FaultEnd,))).event == ends[0]
    assert ends[0].fault_id == stop.event.fault_id          # the same fault, beginning to end
    assert _report(m) == straight


def test_memory_and_registers_can_be_read_without_changing_the_run(firmware: Path, arch: str,
                                                                  straight) -> None:  # type: ignore[no-untyped-def]
    program = firmware / arch / "compute_loop"
    entry = _symbol(program, "mix")
    m = machine(firmware, arch)
    stop = m.run(AtPc(entry))
    assert isinstance(stop, Stopped)
    with open(program, "rb") as f:
        text = ELFFile(f).get_section_by_name(".text")
        expected = text.data()[entry - text["sh_addr"]:entry - text["sh_addr"] + 16]
    assert m.read_memory(entry, 16) == expected
    regs = m.registers()
    assert regs[PC[arch]] == entry and regs["rsp" if arch == "x86_64" else "sp"] > 0
    # a page of the heap nobody touched yet reads as zeros, and is not faulted in by that
    heap = m.process.space.brk_start
    assert m.read_memory(heap - 4096, 8) is not None
    with pytest.raises(EmuError, match="nothing mapped"):
        m.read_memory(0x10, 4)
    assert _report(m) == straight


def test_writing_a_register_changes_what_the_program_computes(firmware: Path, arch: str) -> None:
    program = firmware / arch / "compute_loop"
    entry = _symbol(program, "mix")
    m = machine(firmware, arch)
    assert isinstance(m.run(AtPc(entry)), Stopped)
    arg = "rdi" if arch == "x86_64" else "x0"
    assert m.registers()[arg] == ITERATIONS                  # mix(iterations)
    m.set_register(arg, ITERATIONS * 2)
    assert m.registers()[arg] == ITERATIONS * 2
    m.run()
    doubled = machine(firmware, arch, "compute_loop", str(ITERATIONS * 2))
    assert m.result().report["instructions"] > 0
    assert _report(doubled)["exit"] == _report(m)["exit"]


def test_writing_memory_needs_a_present_unshared_page(firmware: Path, arch: str) -> None:
    m = machine(firmware, arch)
    stop = m.run(AfterInstructions(1000))
    assert isinstance(stop, Stopped)
    sp = m.registers()["rsp" if arch == "x86_64" else "sp"]
    before = m.read_memory(sp, 8)
    m.write_memory(sp, b"\x11" * 8)
    assert m.read_memory(sp, 8) == b"\x11" * 8
    m.write_memory(sp, before)
    with pytest.raises(EmuError, match="not present"):
        m.write_memory(m.process.space.brk_start - 4096 * 1000, b"x")


def test_the_run_ends_once(firmware: Path, arch: str) -> None:
    m = machine(firmware, arch, "hello", "7")
    ended = m.run()
    assert isinstance(ended, Exited) and ended.status.code == 7
    assert m.run(AfterInstructions(5)) is ended


def test_a_device_that_fails_a_page_in_gives_sigbus(firmware: Path, arch: str) -> None:
    log = DiagnosticLog()
    requests: list[DeviceRequest] = []
    profile = load_profile()
    device = BlockDevice(profile.cycles(profile.read_page_ns), profile.cycles(profile.write_page_ns),
                         fails=fail_nth(3, write=False))
    m = machine(firmware, arch, "hello", instruments=(requests.append,), device=device,
                diagnostics=log)
    result = m.result()
    assert result.exit_signal == signal.SIGBUS
    failed = [r for r in requests if isinstance(r, DeviceRequest) and not r.ok]
    assert [(r.reason, r.errno) for r in failed] == [("page_in", errno.EIO)]
    assert any("SIGBUS" in line and "BUS_OBJERR" in line for line in log.messages)


def test_a_device_that_fails_a_write_makes_msync_fail_with_eio(firmware: Path, arch: str,
                                                             tmp_path: Path, capfd) -> None:  # type: ignore[no-untyped-def]
    requests: list[DeviceRequest] = []
    profile = load_profile()
    device = BlockDevice(profile.cycles(profile.read_page_ns), profile.cycles(profile.write_page_ns),
                         fails=fail_nth(1, write=True))
    m = Machine(RunConfig(program=str(firmware / arch / "file_map"), args=("shared", "d", "4"),
                          root=str(tmp_path)),
                instruments=(requests.append,), device=device, diagnostics=DiagnosticLog())
    result = m.result()
    assert result.exit_code == 1 and "FAILED: msync" in capfd.readouterr().err
    (msync,) = [r for r in requests if isinstance(r, DeviceRequest) and r.reason == "msync"]
    assert (msync.ok, msync.errno, msync.pages) == (False, errno.EIO, 4)
    # nothing was written then: the pages stayed modified, and went out at exit instead
    writes = [r for r in requests if isinstance(r, DeviceRequest) and r.reason == "write_back"]
    assert [w.pages for w in writes] == [4] and (tmp_path / "d").read_bytes()[0:1] == b"S"
