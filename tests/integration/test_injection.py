"""Every fault kind of `emu run --fault` (and `--inject PLAN`), on both architectures: what
the guest sees, and what --stats and --events report (docs/INJECTION.md).

The programs: firmware/lazy_sigbus (commit and MAP_LAZY memory, fork), checksum (two
checksum loops that must agree), password (a password check), msync_log (a log made
durable with msync), hello, file_map, and Debian's busybox for read(2).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from capstone import CS_ARCH_ARM64, CS_ARCH_X86, CS_MODE_64, CS_MODE_ARM, Cs

from emu.loader.symbols import symbols
from tests.conftest import EmuRun, run_emu

GUESTS = Path(__file__).resolve().parents[2] / ".cache" / "guests"
PAGE = 4096
REG = {"x86_64": {"n": "rsi", "sp": "rsp"}, "aarch64": {"n": "x1", "sp": "sp"}}


def emu(tmp_path: Path, *args: object, name: str = "stats") -> EmuRun:
    """`emu run --stats` (stats in tmp_path), guest root tmp_path."""
    stats = tmp_path / f"{name}.json"
    stats.unlink(missing_ok=True)
    run = run_emu("--root", tmp_path, *args, stats_path=stats)
    assert run.stats is not None, run.stderr
    return run


def hits(run: EmuRun) -> list[dict[str, object]]:
    assert run.stats is not None
    return run.stats["inject"]["hits"]


def region_of(run: EmuRun) -> int:
    """lazy_sigbus's first line: region=0x..."""
    first = run.stdout.splitlines()[0]
    assert first.startswith("region=")
    return int(first.split("=")[1], 16)


# ---- the memory manager ----

def test_frame_allocation_failing_at_mmap_is_enomem(firmware: Path, arch: str,
                                                     tmp_path: Path) -> None:
    prog = firmware / arch / "lazy_sigbus"
    # glibc commits twice at start-up (brk), then the program's mmap of 8 pages
    run = emu(tmp_path, "--fault", "frame-alloc@nth=3:cause=commit", prog, "commit", "8")
    assert run.returncode == 1 and "mmap: Cannot allocate memory" in run.stderr
    assert run.stats["inject"]["armed"] == 1 and run.stats["inject"]["fired"] == {
        "frame-alloc": 1}
    [hit] = hits(run)
    assert "commit of 8 page(s)" in hit["detail"] and hit["tid"] == hit["pid"] == 2


def test_frame_allocation_failing_at_a_lazy_touch_is_sigbus(firmware: Path, arch: str,
                                                            tmp_path: Path) -> None:
    prog = firmware / arch / "lazy_sigbus"
    golden = emu(tmp_path, prog, "lazy", "8", "where", name="golden")
    assert golden.returncode == 0 and "sigbus=0" in golden.stdout
    page3 = region_of(golden) + 3 * PAGE
    run = emu(tmp_path, "--fault", f"frame-alloc@cause=lazy_alloc:addr={page3:#x}-"
              f"{page3 + PAGE:#x}", prog, "lazy", "8", "where")
    assert run.returncode == 3
    assert "SIGBUS at page 3 (si_addr ok, code BUS_OBJERR)" in run.stdout
    assert "written=7 sigbus=1" in run.stdout
    assert run.stats["signals"]["handled"] == {"SIGBUS": 1}


def test_frame_allocation_failing_at_copy_on_write_is_sigbus_in_the_child(
        firmware: Path, arch: str, tmp_path: Path) -> None:
    prog = firmware / arch / "lazy_sigbus"
    region = region_of(emu(tmp_path, prog, "commit", "4", "where", name="golden"))
    run = emu(tmp_path, "--fault", f"frame-alloc@nth=2:cause=cow,addr={region:#x}-"
              f"{region + 4 * PAGE:#x}", prog, "commit", "4", "cow")
    assert run.returncode == 3
    assert "SIGBUS at page 1 (si_addr ok, code BUS_OBJERR)" in run.stdout
    assert "child: 1 page(s) lost" in run.stdout
    assert hits(run)[0]["pid"] != 2           # the child's copy failed


