"""`shoald --userns-remap`: the value's forms, /etc/subuid and /etc/subgid, the default user, and
the one-line errors that name the flag. The host's accounts are faked: nothing here touches
/etc or creates a user."""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from daemon import statedir
from daemon.remap import DEFAULT_USER, HostAccounts, RemapError, free_start, parse_remap, read_ranges
from worker.runtime import UserNamespace


@dataclass
class FakeHost(HostAccounts):
    users: dict[str, int] = field(default_factory=lambda: {"root": 0, "alice": 1000})
    groups: dict[str, int] = field(default_factory=lambda: {"root": 0, "alice": 1000, "staff": 50})
    commands: list[list[str]] = field(default_factory=list)

    def user(self, name):
        return _find(self.users, name)

    def group(self, name):
        return _find(self.groups, name)

    def fake_run(self, args):
        """useradd and usermod as the shadow tools would do them, on the fake files."""
        self.commands.append(args)
        if args[0] == "useradd":
            self.users[args[-1]] = 999
            self.groups[args[-1]] = 999
        elif args[0] == "usermod":
            opts = dict(zip(args[1:-1:2], args[2:-1:2]))
            for flag, path in (("--add-subuids", self.subuid), ("--add-subgids", self.subgid)):
                if flag in opts:
                    first, last = (int(x) for x in opts[flag].split("-"))
                    with open(path, "a") as f:
                        f.write(f"{args[-1]}:{first}:{last - first + 1}\n")


def _find(table, name):
    for n, i in table.items():
        if n == name or str(i) == name:
            return n, i
    return None


@pytest.fixture
def host(tmp_path):
    h = FakeHost(subuid=tmp_path / "subuid", subgid=tmp_path / "subgid")
    h.run = h.fake_run
    return h


def test_explicit_range(host):
    assert parse_remap("100000:200000:65536", host) == UserNamespace(100000, 200000, 65536)
    assert host.commands == []


@pytest.mark.parametrize("value, reason", [
    ("", "empty value"),
    ("0:100000:65536", "the uid range starts at 0: container root would be host root"),
    ("100000:0:65536", "the gid range starts at 0"),
    ("100000:100000:0", "SIZE must be at least 1"),
    ("4294967000:100000:65536", "goes past 4294967294"),
    ("1:x:3", "is not UID:GID:SIZE"),
    ("a:b:c:d", "is not default, USER[:GROUP] or UID:GID:SIZE"),
    ("alice:", "is not default, USER[:GROUP] or UID:GID:SIZE"),
    ("bob", "no such user 'bob'"),
    ("alice:nogroup", "no such group 'nogroup'"),
    ("alice", "user 'alice' has no subordinate uids in"),
])
def test_bad_values_name_the_flag_and_the_reason(host, value, reason):
    with pytest.raises(RemapError) as err:
        parse_remap(value, host)
    message = str(err.value)
    assert message.startswith("--userns-remap: ") and reason in message and "\n" not in message


def test_user_and_group_ranges_from_the_files(host):
    host.subuid.write_text("bob:1:2\nalice:165536:65536\nalice:400000:10\n")
    host.subgid.write_text("alice:231072:65536\n50:300000:1000\n")
    assert parse_remap("alice", host) == UserNamespace(165536, 231072, 65536)
    assert parse_remap("1000", host) == UserNamespace(165536, 231072, 65536)  # ids work as names
    # the group's own range, by number in the file; the shorter length of the two
    assert parse_remap("alice:staff", host) == UserNamespace(165536, 300000, 1000)
    host.subgid.write_text("")
    with pytest.raises(RemapError, match="group 'alice' has no subordinate gids"):
        parse_remap("alice", host)


def test_default_creates_the_user_and_its_range(host):
    host.subuid.write_text("alice:100000:65536\n")      # taken: the next free range is used
    host.subgid.write_text("alice:100000:1000\n")
    assert parse_remap("default", host) == UserNamespace(165536, 101000, 65536)
    assert [c[0] for c in host.commands] == ["useradd", "usermod"]
    assert host.commands[0][-1] == DEFAULT_USER and "--system" in host.commands[0]
    # a second start finds everything in place and changes nothing
    host.commands.clear()
    assert parse_remap("default", host) == UserNamespace(165536, 101000, 65536)
    assert host.commands == []


def test_free_start_skips_every_range_in_the_way(tmp_path):
    f = tmp_path / "subuid"
    f.write_text("a:100000:65536\nb:200000:65536\nc:165536:10\nbad line\nd:x:1\n")
    ranges = read_ranges(f)
    assert [r.owner for r in ranges] == ["a", "b", "c"]
    assert free_start(ranges) == 265536
    assert free_start(ranges, size=100) == 165546
    assert free_start([]) == 100000


@pytest.fixture
def open_tmp():
    """A directory others may pass through, as the state dir's parents must be (pytest's
    tmp_path is under a private dir)."""
    d = Path(tempfile.mkdtemp(prefix="shoal-statedir-"))
    os.chmod(d, 0o711)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_state_dir_opens_only_what_the_remapped_root_needs(open_tmp):
    state = open_tmp / "state"
    for d in ("swarm/certs", "raft/wal", "images/layers", "certs.d", "containers", "volumes"):
        (state / d).mkdir(parents=True)
        os.chmod(state / d, 0o755)
    (state / "credentials.json").write_text("{}")
    os.chmod(state / "credentials.json", 0o644)
    remap = UserNamespace(300000, 300001, 65536)
    statedir.prepare(state, remap)

    def mode(p):
        st = os.stat(p)
        return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
    assert mode(state) == (0o711, 0, 0)
    assert mode(state / "containers") == mode(state / "volumes") == (0o710, 0, 300001)
    for private in ("swarm", "raft", "images", "certs.d"):
        assert mode(state / private) == (0o700, 0, 0), private
    assert mode(state / "credentials.json")[0] == 0o600
    # without the remap again: closed as before
    statedir.prepare(state, None)
    assert mode(state)[0] == 0o700 and mode(state / "containers") == (0o711, 0, 0)
    assert mode(state / "volumes") == (0o700, 0, 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_closed_parent_of_the_state_dir_is_refused(tmp_path):
    os.chmod(tmp_path, 0o700)
    with pytest.raises(statedir.StateDirError, match=r"^--userns-remap: .* does not let the remapped root "
                                                      r"\(uid 300000\) through: allow o\+x"):
        statedir.prepare(tmp_path / "state", UserNamespace(300000, 300000, 65536))
