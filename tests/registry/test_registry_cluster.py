"""Images across a cluster, as Docker Swarm runs them: a manager pins a service's tag to the
registry's digest (`--resolve-image`), a worker that lacks the image pulls it before it creates
the container, and `--with-registry-auth` hands the manager's login to the workers (never to
`service inspect`). A real docker-registry (pushed with skopeo) and real daemons, one manager
and one joined worker on loopback (the integration harness)."""
from __future__ import annotations

import json
import os
import re
from typing import Callable, Iterator

import pytest

from tests.integration.harness import Daemon, free_port, new_daemon, wait_for
from tests.registry.conftest import PASSWORD, USER
from tests.registry.helpers import Built, build_image, manifest_entry, skopeo, small_tar, write_index

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (daemons run containers)")


@pytest.fixture
def swarm() -> Iterator[Callable[[], tuple[Daemon, Daemon]]]:
    """swarm() -> (manager, worker): two daemons joined over mutual TLS; both cleaned up."""
    made: list[Daemon] = []

    def make() -> tuple[Daemon, Daemon]:
        m1 = new_daemon("m1")
        made.append(m1)
        m1.start()
        port = free_port()
        m1.cli("swarm", "init", "--listen-addr", f"127.0.0.1:{port}", "--advertise-addr", f"127.0.0.1:{port}")
        token = m1.cli("swarm", "join-token", "-q", "worker").stdout.strip()
        w1 = new_daemon("w1")
        made.append(w1)
        w1.start()
        w1.cli("swarm", "join", "--token", token, f"127.0.0.1:{port}")
        wait_for(lambda: len(m1.api("/nodes")) == 2 and all(n["Status"]["State"] == "ready" for n in m1.api("/nodes")),
                 30, what="2 ready nodes")
        return m1, w1

    try:
        yield make
    finally:
        for d in made:
            d.cleanup()


def push(tmp_path, layers, name: str, creds: str | None = None, tag: str = "1") -> Built:
    layout = tmp_path / f"layout-{tag}"
    built = build_image(layout, layers, cmd=["sleep", "3600"])
    write_index(layout, [manifest_entry(built, tag)])
    extra = [f"--dest-creds={creds}"] if creds else []
    skopeo(tmp_path, "copy", "--dest-tls-verify=false", *extra, f"oci:{layout}:{tag}", f"docker://{name}:{tag}")
    return built


def image_of(d: Daemon, service: str) -> str:
    (svc,) = d.json("service", "inspect", service)
    return svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]


def tasks(d: Daemon, service: str) -> list[dict]:
    return d.api_tasks(service)


def running_on(d: Daemon, service: str, node_id: str, count: int = 1) -> bool:
    return sum(1 for t in tasks(d, service) if t["Status"]["State"] == "running" and t["NodeID"] == node_id) == count


def node_id(d: Daemon) -> str:
    return d.api("/info")["Swarm"]["NodeID"]


