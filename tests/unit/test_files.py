"""Open-flag translation between guest ABIs and the host, and the descriptor table."""
from __future__ import annotations

import errno
import os

import pytest

from emu.kernel.files import FdTable, OpenFile, host_open_flags

# guest values (Linux uapi): x86-64 and asm-generic (AArch64)
X86 = {"O_DIRECT": 0o40000, "O_LARGEFILE": 0o100000, "O_DIRECTORY": 0o200000,
       "O_NOFOLLOW": 0o400000}
A64 = {"O_DIRECTORY": 0o40000, "O_NOFOLLOW": 0o100000, "O_DIRECT": 0o200000,
       "O_LARGEFILE": 0o400000}


# ---- host_open_flags ----

@pytest.mark.parametrize("arch, flags", [("x86_64", X86), ("aarch64", A64)])
def test_o_directory_is_translated(arch, flags):
    host, directory, nofollow = host_open_flags(arch, flags["O_DIRECTORY"])
    assert (directory, nofollow) == (True, False)
    assert host & os.O_DIRECTORY
    assert not host & os.O_NOFOLLOW


@pytest.mark.parametrize("arch, flags", [("x86_64", X86), ("aarch64", A64)])
def test_o_nofollow_is_translated(arch, flags):
    host, directory, nofollow = host_open_flags(arch, flags["O_NOFOLLOW"])
    assert (directory, nofollow) == (False, True)
    assert host & os.O_NOFOLLOW
    assert not host & os.O_DIRECTORY


def test_aarch64_o_directory_is_x86_o_direct():
    assert host_open_flags("aarch64", 0o40000)[1] is True
    host, directory, _ = host_open_flags("x86_64", 0o40000)
    assert directory is False and not host & os.O_DIRECTORY


def test_aarch64_o_nofollow_is_x86_o_largefile():
    assert host_open_flags("aarch64", 0o100000)[2] is True
    host, _, nofollow = host_open_flags("x86_64", 0o100000)
    assert nofollow is False and not host & os.O_NOFOLLOW


@pytest.mark.parametrize("arch, flags", [("x86_64", X86), ("aarch64", A64)])
def test_direct_and_largefile_are_not_passed_as_other_host_flags(arch, flags):
    host, directory, nofollow = host_open_flags(arch, flags["O_DIRECT"] | flags["O_LARGEFILE"])
    assert (directory, nofollow) == (False, False)
    assert not host & (os.O_DIRECTORY | os.O_NOFOLLOW)


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
@pytest.mark.parametrize("mode", [os.O_RDONLY, os.O_WRONLY, os.O_RDWR])
def test_access_mode_is_kept(arch, mode):
    assert host_open_flags(arch, mode)[0] & 0o3 == mode


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_common_flags_map_to_the_host_values(arch):
    guest = 0o1 | 0o100 | 0o200 | 0o1000 | 0o2000 | 0o4000      # WRONLY CREAT EXCL TRUNC APPEND NONBLOCK
    host, _, _ = host_open_flags(arch, guest)
    assert host == (os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_APPEND
                    | os.O_NONBLOCK)


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_o_sync_and_o_dsync(arch):
    assert host_open_flags(arch, 0o4010000)[0] & os.O_SYNC == os.O_SYNC
    host = host_open_flags(arch, 0o10000)[0]
    assert host & os.O_DSYNC and host & os.O_SYNC != os.O_SYNC


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_o_cloexec_is_not_a_host_open_flag(arch):
    host, _, _ = host_open_flags(arch, os.O_RDWR | 0o2000000)
    assert host == os.O_RDWR


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_unknown_bits_are_dropped(arch):
    host, directory, nofollow = host_open_flags(arch, 0o1000000 | 0o20000)   # O_NOATIME, O_ASYNC
    assert (host, directory, nofollow) == (0, False, False)


def test_unknown_arch_is_refused():
    with pytest.raises(KeyError):
        host_open_flags("riscv64", 0)


