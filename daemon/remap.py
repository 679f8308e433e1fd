"""`shoald --userns-remap`: which host ids the root (and every user) of a container becomes.

Like `dockerd --userns-remap`, the value is one of
    default             the system user `shoalremap` and its subordinate ids: created when
                        missing (as dockerd creates `dockremap`), with the first free 65536 ids
                        from 100000 up added to /etc/subuid and /etc/subgid
    USER[:GROUP]        an existing user (name or uid) and group (default: the user's name): the
                        first range of each in /etc/subuid and /etc/subgid
    UID:GID:SIZE        the range given outright (Shoal's own form; /etc/sub?id is not read)
A container's uid/gid 0..SIZE-1 are host START..START+SIZE-1. One range per daemon: when a user
has several in /etc/subuid, the first one listed is used, and when its uid and gid ranges
differ in length, the shorter length.
"""
from __future__ import annotations

import grp
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from worker.runtime import UserNamespace

DEFAULT_USER = "shoalremap"
DEFAULT_FIRST_ID = 100000   # where useradd starts handing out subordinate ids too (SUB_UID_MIN)
DEFAULT_SIZE = 65536
MAX_ID = 2**32 - 1          # (uid_t)-1 is "no id"
SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")


class RemapError(ValueError):
    """A bad --userns-remap value; the message names the flag."""

    def __init__(self, reason: str):
        super().__init__(f"--userns-remap: {reason}")


@dataclass(frozen=True)
class SubRange:
    owner: str      # a login name or a numeric uid/gid, as subuid(5) allows
    start: int
    count: int

    @property
    def end(self) -> int:
        return self.start + self.count


def read_ranges(path: Path) -> list[SubRange]:
    """The entries of an /etc/subuid-style file (bad lines are skipped, as shadow-utils does)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] and fields[1].isdigit() and fields[2].isdigit() and int(fields[2]) > 0:
            out.append(SubRange(fields[0], int(fields[1]), int(fields[2])))
    return out


def first_range(ranges: list[SubRange], name: str, number: int) -> SubRange | None:
    for r in ranges:
        if r.owner == name or r.owner == str(number):
            return r
    return None


def free_start(ranges: list[SubRange], size: int = DEFAULT_SIZE, first: int = DEFAULT_FIRST_ID) -> int:
    """The lowest start >= first whose size ids overlap no range already given out."""
    start = first
    for r in sorted(ranges, key=lambda r: r.start):
        if r.end <= start:
            continue
        if r.start >= start + size:
            break
        start = r.end
    if start + size > MAX_ID:
        raise RemapError(f"no free range of {size} subordinate ids is left")
    return start


def check_range(u: UserNamespace) -> UserNamespace:
    if u.size < 1:
        raise RemapError(f"SIZE must be at least 1, got {u.size}")
    for name, start in (("uid", u.host_uid), ("gid", u.host_gid)):
        if start == 0:
            raise RemapError(f"the {name} range starts at 0: container root would be host root")
        if start + u.size > MAX_ID:
            raise RemapError(f"the {name} range {start}-{start + u.size - 1} goes past {MAX_ID - 1}")
    return u


@dataclass
class HostAccounts:
    """The host's users, groups and subordinate id files; replaceable in tests."""
    subuid: Path = SUBUID
    subgid: Path = SUBGID
    run: Callable[[list[str]], None] = lambda args: _run(args)

    def user(self, name: str) -> tuple[str, int] | None:
        try:
            entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        except KeyError:
            return None
        return entry.pw_name, entry.pw_uid

    def group(self, name: str) -> tuple[str, int] | None:
        try:
            entry = grp.getgrgid(int(name)) if name.isdigit() else grp.getgrnam(name)
        except KeyError:
            return None
        return entry.gr_name, entry.gr_gid


def _run(args: list[str]) -> None:
    if not shutil.which(args[0]):
        raise RemapError(f"default: {args[0]} is needed to create the user {DEFAULT_USER} "
                         f"(apt-get install passwd), or give UID:GID:SIZE")
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        reason = (proc.stderr or proc.stdout).strip().splitlines()
        raise RemapError(f"default: {' '.join(args[:2])} failed: {reason[-1] if reason else proc.returncode}")


def parse_remap(value: str, host: HostAccounts | None = None) -> UserNamespace:
    """The range for a --userns-remap value; creates the default user when it is missing."""
    host = host or HostAccounts()
    value = value.strip()
    if not value:
        raise RemapError("empty value: give default, USER[:GROUP] or UID:GID:SIZE")
    parts = value.split(":")
    if len(parts) == 3:
        if not all(p.isdigit() for p in parts):
            raise RemapError(f"{value!r} is not UID:GID:SIZE (three numbers)")
        uid, gid, size = (int(p) for p in parts)
        return check_range(UserNamespace(uid, gid, size))
    if len(parts) > 3 or not all(parts):
        raise RemapError(f"{value!r} is not default, USER[:GROUP] or UID:GID:SIZE")
    if value == "default":
        ensure_default_user(host)
        parts = [DEFAULT_USER]
    user_name = parts[0]
    group_name = parts[1] if len(parts) == 2 else user_name
    user = host.user(user_name)
    if user is None:
        raise RemapError(f"no such user {user_name!r}")
    group = host.group(group_name)
    if group is None:
        raise RemapError(f"no such group {group_name!r}")
    uids = first_range(read_ranges(host.subuid), *user)
    if uids is None:
        raise RemapError(f"user {user[0]!r} has no subordinate uids in {host.subuid} "
                         f"(add a line such as {user[0]}:{DEFAULT_FIRST_ID}:{DEFAULT_SIZE})")
    gids = first_range(read_ranges(host.subgid), *group)
    if gids is None:
        raise RemapError(f"group {group[0]!r} has no subordinate gids in {host.subgid} "
                         f"(add a line such as {group[0]}:{DEFAULT_FIRST_ID}:{DEFAULT_SIZE})")
    return check_range(UserNamespace(uids.start, gids.start, min(uids.count, gids.count)))


def ensure_default_user(host: HostAccounts) -> None:
    """`shoalremap`, a system user that owns the default range, as dockerd's `dockremap`:
    created with useradd, and given the first free 65536 subordinate uids and gids with usermod
    (the shadow tools lock the files while they change them)."""
    if host.user(DEFAULT_USER) is None:
        host.run(["useradd", "--system", "--no-create-home", "--user-group",
                  "--shell", "/usr/sbin/nologin", "--comment", "Shoal userns-remap", DEFAULT_USER])
    user = host.user(DEFAULT_USER)
    group = host.group(DEFAULT_USER)
    if user is None or group is None:
        raise RemapError(f"default: the user {DEFAULT_USER} was not created")
    args: list[str] = []
    if first_range(read_ranges(host.subuid), *user) is None:
        start = free_start(read_ranges(host.subuid))
        args += ["--add-subuids", f"{start}-{start + DEFAULT_SIZE - 1}"]
    if first_range(read_ranges(host.subgid), *group) is None:
        start = free_start(read_ranges(host.subgid))
        args += ["--add-subgids", f"{start}-{start + DEFAULT_SIZE - 1}"]
    if args:
        host.run(["usermod", *args, DEFAULT_USER])