def test_a_worker_pulls_an_image_only_the_registry_has(tmp_path, registry, layers, swarm):
    name = f"{registry.host}/demo/app"
    built = push(tmp_path, layers, name)
    m1, w1 = swarm()
    w1_id = node_id(w1)
    on_worker = ("--constraint", "node.role==worker")

    # Pinned at create to the registry's digest, although no node has the image.
    out = m1.cli("service", "create", "--name", "app", "--replicas", "3", *on_worker, "--detach", f"{name}:1")
    assert "could not be accessed" not in out.stderr, out.stderr
    assert image_of(m1, "app") == f"{name}:1@{built.manifest_digest}"
    assert m1.api(f"/images/{name}:1/json").get("Id") is None, "the manager did not pull it"

    # The worker pulls (once, for its three tasks) and runs them.
    wait_for(lambda: running_on(m1, "app", w1_id, 3), 90, what="3 tasks running on the worker")
    pulled = w1.api(f"/images/{name}@{built.manifest_digest}/json")
    assert pulled["Id"] == built.config_digest and pulled["RepoTags"] == []  # pulled by digest, not by tag
    log = w1.log_path.read_text()
    assert len(re.findall(rf"pulling {re.escape(name)}:1@", log)) == 1, "concurrent tasks share one pull"

    # --resolve-image never: the tag as given; the worker resolves (and here pulls) it itself.
    m1.cli("service", "create", "--name", "loose", "--resolve-image", "never", *on_worker, "--detach", f"{name}:1")
    assert image_of(m1, "loose") == f"{name}:1"
    wait_for(lambda: running_on(m1, "loose", w1_id), 60, what="the unpinned task running")

    # stack deploy passes --resolve-image through (default always).
    compose = f"services:\n  web:\n    image: {name}:1\n    deploy:\n      placement:\n" \
              f"        constraints: [node.role==worker]\n"
    m1.cli("stack", "deploy", "-c", "-", "pinned", input=compose)
    assert image_of(m1, "pinned_web") == f"{name}:1@{built.manifest_digest}"
    m1.cli("stack", "deploy", "--resolve-image", "never", "-c", "-", "loose", input=compose)
    assert image_of(m1, "loose_web") == f"{name}:1"

    # The tag moves in the registry: `changed` keeps the pin (the file did not change); the
    # default (always) asks the registry again, shows the move in --dry-run and updates to it.
    layout = tmp_path / "layout-moved"
    moved = build_image(layout, layers, cmd=["sleep", "3601"])
    write_index(layout, [manifest_entry(moved, "1")])
    skopeo(tmp_path, "copy", "--dest-tls-verify=false", f"oci:{layout}:1", f"docker://{name}:1")
    assert moved.manifest_digest != built.manifest_digest
    out = m1.cli("stack", "deploy", "--resolve-image", "changed", "-c", "-", "pinned", input=compose).stdout
    assert "up to date" in out and image_of(m1, "pinned_web") == f"{name}:1@{built.manifest_digest}"
    dry = m1.cli("stack", "deploy", "--dry-run", "-c", "-", "pinned", input=compose).stdout
    assert "~ service pinned_web: TaskTemplate.ContainerSpec.Image" in dry and moved.manifest_digest in dry, dry
    assert image_of(m1, "pinned_web") == f"{name}:1@{built.manifest_digest}", "a dry run changes nothing"
    m1.cli("stack", "deploy", "-c", "-", "pinned", input=compose)
    assert image_of(m1, "pinned_web") == f"{name}:1@{moved.manifest_digest}"
    assert "up to date" in m1.cli("stack", "deploy", "-c", "-", "pinned", input=compose).stdout

    # Nothing in any registry: created unpinned with Docker's warning; the worker's pull is
    # refused and the task rejected with the registry's reason (and retried per restart policy).
    out = m1.cli("service", "create", "--name", "ghost", *on_worker, "--detach", f"{registry.host}/demo/nothing:1")
    assert f"image {registry.host}/demo/nothing:1 could not be accessed on a registry to record its digest" in out.stderr
    assert image_of(m1, "ghost") == f"{registry.host}/demo/nothing:1"
    wait_for(lambda: any(t["Status"]["State"] == "rejected" and "No such image" in t["Status"].get("Err", "")
                         for t in tasks(m1, "ghost")), 60, what="the ghost task rejected")

    # Bad flags: one line naming the flag, non-zero exit, nothing created.
    before = m1.cli("service", "ls", "-q").stdout
    for args in (("service", "create", "--resolve-image", "sometimes", "--name", "x", f"{name}:1"),
                 ("service", "update", "--resolve-image", "sometimes", "app"),
                 ("stack", "deploy", "--resolve-image", "sometimes", "-c", "-", "st")):
        r = m1.cli(*args, check=False, input="services:\n  a:\n    image: busybox\n")
        assert r.returncode != 0 and "--resolve-image: must be always, changed or never, got 'sometimes'" in r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert m1.cli("service", "ls", "-q").stdout == before


