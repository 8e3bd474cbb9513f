"""GuestRoot: guest paths resolved inside a host directory that nothing can escape."""
from __future__ import annotations

import errno
import os

import pytest

from emu.kernel.guestfs import GuestPathError, GuestRoot


@pytest.fixture
def root(tmp_path):
    """A guest root with files, directories and symlinks of every kind; a host twin outside it."""
    outside = tmp_path / "host"
    (outside / "etc").mkdir(parents=True)
    (outside / "etc" / "passwd").write_text("HOST passwd\n")
    r = tmp_path / "root"
    for d in ("etc", "bin", "usr/lib", "home/user", "tmp"):
        (r / d).mkdir(parents=True)
    (r / "etc" / "passwd").write_text("guest passwd\n")
    (r / "bin" / "prog").write_bytes(b"\x7fELF")
    (r / "usr" / "lib" / "libc.txt").write_text("libc\n")
    os.symlink("/usr/lib", r / "lib")                        # absolute, inside the root
    os.symlink("etc/passwd", r / "rel")                      # relative
    os.symlink("../../bin/prog", r / "home" / "user" / "up") # relative with ..
    os.symlink("/etc", r / "etc_abs")                        # would be the host's /etc
    os.symlink(str(outside / "etc"), r / "host_etc")         # host absolute path of a dir outside
    os.symlink("../../../../../../etc/passwd", r / "tmp" / "dotdot")
    os.symlink("loop_b", r / "loop_a")
    os.symlink("loop_a", r / "loop_b")
    os.symlink("self", r / "self")
    os.symlink("missing_target", r / "dangling")
    return GuestRoot(str(r), exe_guest_path="/bin/prog")


def under_root(root: GuestRoot, host: str) -> bool:
    return os.path.commonpath([root.host_dir, os.path.realpath(host)]) == root.host_dir


def read(host: str) -> str:
    with open(host) as f:
        return f.read()


# ---- plain paths and .. ----

def test_absolute_path(root):
    assert root.canonical("/etc/passwd", "/") == "/etc/passwd"
    assert read(root.resolve("/etc/passwd", "/")) == "guest passwd\n"


def test_root_itself(root):
    assert root.canonical("/", "/home") == "/"
    assert root.resolve("/", "/home") == root.host_dir
    assert root.resolve("/..", "/") == root.host_dir


def test_relative_path_uses_the_cwd(root):
    assert root.canonical("user/../../etc/passwd", "/home") == "/etc/passwd"
    assert root.canonical(".", "/home/user") == "/home/user"


def test_redundant_slashes_and_dots(root):
    assert root.canonical("//etc/./passwd", "/") == "/etc/passwd"


@pytest.mark.parametrize("path, cwd", [
    ("/../../etc/passwd", "/"),
    ("/../../../../../../../../etc/passwd", "/"),
    ("../../../../etc/passwd", "/home/user"),
    ("/etc/../../../etc/passwd", "/"),
])
def test_dotdot_cannot_climb_above_the_root(root, path, cwd):
    assert root.canonical(path, cwd) == "/etc/passwd"
    host = root.resolve(path, cwd)
    assert under_root(root, host)
    assert read(host) == "guest passwd\n"


def test_empty_path_is_enoent(root):
    with pytest.raises(GuestPathError) as info:
        root.canonical("", "/")
    assert info.value.errno == errno.ENOENT


# ---- symlinks ----

def test_absolute_symlink_is_rerooted(root):
    assert root.canonical("/lib/libc.txt", "/") == "/usr/lib/libc.txt"
    assert read(root.resolve("/lib/libc.txt", "/")) == "libc\n"


def test_relative_symlink(root):
    assert root.canonical("/rel", "/") == "/etc/passwd"


def test_relative_symlink_with_dotdot(root):
    assert root.canonical("/home/user/up", "/") == "/bin/prog"


def test_symlink_to_host_etc_resolves_to_the_guest_etc(root):
    host = root.resolve("/etc_abs/passwd", "/")
    assert host == os.path.join(root.host_dir, "etc", "passwd")
    assert read(host) == "guest passwd\n"


def test_symlink_with_a_host_absolute_path_stays_inside(root):
    with pytest.raises(GuestPathError) as info:       # <root>/<tmp>/host/etc does not exist
        root.resolve("/host_etc/passwd", "/")
    assert info.value.errno == errno.ENOENT


def test_symlink_climbing_with_dotdot_is_clamped(root):
    host = root.resolve("/tmp/dotdot", "/")
    assert under_root(root, host)
    assert read(host) == "guest passwd\n"


