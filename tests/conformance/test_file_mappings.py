"""Semantics rows: writable MAP_SHARED file mappings (modified pages tracked; msync writes them
to the file and re-protects them; munmap and exit write back), copy-on-write MAP_PRIVATE file
mappings, MAP_NOSYNCFILE, read()/write() coherence, SIGBUS past the end of the file.

Each test checks the bytes of the real host file after the run.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PAGES = 4


@pytest.fixture
def file_map(firmware: Path, arch: str) -> Path:
    """firmware/file_map for the architecture under test."""
    return firmware / arch / "file_map"


def _run(emu, program: Path, mode: str, root: Path, pages: int = PAGES):  # type: ignore[no-untyped-def]
    return emu("--root", root, program, mode, "data.bin", str(pages), cwd=root)


def _pages(root: Path) -> list[bytes]:
    data = (root / "data.bin").read_bytes()
    return [data[i:i + 4096] for i in range(0, len(data), 4096)]


def _expected_page(i: int, prefix: bytes = b"") -> bytes:
    return prefix + bytes([ord("a") + i % 26]) * (4096 - len(prefix))


def _delta(emu, program: Path, mode: str, root: Path) -> dict[str, int]:  # type: ignore[no-untyped-def]
    small = _run(emu, program, mode, root, 1).stats["faults"]["by_cause"]
    large = _run(emu, program, mode, root, PAGES + 1).stats["faults"]["by_cause"]
    return {k: large[k] - small[k] for k in large if large[k] != small[k]}


def test_msync_writes_modified_pages_and_tracking_starts_over(emu, file_map: Path,
                                                              tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = _run(emu, file_map, "shared", tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "mode=shared ok\n"
    # the msync'd "S" and the "T" written after it (munmap wrote that back) are both in the file
    assert _pages(tmp_path) == [_expected_page(i, b"ST") for i in range(PAGES)]
    mm = run.stats["mm"]
    assert mm["msync_pages_written"] == PAGES and mm["pages_written_back"] == PAGES
    # per page: read in by the first write; after msync, one write-tracking fault again
    assert _delta(emu, file_map, "shared", tmp_path) == {"page_in": PAGES, "write_track": PAGES}


def test_process_exit_writes_back_modified_pages(emu, file_map: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = _run(emu, file_map, "async", tmp_path)
    assert run.returncode == 0, run.stderr
    assert _pages(tmp_path) == [_expected_page(i, b"ST") for i in range(PAGES)]
    assert run.stats["mm"]["pages_written_back"] == PAGES


def test_private_file_mapping_is_copy_on_write(emu, file_map: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = _run(emu, file_map, "private", tmp_path)
    assert run.returncode == 0, run.stderr
    assert _pages(tmp_path) == [_expected_page(i) for i in range(PAGES)]
    assert run.stats["mm"]["cow_copies"] == PAGES
    assert _delta(emu, file_map, "private", tmp_path) == {"page_in": PAGES, "cow": PAGES}


def test_nosyncfile_changes_never_reach_the_file(emu, file_map: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = _run(emu, file_map, "nosync", tmp_path)
    assert run.returncode == 0, run.stderr
    assert _pages(tmp_path) == [_expected_page(i) for i in range(PAGES)]
    assert run.stats["mm"]["msync_pages_written"] == 0
    assert run.stats["mm"]["pages_written_back"] == 0


def test_read_write_and_mappings_see_the_same_data(emu, file_map: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = _run(emu, file_map, "coherent", tmp_path)
    assert run.returncode == 0, run.stderr
    pages = _pages(tmp_path)
    assert pages[0] == _expected_page(0, b"W")
    assert pages[1] == _expected_page(1, b"M")     # written back at exit


def test_ms_invalidate_drops_clean_pages_to_be_read_again(emu, file_map: Path,
                                                          tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = _run(emu, file_map, "invalidate", tmp_path)
    assert run.returncode == 0, run.stderr
    assert _pages(tmp_path) == [_expected_page(i) for i in range(PAGES)]
    # every page read in twice: before and after MS_INVALIDATE dropped it
    assert _delta(emu, file_map, "invalidate", tmp_path) == {"page_in": 2 * PAGES}


def test_touching_past_the_end_of_the_file_is_sigbus(emu, file_map: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = _run(emu, file_map, "eof", tmp_path)
    assert run.returncode == 128 + 7
    assert "SIGBUS (BUS_ADRERR: write at 0x" in run.stderr
    assert run.stats["faults"]["by_cause"]["sigbus"] == 1


def test_msync_sync_waits_for_the_device(emu, file_map: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sync = _run(emu, file_map, "shared", tmp_path).stats
    main = next(t for t in sync["threads"] if t["name"] == "main")
    # blocked in REPLY for at least the write of PAGES pages (200 us each in the default profile)
    assert main["cycles_by_state"].get("REPLY", 0) >= PAGES * 200_000


@pytest.mark.parametrize("mode", ["shared", "async", "private", "coherent", "eof", "invalidate"])
def test_same_as_qemu_user(emu, file_map: Path, arch: str, mode: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Plain Linux semantics (everything but MAP_NOSYNCFILE): output, status and file bytes."""
    qemu = shutil.which({"x86_64": "qemu-x86_64", "aarch64": "qemu-aarch64"}[arch])
    if qemu is None:
        pytest.skip("qemu-user is not installed")
    ref_dir, our_dir = tmp_path / "qemu", tmp_path / "emu"
    ref_dir.mkdir()
    our_dir.mkdir()
    ref = subprocess.run([qemu, str(file_map), mode, "data.bin", str(PAGES)], cwd=ref_dir,
                         capture_output=True, text=True, timeout=60)
    ours = _run(emu, file_map, mode, our_dir)
    status = 128 - ref.returncode if ref.returncode < 0 else ref.returncode
    assert (ours.stdout, ours.returncode) == (ref.stdout, status)
    assert (our_dir / "data.bin").read_bytes() == (ref_dir / "data.bin").read_bytes()