def test_with_registry_auth_hands_the_login_to_the_workers(tmp_path, basic_registry, layers, swarm):
    name = f"{basic_registry.host}/demo/private"
    built = push(tmp_path, layers, name, creds=f"{USER}:{PASSWORD}")
    m1, w1 = swarm()
    w1_id = node_id(w1)
    m1.cli("login", basic_registry.host, "-u", USER, "--password-stdin", input=PASSWORD + "\n")
    on_worker = ("--constraint", "node.role==worker", "--detach")

    # Without --with-registry-auth: the manager pins with its own login, but the worker has
    # none, so its pull is refused and the task says why.
    m1.cli("service", "create", "--name", "noauth", *on_worker, f"{name}:1")
    assert image_of(m1, "noauth") == f"{name}:1@{built.manifest_digest}"
    wait_for(lambda: any(t["Status"]["State"] == "rejected" and "unauthorized" in t["Status"].get("Err", "")
                         for t in tasks(m1, "noauth")), 60, what="the task rejected as unauthorized")
    ps = m1.cli("service", "ps", "--no-trunc", "noauth").stdout
    assert "unauthorized" in ps

    # With it: the manager's login goes with the service, and the worker pulls with it.
    m1.cli("service", "create", "--name", "withauth", "--with-registry-auth", *on_worker, f"{name}:1")
    wait_for(lambda: running_on(m1, "withauth", w1_id), 90, what="the task running with the login")
    assert w1.api(f"/images/{name}@{built.manifest_digest}/json")["Id"] == built.config_digest

    # stack deploy --with-registry-auth: the same, for a stack's services.
    stacked = push(tmp_path, layers + [small_tar({"etc/stack": b"yes\n"})], name, creds=f"{USER}:{PASSWORD}",
                   tag="stack")
    compose = f"services:\n  app:\n    image: {name}:stack\n    deploy:\n      placement:\n" \
              f"        constraints: [node.role==worker]\n"
    m1.cli("stack", "deploy", "--with-registry-auth", "-c", "-", "priv", input=compose)
    assert image_of(m1, "priv_app") == f"{name}:stack@{stacked.manifest_digest}"
    wait_for(lambda: running_on(m1, "priv_app", w1_id), 90, what="the stack's task running with the login")

    # The credentials never come back out of the API, and never reach the worker's disk.
    encoded_password = PASSWORD.encode().hex()
    for text in (m1.cli("service", "inspect", "withauth").stdout,
                 m1.cli("service", "inspect", "--pretty", "withauth").stdout,
                 json.dumps(m1.api("/services")), json.dumps(m1.api_tasks("withauth")),
                 m1.cli("service", "ps", "--no-trunc", "withauth").stdout):
        assert PASSWORD not in text and "PullOptions" not in text and "RegistryAuth" not in text
        assert encoded_password not in text
    assert not (w1.state_dir / "registry-auth.json").exists()

    # An update without the flag keeps the credentials (Docker's registryAuthFrom=spec): the
    # rolling update to a new private version pulls it on the worker with them.
    v2 = push(tmp_path, layers + [small_tar({"etc/version": b"2\n"})], name, creds=f"{USER}:{PASSWORD}", tag="2")
    m1.cli("service", "update", "--detach", "--image", f"{name}:2", "withauth")
    assert image_of(m1, "withauth") == f"{name}:2@{v2.manifest_digest}"
    wait_for(lambda: any(t["Status"]["State"] == "running" and t["Spec"]["ContainerSpec"]["Image"].endswith(v2.manifest_digest)
                         for t in tasks(m1, "withauth")), 90, what="the updated task running after a new pull")
    assert w1.api(f"/images/{name}@{v2.manifest_digest}/json")["Id"] == v2.config_digest

    # A worker's own login serves the services that carry none, as a Docker daemon's does: the
    # rejected service's next attempt (its restart policy retries it) pulls with it.
    w1.cli("login", basic_registry.host, "-u", USER, "--password-stdin", input=PASSWORD + "\n")
    wait_for(lambda: running_on(m1, "noauth", w1_id), 60, what="noauth running with the worker's own login")
