"""Autolock with a real shoald: the key shown once, a restarted manager locked until
`shoal swarm unlock`, wrong keys refused, key rotation, turning it off, and no plaintext of
the cluster's state (or the TLS key) left on disk while it is on."""
from __future__ import annotations

import re
from pathlib import Path

from manager.encryption import InvalidUnlockKey, KeyFile, parse_unlock_key
from tests.integration.harness import wait_for

CANARY = "shoal-autolock-canary-7f3a"
LOCKED = 'Swarm is encrypted and needs to be unlocked before it can be used. Please use "shoal swarm unlock" to unlock it.'


def key_file(d) -> KeyFile:
    return KeyFile(d.state_dir / "swarm" / "raft-keys.json")


def opens_with(d, key: str) -> bool:
    try:
        key_file(d).load(parse_unlock_key(key))
        return True
    except InvalidUnlockKey:
        return False


def raft_bytes(d) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(Path(d.state_dir / "raft").rglob("*")) if p.is_file())


def running(d, service: str) -> list[str]:
    return [t["ID"] for t in d.api_tasks(service) if t["Status"]["State"] == "running"]


def test_autolock_init_restart_locked_unlock_rotate_and_off(daemons):
    m1 = daemons("m1")
    out = m1.cli("swarm", "init", "--autolock").stdout
    assert "To unlock a swarm manager after it restarts, run the `shoal swarm unlock`" in out
    assert "Please remember to store this key in a password manager" in out
    (key,) = re.findall(r"SWMKEY-1-\S+", out)
    assert m1.cli("swarm", "unlock-key", "-q").stdout.strip() == key
    swarm = m1.json("swarm", "inspect")
    assert swarm["Spec"]["EncryptionConfig"]["AutoLockManagers"] is True
    assert key not in m1.cli("swarm", "inspect").stdout  # only GET /swarm/unlockkey shows it
    assert key_file(m1).is_locked() and opens_with(m1, key)
    assert b"ENCRYPTED PRIVATE KEY" in (m1.state_dir / "swarm" / "certs" / "node.pem").read_bytes()

    m1.cli("service", "create", "--name", "web", "--env", f"CANARY={CANARY}", "--detach", "busybox",
           "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done")
    (task,) = wait_for(lambda: running(m1, "web"), 60, what="web running")
    assert CANARY.encode() not in raft_bytes(m1), "service spec readable in the Raft files"

    # restarted: locked; every command needing the swarm says so
    m1.stop()
    m1.start()
    assert m1.api("/info")["Swarm"]["LocalNodeState"] == "locked"
    for args in (("node", "ls"), ("service", "ls"), ("swarm", "join-token", "worker"), ("swarm", "unlock-key")):
        r = m1.cli(*args, check=False)
        assert r.returncode != 0 and LOCKED in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr

    # wrong and malformed keys: refused with the reason, still locked
    other = "SWMKEY-1-" + ("A" * 43)
    for bad, reason in ((other, "invalid key: this key does not unlock this manager"),
                        ("SWMKEY-1-abc", "invalid key: UnlockKey: holds 2 bytes"),
                        ("hunter2", "invalid key: UnlockKey: not a swarm unlock key")):
        r = m1.cli("swarm", "unlock", check=False, input=bad + "\n")
        assert r.returncode != 0 and reason in r.stderr, (bad, r.stderr)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = m1.cli("swarm", "unlock", check=False, input="\n")
    assert r.returncode != 0 and "unlock key: empty" in r.stderr
    assert m1.api("/info")["Swarm"]["LocalNodeState"] == "locked"

    # the right key: the manager starts, the service and its running task are there
    m1.cli("swarm", "unlock", input=key + "\n")
    wait_for(lambda: m1.cli("service", "ls", check=False).returncode == 0, 20, what="control API after unlock")
    assert "web" in m1.cli("service", "ls").stdout
    assert f"CANARY={CANARY}" in m1.cli("service", "inspect", "web").stdout  # it was on disk, sealed
    assert wait_for(lambda: running(m1, "web"), 30, what="web still running") == [task]
    r = m1.cli("swarm", "unlock", check=False, input=key + "\n")
    assert r.returncode != 0 and "swarm is not locked" in r.stderr

    # rotation: a new key; once applied, the old one no longer unlocks this manager
    out = m1.cli("swarm", "unlock-key", "--rotate").stdout
    assert "Successfully rotated manager unlock key." in out
    (new_key,) = re.findall(r"SWMKEY-1-\S+", out)
    assert new_key != key
    wait_for(lambda: opens_with(m1, new_key), 20, what="the new key applied on disk")
    assert not opens_with(m1, key)
    assert CANARY.encode() not in raft_bytes(m1)
    m1.stop()
    m1.start()
    r = m1.cli("swarm", "unlock", check=False, input=key + "\n")
    assert r.returncode != 0 and "invalid key" in r.stderr
    m1.cli("swarm", "unlock", input=new_key + "\n")
    wait_for(lambda: m1.cli("node", "ls", check=False).returncode == 0, 20, what="unlocked with the new key")

    # off: the data key stored plainly; a restart comes back unlocked
    r = m1.cli("swarm", "update", "--autolock=maybe", check=False)
    assert r.returncode == 2 and "--autolock: must be true or false, got 'maybe'" in r.stderr
    assert m1.cli("swarm", "update", "--autolock=false").stdout.strip() == "Swarm updated."
    wait_for(lambda: not key_file(m1).is_locked(), 20, what="the key file unwrapped")
    r = m1.cli("swarm", "unlock-key", check=False)
    assert r.returncode != 0 and "no unlock key is set" in r.stderr
    r = m1.cli("swarm", "unlock-key", "--rotate", check=False)
    assert r.returncode != 0 and "autolock is not turned on" in r.stderr
    m1.stop()
    m1.start()
    assert m1.api("/info")["Swarm"]["LocalNodeState"] == "active"
    wait_for(lambda: m1.cli("service", "ls", check=False).returncode == 0, 20, what="control API after restart")
    assert "web" in m1.cli("service", "ls").stdout
    r = m1.cli("swarm", "unlock", check=False, input=new_key + "\n")
    assert r.returncode != 0 and "swarm is not locked" in r.stderr

    # on again for a running cluster: a new key is shown, and the state is re-encrypted
    out = m1.cli("swarm", "update", "--autolock").stdout
    (third,) = re.findall(r"SWMKEY-1-\S+", out)
    assert third not in (key, new_key)
    wait_for(lambda: key_file(m1).is_locked() and opens_with(m1, third), 20, what="autolock on again")
    assert CANARY.encode() not in raft_bytes(m1)

    # lost the key: a locked manager can still leave (with --force, as it is a manager)
    m1.stop()
    m1.start()
    r = m1.cli("swarm", "leave", check=False)
    assert r.returncode != 0 and "participating as a manager" in r.stderr
    m1.cli("swarm", "leave", "--force")
    assert m1.api("/info")["Swarm"]["LocalNodeState"] == "inactive"
    assert not key_file(m1).exists()