@pytest.mark.parametrize("arch, flags", [("x86_64", X86), ("aarch64", A64)])
def test_translated_o_directory_really_refuses_a_file(arch, flags, tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    host, _, _ = host_open_flags(arch, flags["O_DIRECTORY"])
    with pytest.raises(NotADirectoryError):
        os.open(path, host)


# ---- FdTable ----

@pytest.fixture
def host_file(tmp_path):
    """A function opening a fresh host descriptor of a temporary file."""
    path = tmp_path / "data"
    path.write_text("data")
    opened = []

    def open_one() -> OpenFile:
        fd = os.open(path, os.O_RDONLY)
        opened.append(fd)
        return OpenFile(fd, "/data", 0)

    yield open_one
    ours = os.stat(path)
    for fd in set(opened):          # close what the test left open, never a reused number
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (ours.st_dev, ours.st_ino):
            os.close(fd)


def is_open(host_fd: int) -> bool:
    try:
        os.fstat(host_fd)
    except OSError as exc:
        assert exc.errno == errno.EBADF
        return False
    return True


def ebadf(fn, *args):
    with pytest.raises(OSError) as info:
        fn(*args)
    return info.value.errno == errno.EBADF


def test_new_table_has_the_standard_descriptors():
    fds = FdTable()
    assert [fds.get(fd).guest_path for fd in (0, 1, 2)] == ["<stdin>", "<stdout>", "<stderr>"]
    assert all(fds.get(fd).is_std for fd in (0, 1, 2))
    assert ebadf(fds.get, 3)


def test_install_takes_the_lowest_free_descriptor(host_file):
    fds = FdTable()
    assert fds.install(host_file()) == 3
    assert fds.install(host_file()) == 4
    fds.close(3)
    assert fds.install(host_file()) == 3
    assert fds.install(host_file(), lowest=10) == 10


def test_closing_a_standard_descriptor_frees_its_number_but_not_the_host_fd(host_file):
    fds = FdTable()
    fds.close(1)
    assert is_open(1)
    assert fds.install(host_file()) == 1


def test_close_of_the_last_reference_closes_the_host_fd(host_file):
    fds = FdTable()
    f = host_file()
    fd = fds.install(f)
    fds.close(fd)
    assert not is_open(f.host_fd)
    assert ebadf(fds.get, fd)


def test_close_twice_is_ebadf(host_file):
    fds = FdTable()
    fd = fds.install(host_file())
    fds.close(fd)
    assert ebadf(fds.close, fd)


def test_dup_shares_the_open_file(host_file):
    fds = FdTable()
    f = host_file()
    fd = fds.install(f)
    copy = fds.dup(fd)
    assert copy == fd + 1
    assert fds.get(copy) is f and f.refs == 2
    fds.close(fd)
    assert is_open(f.host_fd)
    fds.close(copy)
    assert not is_open(f.host_fd)


def test_dup_uses_the_lowest_free_descriptor_at_or_above_lowest(host_file):
    fds = FdTable()
    fd = fds.install(host_file())
    fds.close(0)
    assert fds.dup(fd) == 0
    assert fds.dup(fd, lowest=7) == 7


def test_dup_of_a_closed_descriptor_is_ebadf():
    assert ebadf(FdTable().dup, 9)


def test_cloexec_is_per_descriptor(host_file):
    fds = FdTable()
    fd = fds.install(host_file(), cloexec=True)
    copy = fds.dup(fd)
    assert fds.slot(fd).cloexec is True
    assert fds.slot(copy).cloexec is False
    assert fds.slot(fds.dup(fd, cloexec=True)).cloexec is True


def test_dup_to_a_free_descriptor(host_file):
    fds = FdTable()
    f = host_file()
    fd = fds.install(f)
    assert fds.dup_to(fd, 50, cloexec=True) == 50
    assert fds.get(50) is f and f.refs == 2
    assert fds.slot(50).cloexec is True


def test_dup_to_replaces_and_closes_what_was_there(host_file):
    fds = FdTable()
    a, b = host_file(), host_file()
    fa, fb = fds.install(a), fds.install(b)
    fds.dup_to(fa, fb)
    assert fds.get(fb) is a and a.refs == 2
    assert not is_open(b.host_fd)


def test_dup_to_between_two_descriptors_of_the_same_file(host_file):
    fds = FdTable()
    f = host_file()
    fd = fds.install(f)
    other = fds.dup(fd)
    fds.dup_to(fd, other)
    assert f.refs == 2 and is_open(f.host_fd)


@pytest.mark.parametrize("new", [-1, FdTable.MAX_FDS])
def test_dup_to_out_of_range_is_ebadf(host_file, new):
    fds = FdTable()
    assert ebadf(fds.dup_to, fds.install(host_file()), new)


def test_dup_to_from_a_closed_descriptor_is_ebadf():
    assert ebadf(FdTable().dup_to, 5, 6)


def test_dup_to_onto_itself_keeps_the_file_open(host_file):
    fds = FdTable()
    f = host_file()
    fd = fds.install(f)
    assert fds.dup_to(fd, fd) == fd
    assert is_open(f.host_fd) and f.refs == 1


def test_table_full_is_emfile(host_file):
    fds = FdTable()
    f = host_file()
    fd = fds.install(f)
    for _ in range(FdTable.MAX_FDS - 4):
        fds.dup(fd)
    with pytest.raises(OSError) as info:
        fds.dup(fd)
    assert info.value.errno == errno.EMFILE
    assert f.refs == FdTable.MAX_FDS - 3          # the failed dup took no reference


def test_close_all_closes_host_files_but_not_stdio(host_file):
    fds = FdTable()
    f = host_file()
    fds.dup(fds.install(f))
    fds.close_all()
    assert not is_open(f.host_fd)
    assert all(is_open(fd) for fd in (0, 1, 2))
    assert ebadf(fds.get, 0)