def test_a_late_memory_manager_delays_the_fault(firmware: Path, arch: str,
                                                 tmp_path: Path) -> None:
    prog = firmware / arch / "hello"
    golden = emu(tmp_path, prog, name="golden")
    run = emu(tmp_path, "--fault", "mm-delay@nth=5:cycles=2000000", prog)
    assert (run.returncode, run.stdout) == (golden.returncode, golden.stdout)
    assert run.stats["fault_latency_cycles"]["max"] >= 2_000_000 \
        > golden.stats["fault_latency_cycles"]["max"]
    assert run.stats["cycles"] >= golden.stats["cycles"] + 2_000_000
    assert "held back 2000000 cycles" in hits(run)[0]["detail"]


def test_a_lost_pulse_is_sent_again_after_its_timeout(firmware: Path, arch: str,
                                                      tmp_path: Path) -> None:
    prog = firmware / arch / "hello"
    golden = emu(tmp_path, prog, name="golden")
    run = emu(tmp_path, "--fault", "pulse-loss@nth=2:timeout=3000000", prog)
    assert (run.returncode, run.stdout) == (golden.returncode, golden.stdout)
    assert run.stats["faults"] == golden.stats["faults"]
    assert run.stats["fault_latency_cycles"]["max"] >= 3_000_000
    waitpage = sum(t["cycles_by_state"].get("WAITPAGE", 0) for t in run.stats["threads"])
    golden_waitpage = sum(t["cycles_by_state"].get("WAITPAGE", 0)
                          for t in golden.stats["threads"])
    assert waitpage >= golden_waitpage + 3_000_000


def test_an_injected_fault_disables_completing_faults_in_place(firmware: Path, arch: str,
                                                               tmp_path: Path) -> None:
    """The same fault with and without --stop-on-every-fault: identical runs."""
    prog = firmware / arch / "lazy_sigbus"
    fault = "mm-delay@nth=40:cycles=100000,cause=zero_fill"
    a = emu(tmp_path, "--fault", fault, prog, "commit", "64", name="a")
    b = emu(tmp_path, "--fault", fault, "--stop-on-every-fault", prog, "commit", "64", name="b")
    for key in ("cycles", "instructions", "faults", "fault_latency_cycles", "inject"):
        assert a.stats[key] == b.stats[key], key


# ---- the backing store ----

def test_a_read_error_on_a_page_in_is_sigbus(firmware: Path, arch: str, tmp_path: Path) -> None:
    shutil.copy(firmware / arch / "file_map", tmp_path / "file_map")
    run = emu(tmp_path, "--fault", "read-error@nth=1:file=/d", tmp_path / "file_map",
              "private", "/d", "4")
    assert run.returncode == 128 + 7 and run.stats["exit"]["signal"] == "SIGBUS"
    assert "BUS_OBJERR" in run.stderr
    assert hits(run)[0]["detail"] == "page_in of /d fails: EIO"


def test_a_read_error_on_read_is_eio(arch: str, tmp_path: Path) -> None:
    busybox = GUESTS / arch / "busybox"
    if not busybox.exists():
        pytest.fail(f"{busybox} is missing: run tools/setup.sh")
    shutil.copy(busybox, tmp_path / "busybox")
    (tmp_path / "data.txt").write_text("some data\n")
    golden = emu(tmp_path, tmp_path / "busybox", "cat", "/data.txt", name="golden")
    assert (golden.returncode, golden.stdout) == (0, "some data\n")
    # busybox cat tries sendfile, then read(2) when that fails: a transient error is
    # recovered from; a lasting one is not
    once = emu(tmp_path, "--fault", "read-error:file=/data.txt", tmp_path / "busybox", "cat",
               "/data.txt", name="once")
    assert (once.returncode, once.stdout) == (0, "some data\n")
    assert [h["detail"] for h in hits(once)] == ["read of /data.txt fails: EIO"]
    run = emu(tmp_path, "--fault", "read-error:file=/data.txt,duration=inf",
              tmp_path / "busybox", "cat", "/data.txt")
    assert run.returncode == 1 and "read error: Input/output error" in run.stderr
    assert "some data" not in run.stdout and len(hits(run)) == 2


