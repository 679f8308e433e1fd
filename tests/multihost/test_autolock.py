"""Autolock across three managers, each in its own network namespace: turned on for a
running cluster, every manager re-encrypts its own disk; the leader restarts locked, the
other two elect a leader and keep taking writes, show it Unreachable, and it catches up
once unlocked."""
from __future__ import annotations

import re

import pytest

from cli.dev.cluster import DevCluster
from manager.encryption import InvalidUnlockKey, KeyFile, parse_unlock_key
from tests.multihost.helpers import wait_for
from tests.multihost.test_managers import agreed_leader, wait_voters

pytestmark = pytest.mark.usefixtures("join_available")
LOCKED = "Swarm is encrypted and needs to be unlocked before it can be used."


def locked_with(c: DevCluster, node: str, key: str) -> bool:
    f = KeyFile(c.paths(node).state_dir / "swarm" / "raft-keys.json")
    try:
        return f.exists() and f.is_locked() and f.load(parse_unlock_key(key)) is not None
    except InvalidUnlockKey:
        return False


def manager_status(c: DevCluster, via: str) -> dict[str, str]:
    out = {}
    for host, n in c.swarm_nodes(via).items():
        ms = n.get("ManagerStatus") or {}
        if ms:
            out[host] = "Leader" if ms.get("Leader") else ms.get("Reachability", "")
    return out


def labels_of(c: DevCluster, via: str, node: str) -> dict:
    return c.swarm_nodes(via)[node]["Spec"].get("Labels") or {}


def test_a_locked_manager_is_unreachable_while_the_others_keep_working(cluster):
    managers = ["m1", "m2", "m3"]
    c = cluster(managers=3, workers=0)
    wait_voters(c, "m1", managers[1:])

    out = c.shoal("m1", "swarm", "update", "--autolock=true").stdout
    (key,) = re.findall(r"SWMKEY-1-\S+", out)
    for m in managers:  # replicated through Raft: every manager wraps its own data key
        wait_for(lambda m=m: locked_with(c, m, key), 30, 0.2, what=f"{m} re-encrypted under the unlock key")

    victim = wait_for(lambda: agreed_leader(c, managers), 20, what="one leader for all three")
    rest = [m for m in managers if m != victim]
    c.restart(victim)
    assert c.api(victim, "/info")["Swarm"]["LocalNodeState"] == "locked"
    r = c.shoal(victim, "node", "ls", check=False)
    assert r.returncode != 0 and LOCKED in r.stderr, r.stderr

    # the other two elect a leader and take writes; the locked one shows Unreachable
    wait_for(lambda: agreed_leader(c, rest), 20, 0.1, what=f"a leader among {rest}")
    c.shoal(rest[0], "node", "update", "--label-add", "written=while-locked", rest[1])
    wait_for(lambda: manager_status(c, rest[1]).get(victim) == "unreachable", 20, 0.2,
             what=f"{victim} unreachable as seen from {rest[1]}")
    assert "Unreachable" in c.shoal(rest[0], "node", "ls").stdout

    # a wrong key changes nothing; the right one brings it back, caught up
    r = c.shoal(victim, "swarm", "unlock", check=False, input="SWMKEY-1-" + "B" * 43 + "\n")
    assert r.returncode != 0 and "invalid key" in r.stderr
    assert c.api(victim, "/info")["Swarm"]["LocalNodeState"] == "locked"
    c.shoal(victim, "swarm", "unlock", input=key + "\n")
    wait_for(lambda: labels_of(c, victim, rest[1]).get("written") == "while-locked", 30, 0.2,
             what=f"{victim} caught up after unlock")
    wait_for(lambda: sorted(manager_status(c, rest[0]).values()) == ["Leader", "reachable", "reachable"], 30, 0.2,
             what="all three managers reachable again")