def test_final_symlink_not_followed_when_asked(root):
    assert root.canonical("/rel", "/", follow=False) == "/rel"
    assert os.path.islink(root.resolve("/rel", "/", follow=False))


def test_symlink_in_the_middle_is_followed_even_without_follow(root):
    assert root.canonical("/lib/libc.txt", "/", follow=False) == "/usr/lib/libc.txt"


def test_dangling_symlink_resolves_to_its_missing_target(root):
    assert root.canonical("/dangling", "/") == "/missing_target"


@pytest.mark.parametrize("path", ["/loop_a", "/self", "/loop_a/x"])
def test_symlink_loops_are_eloop(root, path):
    with pytest.raises(GuestPathError) as info:
        root.canonical(path, "/")
    assert info.value.errno == errno.ELOOP


def test_symlink_loop_not_followed_at_the_end(root):
    assert root.canonical("/loop_a", "/", follow=False) == "/loop_a"


# ---- missing components and non-directories ----

def test_missing_final_component_is_allowed_for_creation(root):
    assert root.canonical("/tmp/new_file", "/") == "/tmp/new_file"


def test_missing_directory_in_the_middle_is_enoent(root):
    with pytest.raises(GuestPathError) as info:
        root.canonical("/nope/file", "/")
    assert info.value.errno == errno.ENOENT


def test_file_in_the_middle_is_enotdir(root):
    with pytest.raises(GuestPathError) as info:
        root.canonical("/etc/passwd/x", "/")
    assert info.value.errno == errno.ENOTDIR


def test_file_followed_by_dotdot_is_enotdir(root):
    with pytest.raises(GuestPathError) as info:
        root.canonical("/etc/passwd/../passwd", "/")
    assert info.value.errno == errno.ENOTDIR


# ---- /proc/self ----

@pytest.fixture
def root_with_proc(root):
    os.makedirs(os.path.join(root.host_dir, "proc", "self"))
    return root


def test_proc_self_root_is_the_guest_root(root_with_proc):
    assert root_with_proc.canonical("/proc/self/root/etc/passwd", "/") == "/etc/passwd"
    assert root_with_proc.canonical("/proc/self/root/../..", "/") == "/"


def test_proc_self_exe_is_the_program(root_with_proc):
    assert root_with_proc.canonical("/proc/self/exe", "/") == "/bin/prog"


def test_proc_self_cwd_is_the_cwd(root_with_proc):
    assert root_with_proc.canonical("/proc/self/cwd/passwd", "/etc") == "/etc/passwd"


@pytest.mark.parametrize("path, expected", [("/proc/self/root/etc/passwd", "/etc/passwd"),
                                            ("/proc/self/exe", "/bin/prog")])
def test_proc_self_works_in_a_root_without_a_proc_directory(root, path, expected):
    assert root.canonical(path, "/") == expected


# ---- guest_path_of ----

def test_guest_path_of_a_host_path_under_the_root(root):
    assert root.guest_path_of(os.path.join(root.host_dir, "etc", "passwd")) == "/etc/passwd"
    assert root.guest_path_of(root.host_dir) == "/"


def test_guest_path_of_follows_host_symlinks(root):
    assert root.guest_path_of(os.path.join(root.host_dir, "rel")) == "/etc/passwd"


def test_guest_path_of_a_path_outside_is_none(root, tmp_path):
    assert root.guest_path_of(str(tmp_path / "host" / "etc" / "passwd")) is None
    assert root.guest_path_of("/etc/passwd") is None


def test_guest_path_of_a_sibling_with_the_same_prefix_is_none(root, tmp_path):
    sibling = tmp_path / "rootkit"
    sibling.mkdir()
    assert root.guest_path_of(str(sibling)) is None


def test_resolve_and_guest_path_of_agree(root):
    for path in ("/etc/passwd", "/lib/libc.txt", "/home/user/up", "/tmp/dotdot"):
        assert root.guest_path_of(root.resolve(path, "/")) == root.canonical(path, "/")


def test_guest_path_of_with_the_host_root():
    assert GuestRoot("/").guest_path_of("/etc") == "/etc"


@pytest.mark.skipif(not os.path.islink("/proc/self"), reason="needs a Linux /proc")
def test_proc_self_exe_with_the_host_root_is_the_guest_program():
    assert GuestRoot("/", exe_guest_path="/tmp/prog").canonical("/proc/self/exe", "/") == "/tmp/prog"


def test_trailing_slash_follows_a_final_symlink(root):
    assert root.canonical("/lib/", "/", follow=False) == "/usr/lib"