def test_a_write_error_on_msync_is_eio_and_keeps_the_page_modified(
        firmware: Path, arch: str, tmp_path: Path) -> None:
    prog = firmware / arch / "msync_log"
    golden = emu(tmp_path, prog, "check", "/log", "4", name="golden")
    good = (tmp_path / "log").read_bytes()
    # a transient error: the program retries its msync, and the page is written then
    run = emu(tmp_path, "--fault", "write-error@nth=2:file=/log", prog, "check", "/log", "4")
    assert (run.returncode, run.stdout) == (0, golden.stdout)
    assert (tmp_path / "log").read_bytes() == good
    assert hits(run)[0]["detail"] == "msync of /log fails: EIO"
    assert run.stats["mm"]["msync_pages_written"] == golden.stats["mm"]["msync_pages_written"]


def test_lasting_write_errors_lose_what_a_trusting_program_believed(
        firmware: Path, arch: str, tmp_path: Path) -> None:
    prog = firmware / arch / "msync_log"
    golden = emu(tmp_path, prog, "trust", "/log", "4", name="golden")
    good = (tmp_path / "log").read_bytes()
    run = emu(tmp_path, "--fault", "write-error@nth=3:file=/log,duration=inf", prog, "trust",
              "/log", "4")
    assert (run.returncode, run.stdout) == (0, golden.stdout)     # it believes all is well
    data = (tmp_path / "log").read_bytes()
    assert data[:2 * PAGE] == good[:2 * PAGE]             # synced before the errors began
    assert data[2 * PAGE:] == bytes(2 * PAGE)             # lost: msync and write-back failed
    checking = emu(tmp_path, "--fault", "write-error@nth=3:file=/log,duration=inf", prog,
                   "check", "/log", "4", name="checking")
    assert checking.returncode == 1 and "record 2 lost: msync: Input/output error" in \
        checking.stderr


def test_a_write_error_on_fsync_is_eio(firmware: Path, arch: str, tmp_path: Path) -> None:
    prog = firmware / arch / "msync_log"
    # 4 msyncs, then the fsync
    run = emu(tmp_path, "--fault", "write-error@nth=5:file=/log", prog, "check", "/log", "4")
    assert run.returncode == 1 and "fsync: Input/output error" in run.stderr
    assert hits(run)[0]["detail"] == "fsync of /log fails: EIO"


def test_a_latency_spike_delays_the_transfer(firmware: Path, arch: str, tmp_path: Path) -> None:
    prog = firmware / arch / "hello"
    golden = emu(tmp_path, prog, name="golden")
    run = emu(tmp_path, "--fault", "latency@nth=3:cycles=5000000,dir=read", prog)
    assert (run.returncode, run.stdout) == (golden.returncode, golden.stdout)
    assert run.stats["cycles"] >= golden.stats["cycles"] + 5_000_000
    assert run.stats["instructions"] == golden.stats["instructions"]


# ---- CPU and memory ----

def test_a_register_overwrite_at_a_pc_is_detected(firmware: Path, arch: str,
                                                  tmp_path: Path) -> None:
    """sum_by_index(words, n) with n overwritten by 0: the two checksums disagree."""
    prog = firmware / arch / "checksum"
    run = emu(tmp_path, "--fault", f"overwrite@pc=sum_by_index:reg={REG[arch]['n']},value=0",
              prog, "20")
    assert run.returncode == 1 and "checksum mismatch" in run.stderr
    [hit] = hits(run)
    assert hit["pc"] == symbols(str(prog))["sum_by_index"].address
    assert hit["detail"].endswith("-> 0x0") and hit["detail"].startswith(REG[arch]["n"])


