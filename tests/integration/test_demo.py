"""`emu demo`, the flagship experiment: it runs from the command line, writes its plots and
report, and its numbers say what the seed says."""
from __future__ import annotations

import re
import subprocess
import sys


def test_demo_writes_plots_and_a_report_that_tells_the_seeds_story(firmware, tmp_path):
    out = tmp_path / "demo"
    run = subprocess.run([sys.executable, "-m", "emu", "demo", "--out", str(out), "--jobs", "2"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    for name in ("fault_latency.png", "waitpage.png", "large_pages.png", "prefault.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
    report = (out / "REPORT.md").read_text()
    assert report in run.stdout and str(out) in run.stdout
    for arch in ("x86_64", "aarch64"):
        section = report.split(f"| {arch} | N=0")[1].split("\n\n")[0]
        rows = {line.split("|")[1].strip(): [float(v) for v in line.split("|")[2:-1]]
                for line in section.splitlines()[2:]}
        # demand paging: 2N slices of 4 ms; superlocked: no fault; fixed procnto: N slices
        assert [round(ms / 4) for ms in rows["demand"]] == [0, 2, 4, 8]
        assert [round(ms / 4) for ms in rows["procnto fixed 50"]] == [0, 1, 2, 4]
        assert max(rows["superlocked"]) < 0.01
        # large pages: far fewer TLB misses with v than without, on every profile
        large = re.findall(rf"\| {arch} \| (\S+) \| (2 MiB \(v\)|4 KiB \(~v\)) \| ([\d,]+) \|",
                           report)
        misses = {(p, v.startswith("2")): int(m.replace(",", "")) for p, v, m in large}
        for profile in {p for p, _ in misses}:
            assert misses[(profile, True)] * 4 < misses[(profile, False)], profile