def test_joined_managers_lock_workers_never_do_and_demotion_unlocks(daemons):
    m1 = daemons("m1")
    (key,) = re.findall(r"SWMKEY-1-\S+", m1.cli("swarm", "init", "--autolock",
                                                 "--advertise-addr", f"127.0.0.1:{m1.port}").stdout)
    manager_token = m1.cli("swarm", "join-token", "-q", "manager").stdout.strip()
    worker_token = m1.cli("swarm", "join-token", "-q", "worker").stdout.strip()
    m2, w1 = daemons("m2"), daemons("w1")
    m2.cli("swarm", "join", "--token", manager_token, f"127.0.0.1:{m1.port}")
    w1.cli("swarm", "join", "--token", worker_token, f"127.0.0.1:{m1.port}")

    # the joined manager follows the cluster's setting on its own disk
    wait_for(lambda: key_file(m2).exists() and key_file(m2).is_locked() and opens_with(m2, key), 30,
             what="m2 locked under the swarm's key")
    assert b"ENCRYPTED PRIVATE KEY" in (m2.state_dir / "swarm" / "certs" / "node.pem").read_bytes()

    # a worker keeps no key file, and restarts straight into the swarm
    assert not key_file(w1).exists()
    w1.stop()
    w1.start()
    assert w1.api("/info")["Swarm"]["LocalNodeState"] == "active"
    wait_for(lambda: {n["Description"]["Hostname"]: n["Status"]["State"] for n in m1.api("/nodes")}.get("w1") == "ready",
             30, what="w1 ready again")

    # demoted, m2 is a worker: its key file goes and its TLS key is stored plainly again
    m1.cli("node", "demote", "m2")
    wait_for(lambda: not key_file(m2).exists(), 30, what="m2's key file removed on demotion")
    assert b"ENCRYPTED" not in (m2.state_dir / "swarm" / "certs" / "node.pem").read_bytes()
    m2.stop()
    m2.start()
    assert m2.api("/info")["Swarm"]["LocalNodeState"] == "active"