def test_a_bit_flip_in_memory_by_symbol_and_by_physical_address(firmware: Path, arch: str,
                                                                tmp_path: Path) -> None:
    prog = firmware / arch / "checksum"
    run = emu(tmp_path, "--fault", "bitflip@pc=sum_by_index:vaddr=data+8,bit=5", prog, "20")
    assert run.returncode == 1 and "checksum mismatch" in run.stderr
    detail = hits(run)[0]["detail"]
    paddr = int(detail.split("paddr ")[1].split(",")[0], 16)
    same = emu(tmp_path, "--fault", f"bitflip@pc=sum_by_index:paddr={paddr:#x},bit=5", prog,
               "20", name="paddr")
    assert (same.returncode, same.stderr) == (run.returncode, run.stderr)
    assert f"paddr {paddr:#x}" in hits(same)[0]["detail"]


def test_the_nth_execution_of_a_pc(firmware: Path, arch: str, tmp_path: Path) -> None:
    prog = firmware / arch / "checksum"
    golden = emu(tmp_path, prog, "20", name="golden")
    early = emu(tmp_path, "--fault", "bitflip@pc=sum_by_index:nth=19,vaddr=data,bit=1", prog,
                "20", name="early")
    late = emu(tmp_path, "--fault", "bitflip@pc=sum_by_index:nth=21,vaddr=data,bit=1", prog,
               "20", name="late")
    assert early.returncode == 1 and "checksum mismatch" in early.stderr
    assert late.stats["inject"]["fired"] == {} and late.stdout == golden.stdout  # 20 calls


def test_a_stuck_at_value_lasts_a_transient_one_does_not(firmware: Path, arch: str,
                                                        tmp_path: Path) -> None:
    """data[2] overwritten at cycle 0: the program's own initialisation writes over a
    transient fault; a permanent one (duration=inf) is asserted again before every block."""
    prog = firmware / arch / "checksum"
    golden = emu(tmp_path, prog, "20", name="golden")
    transient = emu(tmp_path, "--fault", "overwrite@cycle=0:vaddr=data+16,value=0,width=8",
                    prog, "20", name="transient")
    stuck = emu(tmp_path, "--fault", "overwrite@cycle=0:vaddr=data+16,value=0,width=8,"
                "duration=inf", prog, "20", name="stuck")
    assert transient.stdout == golden.stdout
    assert stuck.returncode == 0 and stuck.stdout != golden.stdout   # silent corruption


def test_page_table_entry_faults(firmware: Path, arch: str, tmp_path: Path) -> None:
    """A present bit cleared: the kernel finds no page there and sets one up again from its
    backing object (what the program wrote there is lost); a frame-number bit flipped: the
    page maps another frame. Either way the run goes on, the kernel tainted (inconsistencies
    are counted, not bugs)."""
    prog = firmware / arch / "checksum"
    events = tmp_path / "events.jsonl"
    absent = emu(tmp_path, "--events", events, "--fault", "set0@pc=sum_by_index:pte=data,bit=0",
                 prog, "20", name="absent")
    [hit] = hits(absent)
    assert "the PTE of" in hit["detail"]
    page = symbols(str(prog))["data"].address & ~(PAGE - 1)
    refilled = [e for e in map(json.loads, events.read_text().splitlines())
                if e["kind"] == "fault_end" and e["ts"] > hit["cycle"]
                and e["vaddr"] & ~(PAGE - 1) == page]
    assert refilled and refilled[0]["cause"] in ("zero_fill", "page_in")  # from its object
    moved = emu(tmp_path, "--fault", "bitflip@pc=sum_by_index:pte=data,bit=12", prog, "20",
                name="moved")
    assert "checksum mismatch" in moved.stderr
    for run in (absent, moved):
        assert run.returncode != 125 and "internal error" not in run.stderr


