"""The microkernel seen from guest programs: threads, scheduling, the fault slow path, events."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_emu

SLICE_NS = 4_000_000        # the default profile's round-robin slice


def _events(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_glibc_pthreads_work(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    run = emu(firmware / arch / "pthreads", "4", "500")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "mutex: counter=2000", "condvar: sum=20100", "sched: policy=SCHED_RR priority=20",
        "sleep: ok", "cputime: ok", "yield: ok", "all ok"]
    stats = run.stats
    assert stats is not None
    guest_threads = [t for t in stats["threads"] if t["pid"] != 1]
    assert len(guest_threads) == 1 + 4 + 1          # main, workers, producer
    assert all("RUNNING" in t["cycles_by_state"] for t in guest_threads)
    main = next(t for t in guest_threads if t["name"] == "main")
    assert main["priority"] == 20 and main["policy"] == "RR"
    assert main["cycles_by_state"].get("NANOSLEEP", 0) >= 2_000_000     # the 2 ms sleep
    assert main["cycles_by_state"].get("JOIN", 0) > 0                  # pthread_join
    assert stats["sched"]["context_switches"] > 10


def test_procnto_threads_serve_faults(firmware: Path, arch: str, emu) -> None:  # type: ignore[no-untyped-def]
    stats = emu(firmware / arch / "page_touch", "100").stats
    assert stats is not None
    server = next(t for t in stats["threads"] if t["pid"] == 1)
    assert server["name"] == "procnto-mm0"
    assert server["cycles_by_state"]["RUNNING"] > 0
    assert server["cycles_by_state"]["REPLY"] > 0        # waiting for page-ins from the device
    main = next(t for t in stats["threads"] if t["pid"] != 1)
    assert main["cycles_by_state"]["WAITPAGE"] > 0
    lat = stats["fault_latency_cycles"]
    assert lat["count"] >= 100 and 0 < lat["p50"] <= lat["p99"] <= lat["max"]


def test_mm_thread_pool_size(firmware: Path, emu) -> None:  # type: ignore[no-untyped-def]
    stats = emu("--mm-threads", "3", firmware / "x86_64" / "hello").stats
    assert stats is not None
    servers = [t["name"] for t in stats["threads"] if t["pid"] == 1]
    assert servers == ["procnto-mm0", "procnto-mm1", "procnto-mm2"]


def test_a_fault_journey_in_the_event_stream(firmware: Path, arch: str, tmp_path: Path) -> None:
    """fault_begin → WAITPAGE → pulse → procnto RUNNING → fault_end → READY → (procnto back to
    RECEIVE) → RUNNING."""
    events = tmp_path / "events.jsonl"
    run = run_emu("--events", events, firmware / arch / "page_touch", "3")
    assert run.returncode == 0
    evs = _events(events)
    begin = next(i for i, e in enumerate(evs) if e["kind"] == "fault_begin"
                 and e["origin"] == "user" and e["pid"] != 1)
    pid, tid = evs[begin]["pid"], evs[begin]["tid"]
    journey = []
    for e in evs[begin:]:
        if (e["pid"], e["tid"]) == (pid, tid) and e["kind"] in ("state", "fault_end"):
            journey.append(e["kind"] if e["kind"] == "fault_end" else e["to"])
        elif e["pid"] == 1 and e["kind"] == "state":
            journey.append("procnto:" + e["to"])
        elif e["kind"] == "pulse":
            journey.append("pulse")
        if journey[-1:] == ["RUNNING"]:
            break
    assert journey[:2] == ["WAITPAGE", "pulse"]
    assert "procnto:RUNNING" in journey
    assert journey.index("procnto:RUNNING") < journey.index("fault_end") < journey.index("READY")
    assert journey[-3:] == ["READY", "procnto:RECEIVE", "RUNNING"]
    assert all(a["ts"] <= b["ts"] for a, b in zip(evs, evs[1:]))


@pytest.mark.parametrize("program,args", [("pthreads", ["3", "200"]), ("page_touch", ["64"])])
def test_stats_and_events_are_byte_identical_across_runs(firmware: Path, arch: str, tmp_path: Path,
                                                         program: str, args: list[str]) -> None:
    outputs = []
    for i in range(2):
        stats, events = tmp_path / f"s{i}.json", tmp_path / f"e{i}.jsonl"
        run = run_emu("--events", events, firmware / arch / program, *args, stats_path=stats)
        assert run.returncode == 0
        report = json.loads(stats.read_text())
        report.pop("host")
        outputs.append((json.dumps(report, sort_keys=True), events.read_bytes()))
    assert outputs[0] == outputs[1]


def test_completing_faults_in_place_changes_nothing_observable(firmware: Path, arch: str,
                                                               tmp_path: Path) -> None:
    reports = []
    for flag in ([], ["--stop-on-every-fault"]):
        stats = tmp_path / f"s{len(reports)}.json"
        run = run_emu(*flag, firmware / arch / "page_touch", "200", stats_path=stats)
        assert run.returncode == 0
        report = json.loads(stats.read_text())
        reports.append({k: report[k] for k in ("instructions", "cycles", "faults",
                                                "fault_latency_cycles", "sched", "threads")})
    assert reports[0] == reports[1]


def _touch_ns(stdout: str) -> int:
    line = stdout.splitlines()[-1]
    assert line.startswith("touch_ns mean=")
    return int(line.split()[1].split("=")[1])


@pytest.mark.parametrize("spinners", [0, 1, 2])
def test_seed_effect_fault_latency_grows_two_slices_per_spinner(firmware: Path, arch: str, emu,
                                                                spinners: int) -> None:
    run = emu(firmware / arch / "fault_latency", str(spinners), "4", "10", "10")
    assert run.returncode == 0, run.stderr
    latency = _touch_ns(run.stdout)
    expected = 2 * spinners * SLICE_NS
    assert expected <= latency <= expected + 100_000


def test_seed_effect_vanishes_for_a_higher_priority_toucher(firmware: Path, arch: str, emu) -> None:
    run = emu(firmware / arch / "fault_latency", "2", "4", "20", "10")
    assert run.returncode == 0, run.stderr
    assert _touch_ns(run.stdout) < 100_000


def test_preemption_by_slice_is_counted(firmware: Path, emu) -> None:  # type: ignore[no-untyped-def]
    stats = emu(firmware / "x86_64" / "fault_latency", "2", "2", "10", "10").stats
    assert stats is not None
    assert stats["sched"]["preemptions"] > 0


def test_deadlock_is_reported_not_hung(tmp_path: Path) -> None:
    src = tmp_path / "deadlock.c"
    src.write_text('#include <pthread.h>\n'
                   'static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;\n'
                   'int main(void) { pthread_mutex_lock(&m);\n'
                   '  pthread_mutex_t *p = &m; __asm__ volatile("" : "+r"(p));\n'
                   '  pthread_mutex_lock(p); return 0; }\n')
    import subprocess
    exe = tmp_path / "deadlock"
    subprocess.run(["gcc", "-static", "-O1", "-pthread", "-o", str(exe), str(src)], check=True)
    run = run_emu(exe)
    assert run.returncode == 128 + 9
    assert "deadlock" in run.stderr
