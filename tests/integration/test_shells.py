"""Third-party programs: Debian's static busybox shell runs scripts with pipes, command
substitution, here-documents, background jobs and `wait`, on both guest architectures, and
prints what the same busybox prints natively (tools/setup.sh fetches busybox-static into
.cache/guests)."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_emu

GUESTS = Path(__file__).resolve().parents[2] / ".cache" / "guests"
APPLETS = ["sh", "echo", "cat", "tr", "md5sum", "seq", "wc", "sleep", "head", "tail", "sort",
           "true", "false", "kill", "printf", "expr"]

SCRIPTS = {
    "substitution": ('x=$(echo hi); echo "got $x"; echo $(echo $(echo deep))', "got hi\ndeep\n"),
    "pipeline": ("seq 1 1000 | sort -rn | head -3", "1000\n999\n998\n"),
    "status": ("true | false; echo $?; false | true; echo $?; (exit 3); echo $?", "1\n0\n3\n"),
    "read-loop": ("printf 'a\\nb\\nc\\n' | while read l; do echo \"<$l>\"; done",
                  "<a>\n<b>\n<c>\n"),
    "read-builtin": ('echo "x y" | { read a b; echo "$b $a"; }', "y x\n"),
    "heredoc": ("cat <<EOF\nhello $((6 * 7))\nEOF\ncat <<'EOF' | wc -l\n1\n2\nEOF", "hello 42\n2\n"),
    "background": ("sleep 0.05 & pid=$!; echo started; wait $pid; echo \"waited $?\"; "
                   "(exit 4) & wait $!; echo $?", "started\nwaited 0\n4\n"),
    "kill-job": ("sleep 10 & kill $!; wait $!; echo \"status $?\"", "status 143\n"),
    "many-jobs": ("for i in 1 2 3 4 5; do (sleep 0.0$i; echo job $i) & done; wait; echo all",
                  "job 1\njob 2\njob 3\njob 4\njob 5\nall\n"),
}


def _root(tmp_path: Path, arch: str) -> Path:
    busybox = GUESTS / arch / "busybox"
    if not busybox.exists():
        pytest.fail(f"{busybox} is missing: run tools/setup.sh")
    root = tmp_path / f"root-{arch}"
    (root / "bin").mkdir(parents=True)
    shutil.copy(busybox, root / "bin" / "busybox")
    for applet in APPLETS:
        os.symlink("busybox", root / "bin" / applet)
    return root


def _emu_sh(root: Path, script: str) -> tuple[int, str, str]:
    run = run_emu("--root", root, "-E", "PATH=/bin", root / "bin" / "busybox", "sh", "-c",
                  script)
    return run.returncode, run.stdout, run.stderr


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_busybox_script(tmp_path: Path, arch: str, name: str) -> None:
    script, expected = SCRIPTS[name]
    code, out, err = _emu_sh(_root(tmp_path, arch), script)
    assert (code, out) == (0, expected), err
    assert "deadlock" not in err


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_native_busybox_agrees(tmp_path: Path, name: str) -> None:
    """The expected outputs are what busybox prints on this host's Linux."""
    script, expected = SCRIPTS[name]
    root = _root(tmp_path, "x86_64")
    done = subprocess.run([str(root / "bin" / "busybox"), "sh", "-c", script], text=True,
                          capture_output=True, env={"PATH": str(root / "bin")}, timeout=60)
    assert (done.returncode, done.stdout) == (0, expected)


def test_pipe_larger_than_its_capacity(tmp_path: Path, arch: str) -> None:
    """600 KB through a 64 KiB pipe: the writer blocks, the reader runs, nothing is lost."""
    expected = hashlib.md5("".join(f"{i}\n" for i in range(1, 100001)).encode()).hexdigest()
    code, out, err = _emu_sh(_root(tmp_path, arch), "seq 1 100000 | md5sum")
    assert (code, out) == (0, f"{expected}  -\n"), err


@pytest.mark.parametrize("how", ["system", "popen"])
def test_libc_starts_programs_through_the_shell(tmp_path: Path, firmware: Path, arch: str,
                                                how: str) -> None:
    root = _root(tmp_path, arch)
    shutil.copy(firmware / arch / "spawn", root / "spawn")
    args = ["system"] if how == "system" else ["popen", "echo one; echo two"]
    run = run_emu("--root", root, "-E", "PATH=/bin", root / "spawn", *args)
    expected = ("system: exited 7\n" if how == "system" else
                "popen read: one\npopen read: two\npclose: exited 0\n")
    assert (run.returncode, run.stdout) == (0, expected), run.stderr


BASH_SCRIPT = r"""
x=$(echo hello | tr a-z A-Z)
echo "subst: $x"
seq 1 1000 | sort -rn | head -3 | wc -l
for i in 1 2 3; do echo $i; done | cat
job() { echo background; }
job & wait
arr=(a b c); echo "${#arr[@]} ${arr[1]}"
read -r line < <(echo process-substitution); echo "$line"
echo done
"""


def test_bash_runs_a_script_with_pipes(tmp_path: Path, arch: str) -> None:
    """Debian's static bash: command substitution, pipelines, a background job and wait,
    arrays, and process substitution (/dev/fd) print what bash prints natively."""
    bash = GUESTS / arch / "bash"
    if not bash.exists():
        pytest.fail(f"{bash} is missing: run tools/setup.sh")
    root = _root(tmp_path, arch)
    shutil.copy(bash, root / "bin" / "bash")
    (root / "s.sh").write_text(BASH_SCRIPT)
    run = run_emu("--root", root, "-E", "PATH=/bin", root / "bin" / "bash", "/s.sh")
    native_root = _root(tmp_path / "native", "x86_64")
    shutil.copy(GUESTS / "x86_64" / "bash", native_root / "bin" / "bash")
    native = subprocess.run([str(native_root / "bin" / "bash"), "-c", BASH_SCRIPT], text=True,
                            capture_output=True, timeout=60,
                            env={"PATH": str(native_root / "bin")})
    assert native.stdout.endswith("process-substitution\ndone\n")
    assert (run.returncode, run.stdout) == (0, native.stdout), run.stderr