def _call_of(prog: Path, arch: str, caller: str, callee: str) -> int:
    """The address of the call from `caller` to `callee`."""
    table = symbols(str(prog))
    start = table[caller]
    with open(prog, "rb") as f:
        data = f.read()
    from elftools.elf.elffile import ELFFile
    with open(prog, "rb") as f:
        elf = ELFFile(f)
        seg = next(s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"
                   and s["p_vaddr"] <= start.address < s["p_vaddr"] + s["p_filesz"])
        offset = seg["p_offset"] + start.address - seg["p_vaddr"]
    cs = Cs(CS_ARCH_X86, CS_MODE_64) if arch == "x86_64" else Cs(CS_ARCH_ARM64, CS_MODE_ARM)
    target = table[callee].address
    for insn in cs.disasm(data[offset:offset + start.size], start.address):
        if insn.mnemonic in ("call", "bl") and insn.op_str.endswith(f"{target:#x}"):
            return insn.address
    raise AssertionError(f"no call to {callee} in {caller}")


def test_skipping_the_call_to_the_password_check_grants_access(firmware: Path, arch: str,
                                                               tmp_path: Path) -> None:
    prog = firmware / arch / "password"
    golden = emu(tmp_path, prog, "guess", name="golden")
    assert (golden.returncode, golden.stdout) == (1, "ACCESS DENIED\n")
    call = _call_of(prog, arch, "main", "check_password")
    run = emu(tmp_path, "--fault", f"skip@pc={call:#x}", prog, "guess")
    assert (run.returncode, run.stdout) == (0, "ACCESS GRANTED\n")
    [hit] = hits(run)
    assert hit["pc"] == call and hit["detail"].startswith(f"skipped 1 instruction(s) at {call:#x}")
    # the skipped call's instructions did not retire
    assert run.stats["instructions"] < golden.stats["instructions"]


def test_a_skip_in_the_middle_of_a_block_retires_exactly_one_instruction_less(
        firmware: Path, arch: str, tmp_path: Path) -> None:
    """exact_count's 600 straight-line increments of a register its output does not use
    (one translated block holds 512 of them): skipping the 300th retires one fewer
    instruction and changes nothing else."""
    prog = firmware / arch / "exact_count"
    golden = emu(tmp_path, prog, "10", name="golden")
    start = symbols(str(prog))["_start"]
    with open(prog, "rb") as f:
        from elftools.elf.elffile import ELFFile
        elf = ELFFile(f)
        seg = next(s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"
                   and s["p_vaddr"] <= start.address < s["p_vaddr"] + s["p_filesz"])
        code = seg.data()[start.address - seg["p_vaddr"]:][:8000]
    cs = Cs(CS_ARCH_X86, CS_MODE_64) if arch == "x86_64" else Cs(CS_ARCH_ARM64, CS_MODE_ARM)
    wanted = ("inc", "r15") if arch == "x86_64" else ("add", "x23, x23, #1")
    straight = [i.address for i in cs.disasm(code, start.address)
                if (i.mnemonic, i.op_str) == wanted]
    assert len(straight) == 600
    run = emu(tmp_path, "--fault", f"skip@pc={straight[299]:#x}", prog, "10")
    assert run.stats["instructions"] == golden.stats["instructions"] - 1
    assert (run.returncode, run.stdout) == (golden.returncode, golden.stdout)
    assert hits(run)[0]["pc"] == straight[299]
    two = emu(tmp_path, "--fault", f"skip@pc={straight[299]:#x}:count=2", prog, "10", name="two")
    assert two.stats["instructions"] == golden.stats["instructions"] - 2


def test_set1_on_memory_with_a_mask(firmware: Path, arch: str, tmp_path: Path) -> None:
    prog = firmware / arch / "checksum"
    run = emu(tmp_path, "--fault", "set1@pc=sum_by_index:vaddr=data+8,mask=0xff00", prog, "20")
    assert run.returncode == 1 and "checksum mismatch" in run.stderr
    old, new = hits(run)[0]["detail"].split(": ")[1].split(" -> ")
    assert int(new, 16) == int(old, 16) | 0xFF00 and int(new, 16) != int(old, 16)


