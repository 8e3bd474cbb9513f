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
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


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
    for part in ["", *parts]:
        path = f"{path}/{part}" if part else "/"
        try:
            st = os.stat(root.host_path(path.replace("//", "/")))
        except OSError:
            return True                         # the call itself reports a missing one
        if not may(creds, st, root.owner_of(st), X_OK, real):
            return False
    return True
