"""Membership and security through the harness: tokens, roles on the cluster port, drain,
removal, and a root CA rotation, each node in its own network namespace."""
from __future__ import annotations

import sys
import textwrap

import pytest

from tests.multihost.helpers import wait_for

pytestmark = pytest.mark.usefixtures("join_available")


def states(c, via="m1"):
    return {h: n["Status"]["State"] for h, n in c.swarm_nodes(via).items()}


def https_status(c, node: str, url: str, with_cert: bool) -> str:
    """From inside `node`'s namespace, GET url with (or without) that node's own certificate."""
    certs = c.paths(node).state_dir / "swarm" / "certs"
    code = textwrap.dedent(f"""
        import ssl, urllib.request, urllib.error
        ctx = ssl.create_default_context(cafile="{certs}/ca.crt"); ctx.check_hostname = False
        if {with_cert}: ctx.load_cert_chain("{certs}/node.pem")
        try:
            print(urllib.request.urlopen("{url}", context=ctx, timeout=10).status)
        except urllib.error.HTTPError as e:
            print(e.code)
    """)
    return c.exec(node, sys.executable, "-c", code, check=True).stdout.strip()


def test_tokens_roles_drain_and_removal(cluster, busybox_tar):
    c = cluster(managers=1, workers=2, join=False)
    m1 = c.address("m1")
    token = c.join_token("worker")
    for bad, why in ((token[:-2] + "zz", "join token"), ("SHLTKN-1-nope", "join token"),
                     ("SHLTKN-1-" + "0" * 64 + "-" + token.rsplit("-", 1)[1], "does not match")):
        r = c.shoal("w1", "swarm", "join", "--token", bad, f"{m1}:2377", check=False)
        assert r.returncode != 0 and why in r.stderr and "Traceback" not in r.stderr, r.stderr
    rotated = c.shoal("m1", "swarm", "join-token", "-q", "--rotate", "worker").stdout.strip()
    r = c.shoal("w1", "swarm", "join", "--token", token, f"{m1}:2377", check=False)
    assert r.returncode != 0 and "join token" in r.stderr
    assert set(c.swarm_nodes("m1")) == {"m1"}, "refused joins leave no trace"
    for w in ("w1", "w2"):
        c.shoal(w, "swarm", "join", "--token", rotated, f"{m1}:2377")
    wait_for(lambda: states(c) == {"m1": "ready", "w1": "ready", "w2": "ready"}, 30, what="3 ready nodes")

    # a worker's certificate reaches its session, never the control API
    assert https_status(c, "w1", f"https://{m1}:2377/control/nodes", with_cert=True) == "403"
    assert https_status(c, "w1", f"https://{m1}:2377/control/nodes", with_cert=False) == "403"

    # drain empties a node
    for n in ("m1", "w1", "w2"):
        c.shoal(n, "image", "import", str(busybox_tar), "busybox:latest")
    c.shoal("m1", "service", "create", "--detach", "--name", "s", "--replicas", "6", "busybox:latest",
            "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done")

    def where():
        names = {n["ID"]: h for h, n in c.swarm_nodes("m1").items()}
        out: dict[str, int] = {}
        for t in c.api("m1", '/tasks?filters={"service":["s"]}'):
            if t["Status"]["State"] == "running" and t["DesiredState"] == "running":
                out[names[t["NodeID"]]] = out.get(names[t["NodeID"]], 0) + 1
        return out
    wait_for(lambda: where() == {"m1": 2, "w1": 2, "w2": 2}, 40, what="2 tasks per node")
    c.shoal("m1", "node", "update", "--availability", "drain", "w2")
    wait_for(lambda: "w2" not in where() and sum(where().values()) == 6, 40, what="w2 drained")

    # a removed node cannot come back with its old certificate
    c.kill("w2")
    wait_for(lambda: states(c)["w2"] == "down", 30, what="w2 down")
    c.shoal("m1", "node", "rm", "w2")
    c.start("w2")
    wait_for(lambda: "removed" in c.paths("w2").log.read_text(), 20, what="w2 told it was removed")
    assert "w2" not in c.swarm_nodes("m1")


def test_root_ca_rotation_keeps_every_node_ready(cluster):
    c = cluster(managers=1, workers=2)
    before = c.shoal("m1", "swarm", "ca").stdout
    out = c.shoal("m1", "swarm", "ca", "--rotate", timeout=120).stdout
    assert "rotated CA certificates: done" in out
    after = c.shoal("m1", "swarm", "ca").stdout
    assert after != before
    wait_for(lambda: set(states(c).values()) == {"ready"}, 30, what="all nodes ready after the rotation")
    for node in ("w1", "w2"):
        ca = (c.paths(node).state_dir / "swarm" / "certs" / "ca.crt").read_text()
        wait_for(lambda: ca.strip() == after.strip() or
                 (c.paths(node).state_dir / "swarm" / "certs" / "ca.crt").read_text().strip() == after.strip(),
                 20, what=f"{node} trusts only the new root")