def test_system_call_and_fault_streams(firmware: Path, arch: str, tmp_path: Path) -> None:
    """syscall=NAME fires right after the Nth call of that name returns; fault=CAUSE right
    after the Nth deferred fault of that cause ends."""
    prog = firmware / arch / "hello"
    for fault, kind in (("hog@syscall=brk:nth=2,prio=5,duration=1000", "syscall_exit"),
                        ("hog@fault=page_in:nth=7,prio=5,duration=1000", "fault_end")):
        events = tmp_path / "events.jsonl"
        run = emu(tmp_path, "--events", events, "--fault", fault, prog)
        assert run.returncode == 0
        log = [json.loads(line) for line in events.read_text().splitlines()]
        fired = next(e for e in log if e["kind"] == "inject_fired")
        if kind == "syscall_exit":
            matching = [e for e in log if e["kind"] == kind and e["name"] == "brk"]
        else:
            matching = [e for e in log if e["kind"] == kind and e["cause"] == "page_in"
                        and e["origin"] == "user"]
        # after the Nth one ended, before the (N+1)th
        nth = 2 if kind == "syscall_exit" else 7
        assert matching[nth - 1]["ts"] <= fired["ts"]
        assert len(matching) == nth or fired["ts"] <= matching[nth]["ts"]
        assert fired["tid"] == matching[nth - 1]["tid"]


def test_a_lasting_skip_skips_every_execution_a_hog_starts_once(firmware: Path, arch: str,
                                                                  tmp_path: Path) -> None:
    prog = firmware / arch / "checksum"
    skips = emu(tmp_path, "--fault", "skip@pc=sum_by_index:duration=inf", prog, "20",
                name="skips")
    assert skips.stats["inject"]["fired"] == {"skip": 20}     # every call of the 20
    hog = emu(tmp_path, "--fault", "hog@pc=sum_by_index:prio=5,duration=10000", prog, "20",
              name="hog")
    assert hog.stats["inject"]["fired"] == {"hog": 1}
    assert [t["name"] for t in hog.stats["threads"]].count("hog") == 1


# ---- scheduling ----

def test_a_cpu_bound_thread_appears(firmware: Path, arch: str, tmp_path: Path) -> None:
    prog = firmware / arch / "hello"
    golden = emu(tmp_path, prog, name="golden")
    run = emu(tmp_path, "--fault", "hog@cycle=100000:prio=20,duration=30000000", prog)
    assert (run.returncode, run.stdout) == (golden.returncode, golden.stdout)
    # (it also runs while the program waits for the device: less than 30M cycles more)
    assert run.stats["cycles"] >= golden.stats["cycles"] + 25_000_000
    [hog] = [t for t in run.stats["threads"] if t["name"] == "hog"]
    assert hog["priority"] == 20 and hog["cycles_by_state"]["RUNNING"] == 30_000_000
    assert run.stats["instructions"] == golden.stats["instructions"]


# ---- triggers, plans, events, bad input ----

def test_a_probability_trigger_is_a_function_of_the_seed(firmware: Path, arch: str,
                                                         tmp_path: Path) -> None:
    prog = firmware / arch / "hello"
    fault = "latency@p=0.2:cycles=1000"
    runs = [emu(tmp_path, "--seed", str(seed), "--fault", fault, prog, name=f"s{i}")
            for i, seed in enumerate((1, 1, 2, 3, 4))]
    fired_at = [hits(r)[0]["cycle"] if hits(r) else None for r in runs]
    assert fired_at[0] == fired_at[1] and fired_at[0] is not None
    assert len(set(fired_at[1:])) > 1


def test_a_plan_file_is_the_same_as_its_faults(firmware: Path, arch: str,
                                               tmp_path: Path) -> None:
    prog = firmware / arch / "checksum"
    plan = tmp_path / "plan.toml"
    plan.write_text('[[fault]]\nkind = "bitflip"\npc = "sum_by_index"\nvaddr = "data+8"\n'
                    'bit = 5\n\n[[fault]]\nkind = "latency"\nnth = 1\ncycles = 1000\n')
    by_plan = emu(tmp_path, "--inject", plan, prog, "20", name="plan")
    by_flags = emu(tmp_path, "--fault", "bitflip@pc=sum_by_index:vaddr=data+8,bit=5",
                   "--fault", "latency@nth=1:cycles=1000", prog, "20", name="flags")
    assert by_plan.stats["inject"] == by_flags.stats["inject"]
    assert by_plan.stats["inject"]["armed"] == 2
    assert [f["spec"] for f in by_plan.stats["inject"]["faults"]] == [
        "bitflip@pc=sum_by_index:vaddr=data+8,bit=5", "latency@nth=1:cycles=1000"]


