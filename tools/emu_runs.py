"""Shared by the tools: run this checkout's emu on a firmware program and read its --stats."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def firmware_program(tool: str, arch: str, name: str) -> Path:
    """firmware/build/ARCH/NAME, or exit with a one-line message naming `tool`."""
    program = REPO / "firmware" / "build" / arch / name
    if not program.is_file():
        raise SystemExit(f"{tool}: {program} is missing: run `make -C firmware`")
    return program


def run_emu(tool: str, emu_args: list[str], stats_file: Path, workdir: Path,
            any_status: bool = False) -> tuple[str, dict[str, Any]]:
    """`python -m emu run --stats STATS_FILE EMU_ARGS...` with this checkout on PYTHONPATH;
    (stdout, stats), or exit with a one-line message naming `tool` if emu failed (with
    `any_status`, only if it wrote no stats: the guest's own exit status is accepted)."""
    stats_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "emu", "run", "--stats", str(stats_file), *emu_args]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, cwd=workdir)
    if proc.returncode != 0 and not (any_status and stats_file.exists()):
        raise SystemExit(f"{tool}: {' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout, json.loads(stats_file.read_text())
