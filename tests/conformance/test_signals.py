"""Semantics row: signals. glibc handlers with SA_SIGINFO, siglongjmp out of SIGSEGV/SIGBUS
handlers with si_code and si_addr, masks, sigtimedwait, sigsuspend, sigaltstack, SA_RESTART,
SA_NODEFER, SA_RESETHAND and default actions — one firmware mode at a time, on both
architectures: stdout, exit status, signals delivered and faults by cause.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ONE_USR1 = {"SIGUSR1": 1}

# mode: (stdout, signals.delivered); every mode exits 0 but abort
CASES: dict[str, tuple[str, dict[str, int]]] = {
    "segv-accerr": ("segv-accerr: SIGSEGV SEGV_ACCERR addr=ok\n", {"SIGSEGV": 1}),
    "segv-maperr": ("segv-maperr: SIGSEGV SEGV_MAPERR addr=ok\n", {"SIGSEGV": 1}),
    "raise": ("raise: SI_TKILL pid=ok uid=ok\nkill: SI_USER pid=ok handled=2\n", {"SIGUSR1": 2}),
    "mask": ("blocked: pending=1 handled=0\nunblocked: pending=0 handled=1\n", ONE_USR1),
    # an accepted signal is not delivered (glibc reports tgkill's SI_TKILL as SI_USER)
    "timedwait": ("pending: sig=SIGUSR1 SI_USER handled=0\ntimeout: ret=-1 EAGAIN\n", {}),
    "altstack": ("altstack: handled=1 on_altstack=1 ss_onstack=1 after=0\n", ONE_USR1),
    "flags": (("sa_mask: in usr1=1 usr2=1; after usr1=0 usr2=0\nnodefer: in usr1=0\n"
               "resethand: handled=3 then SIG_DFL\nnested: 10 12 -10 0\n"),
              {"SIGUSR1": 4, "SIGUSR2": 1}),
    "restart": ("restart: futex wait restarted handled=1\n", ONE_USR1),
    "eintr": ("eintr: futex wait EINTR handled=1\n", ONE_USR1),
    "sigsuspend": ("sigsuspend: ret=-1 EINTR handled=1 usr1_blocked=1\n", ONE_USR1),
    "nanosleep": ("nanosleep: ret=-1 EINTR handled=1 rem_ok=1\n", ONE_USR1),
    "ignore": ("ignore: still alive\n", {"SIGUSR2": 2, "SIGCHLD": 1}),
}


@pytest.mark.parametrize("mode", sorted(CASES))
def test_signal_mode(firmware: Path, arch: str, emu, mode: str) -> None:  # type: ignore[no-untyped-def]
    expected, delivered = CASES[mode]
    run = emu(firmware / arch / "signals", mode)
    assert run.returncode == 0, run.stderr
    assert run.stdout == expected
    assert run.stderr == ""
    assert run.stats["exit"] == {"code": 0, "signal": None, "reason": "exit"}
    assert run.stats["signals"]["delivered"] == delivered


@pytest.mark.parametrize("mode", ["segv-accerr", "segv-maperr"])
def test_sigsegv_handler_counts_one_fault(firmware: Path, arch: str, emu, mode: str) -> None:  # type: ignore[no-untyped-def]
    by_cause = emu(firmware / arch / "signals", mode).stats["faults"]["by_cause"]
    assert (by_cause["sigsegv"], by_cause["sigbus"]) == (1, 0)


def test_sigbus_from_lazy_mapping_reaches_the_handler(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    run = emu("--ram", "4M", firmware / arch / "signals", "bus-lazy")
    assert run.returncode == 0, run.stderr
    assert run.stdout == ("bus-lazy: touching up to 64 MiB\n"
                          "bus-lazy: SIGBUS BUS_OBJERR addr=ok\n")
    stats = run.stats
    assert stats["faults"]["by_cause"]["sigbus"] == 1
    assert stats["signals"]["delivered"] == {"SIGBUS": 2}     # the warm-up raise, the fault
    assert stats["mm"]["lazy_allocations"] > 0


def test_illegal_instruction_reaches_the_handler(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    run = emu(firmware / arch / "signals", "sigill")
    code = "ILL_ILLOPN" if arch == "x86_64" else "ILL_ILLOPC"     # as each Linux port reports
    assert (run.returncode, run.stdout) == (0, f"sigill: {code} addr=ok\n")
    assert run.stats["signals"]["delivered"] == {"SIGILL": 1}


def test_breakpoint_reaches_the_handler(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    run = emu(firmware / arch / "signals", "sigtrap")
    code = "SI_KERNEL" if arch == "x86_64" else "TRAP_BRKPT"     # int3 / brk, as Linux reports
    assert (run.returncode, run.stdout) == (0, f"sigtrap: {code}\n")
    assert run.stats["signals"]["delivered"] == {"SIGTRAP": 1}


def test_integer_division_by_zero(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    run = emu(firmware / arch / "signals", "sigfpe")
    assert run.returncode == 0, run.stderr
    if arch == "x86_64":
        assert run.stdout == "sigfpe: FPE_INTDIV\n"
        assert run.stats["signals"]["delivered"] == {"SIGFPE": 1}
    else:
        assert run.stdout.startswith("sigfpe: no trap")
        assert run.stats["signals"]["delivered"] == {}


def test_async_signals_keep_the_interrupted_registers(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    # signals land anywhere in a floating-point loop; the handler clobbers FP registers
    run = emu(firmware / arch / "signals", "async")
    assert (run.returncode, run.stdout) == (0, "async: a=1749293.936801 b=1.349858788 n=4500000\n")
    assert run.stats["signals"]["delivered"]["SIGUSR1"] >= 3


def test_abort_dies_of_sigabrt(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    run = emu(firmware / arch / "signals", "abort")
    assert (run.returncode, run.stdout) == (134, "about to abort\n")
    assert run.stats["exit"] == {"code": 134, "signal": "SIGABRT", "reason": "signal"}
    assert run.stats["signals"]["delivered"] == {"SIGABRT": 1}


def test_signal_events_name_the_action(firmware: Path, arch: str, emu, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    events = tmp_path / "events.jsonl"
    run = emu("--events", events, firmware / arch / "signals", "segv-accerr")
    assert run.returncode == 0
    signals = [e for e in map(json.loads, events.read_text().splitlines())
               if e["kind"] == "signal"]
    assert len(signals) == 1
    (event,) = signals
    assert (event["signal"], event["code"], event["action"]) == (11, 2, "handler")
    assert event["vaddr"] % 4096 == 0 and event["vaddr"] > 0      # the PROT_NONE page
    ignored = tmp_path / "ignored.jsonl"
    emu("--events", ignored, firmware / arch / "signals", "ignore")
    actions = [e["action"] for e in map(json.loads, ignored.read_text().splitlines())
               if e["kind"] == "signal"]
    assert actions == ["ignore"] * 3


def test_fault_without_handler_still_kills(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    run = emu(firmware / arch / "bad_access", "ro-write")
    assert run.returncode == 128 + 11
    assert "SIGSEGV (SEGV_ACCERR: write at 0x" in run.stderr
    assert run.stats["signals"]["delivered"] == {"SIGSEGV": 1}
