"""File permission checks as Linux makes them for the guest's credentials.

emu usually runs as the host's root, which the host never refuses; so the guest's own
identity (`--uid`, setuid and friends) is checked here, against the mode bits and the
guest-visible owner of each file: owner, group (primary or supplementary) or other, with
CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH letting a privileged process through as Linux
does (execute still needs one execute bit on a non-directory).
"""
from __future__ import annotations

import os
import stat as stat_mod

from emu.kernel.guestfs import GuestRoot
from emu.kernel.process import Credentials

R_OK, W_OK, X_OK = 4, 2, 1
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID = 1, 2, 3, 4


def _capable(creds: Credentials, cap: int, real: bool) -> bool:
    if real:                                # access(2): the real ids, root is privileged
        return creds.uid == 0
    return bool(getattr(creds, "cap_effective", 0) >> cap & 1)


def may(creds: Credentials, st: os.stat_result, owner: tuple[int, int], want: int,
        real: bool = False) -> bool:
    """Whether `creds` may access a file of status `st` owned (as the guest sees it) by
    `owner` for `want` (R_OK | W_OK | X_OK); `real`: with the real ids (access(2)), else the
    file-system ids."""
    uid = creds.uid if real else creds.fsuid
    gids = {creds.gid if real else creds.fsgid, *creds.groups}
    mode = st.st_mode
    if _capable(creds, CAP_DAC_OVERRIDE, real):
        return not want & X_OK or stat_mod.S_ISDIR(mode) or bool(mode & 0o111)
    if uid == owner[0]:
        bits = mode >> 6 & 7
    elif owner[1] in gids:
        bits = mode >> 3 & 7
    else:
        bits = mode & 7
    if want & ~bits == 0:
        return True
    return (_capable(creds, CAP_DAC_READ_SEARCH, real) and not want & W_OK
            and (stat_mod.S_ISDIR(mode) or not want & X_OK))


def open_access(guest_flags: int) -> int:
    """The access an open with these flags needs (O_TRUNC needs write)."""
    mode = guest_flags & 0o3
    want = R_OK if mode == 0 else W_OK if mode == 1 else R_OK | W_OK
    if guest_flags & 0o1000 and mode == 0:      # O_TRUNC on a read-only open
        want |= W_OK
    return want


def may_search(creds: Credentials, root: GuestRoot, canon: str, real: bool = False) -> bool:
    """Whether `creds` may search (X) every directory on the way to guest path `canon`."""
    if _capable(creds, CAP_DAC_OVERRIDE, real) or _capable(creds, CAP_DAC_READ_SEARCH, real):
        return True
    parts = [p for p in canon.split("/") if p][:-1]
    path = ""
    for part in parts:          # the guest's / itself is searchable by all (as Linux's 0755
        path += "/" + part      # root is), whatever mode the host directory given has
        try:
            st = os.stat(root.host_path(path))
        except OSError:
            return True                         # the call itself reports a missing one
        if not may(creds, st, root.owner_of(st), X_OK, real):
            return False
    return True


def may_change_entry(creds: Credentials, root: GuestRoot, canon: str,
                     removing: os.stat_result | None = None) -> bool:
    """Whether `creds` may add (or, given the entry's status `removing`, remove or rename)
    the directory entry of guest path `canon`: search on the way, write and search on its
    directory, and in a sticky directory ownership of the entry or the directory."""
    if _capable(creds, CAP_DAC_OVERRIDE, False):
        return True
    if not may_search(creds, root, canon):
        return False
    parent = canon.rsplit("/", 1)[0] or "/"
    if parent == "/":           # the directory given as --root is the guest's to use
        return True
    try:
        st = os.stat(root.host_path(parent))
    except OSError:
        return True
    owner = root.owner_of(st)
    if not may(creds, st, owner, W_OK | X_OK):
        return False
    if removing is not None and st.st_mode & stat_mod.S_ISVTX:
        return creds.fsuid in (owner[0], root.owner_of(removing)[0]) or \
            bool(getattr(creds, "cap_effective", 0) >> CAP_FOWNER & 1)
    return True


def chmod_bits(creds: Credentials, st: os.stat_result, owner: tuple[int, int],
               mode: int) -> int | None:
    """The mode chmod sets for `creds` (S_ISGID dropped for a caller outside the file's
    group without CAP_FSETID), or None if they may not change it (EPERM: not the owner,
    no CAP_FOWNER)."""
    caps = getattr(creds, "cap_effective", 0)
    if creds.fsuid != owner[0] and not caps >> CAP_FOWNER & 1:
        return None
    if mode & stat_mod.S_ISGID and owner[1] not in (creds.fsgid, *creds.groups) \
            and not caps >> CAP_FSETID & 1:
        mode &= ~stat_mod.S_ISGID
    return mode