def test_fired_faults_are_events_with_cycle_pc_and_thread(firmware: Path, arch: str,
                                                           tmp_path: Path) -> None:
    prog = firmware / arch / "checksum"
    events = tmp_path / "events.jsonl"
    run = emu(tmp_path, "--events", events, "--fault",
              "bitflip@pc=sum_by_index:vaddr=data+8,bit=5", prog, "20")
    kinds = [json.loads(line) for line in events.read_text().splitlines()]
    armed = [e for e in kinds if e["kind"] == "inject_armed"]
    fired = [e for e in kinds if e["kind"] == "inject_fired"]
    assert armed == [{"ts": armed[0]["ts"], "kind": "inject_armed", "pid": 0, "tid": 0,
                      "fault": 1, "fault_kind": "bitflip",
                      "spec": "bitflip@pc=sum_by_index:vaddr=data+8,bit=5"}]
    assert len(fired) == 1 and fired[0]["pc"] == hits(run)[0]["pc"] and fired[0]["tid"] == 2
    assert fired[0]["ts"] == hits(run)[0]["cycle"]


def test_the_cycle_limit_ends_a_run(firmware: Path, arch: str, tmp_path: Path) -> None:
    run = emu(tmp_path, "--max-cycles", "1000000", firmware / arch / "checksum", "20")
    assert run.returncode == 128 + 24 and run.stats["exit"]["reason"] == "cycle_limit"
    assert 1_000_000 <= run.stats["cycles"] < 1_100_000
    assert "cycle limit (1000000) reached" in run.stderr


@pytest.mark.parametrize("fault,message", [
    ("meltdown@nth=1", "unknown fault kind 'meltdown'"),
    ("frame-alloc@nth=0", "nth counts from 1"),
    ("frame-alloc@nth=1:bit=3", "frame-alloc does not take bit"),
    ("bitflip@cycle=10", "needs exactly one target"),
    ("bitflip:reg=rax,bit=1", "needs a trigger"),
    ("bitflip@cycle=1:reg=rax", "needs bit=N or mask=M"),
    ("bitflip@cycle=1:reg=rax,bit=1,duration=100", "a bit flip is transient"),
    ("bitflip@cycle=1:reg=nosuch,bit=1", "no register 'nosuch'"),
    ("skip@pc=no_such_symbol", "has no symbol 'no_such_symbol'"),
    ("latency@nth=1", "latency needs cycles=N"),
    ("read-error@nth=1:file=relative", "a guest path starts with /"),
    ("frame-alloc@nth=x", "nth='x'"),
    ("frame-alloc@nth=1,nth=2", "nth given twice"),
    ("bitflip@cycle=1:paddr=0xffffffffff,bit=1", "past the end of RAM"),
])
def test_bad_faults_are_one_line_errors(firmware: Path, tmp_path: Path, fault: str,
                                        message: str) -> None:
    run = run_emu("--fault", fault, firmware / "x86_64" / "checksum", "20")
    assert run.returncode == 125, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in run.stderr


def test_a_bad_plan_is_a_one_line_error(firmware: Path, tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    for text, message in (("[[fault]]\nnth = 1\n", "fault 1 has no kind"),
                          ("[[fault]]\nkind = \"skip\"\n", "needs a trigger"),
                          ("[nope]\n", "unknown table(s) nope"),
                          ("[[fault\n", "plan")):
        plan.write_text(text)
        run = run_emu("--inject", plan, firmware / "x86_64" / "hello")
        assert run.returncode == 125 and message in run.stderr, run.stderr
        assert len(run.stderr.strip().splitlines()) == 1
    run = run_emu("--inject", tmp_path / "missing.toml", firmware / "x86_64" / "hello")
    assert run.returncode == 125 and "cannot read plan" in run.stderr
