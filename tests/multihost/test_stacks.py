"""The example stacks (stacks/web.yml, global.yml, voting.yml, secrets.yml) deployed on one real
cluster (1 manager, 2 workers): their tasks run where their placement says, the web answers on its
published port and reaches its backend by name, a vote travels over both networks, a secret
reaches only the tasks that use it and no node's disk, redeploying changes nothing, `--dry-run`
shows an edit without making it, and `stack rm` leaves nothing.

The three stacks are deployed once, in the module's fixture, and checked by the tests in order;
the last one removes them."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.dev.cluster import REPO, DevCluster, supports_join
from tests.multihost.helpers import unique_name, wait_for

STACKS = {"shop": "web.yml", "mon": "global.yml", "vote": "voting.yml", "vault": "secrets.yml"}
TASKS = {"shop_web": 2, "shop_cache": 1, "mon_agent": 2, "mon_edge": 1,
         "vote_vote": 2, "vote_result": 1, "vote_redis": 1, "vote_db": 1, "vote_worker": 1, "vault_app": 2}

_GET = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode().strip())"


class Stacks:
    def __init__(self, c: DevCluster):
        self.c = c
        self.hosts = {n["ID"]: host for host, n in c.swarm_nodes("m1").items()}

    def shoal(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.c.shoal("m1", *args, check=check)

    def deploy(self, stack: str, path: Path | str, *flags: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.shoal("stack", "deploy", *flags, "-c", str(path), stack, check=check)

    def services(self) -> dict[str, dict]:
        return {s["Spec"]["Name"]: s for s in self.c.api("m1", "/services")}

    def running(self) -> dict[str, list[dict]]:
        """Running tasks by service name."""
        names = {s["ID"]: name for name, s in self.services().items()}
        out: dict[str, list[dict]] = {}
        for t in self.c.api("m1", "/tasks"):
            if t["DesiredState"] == "running" and t["Status"]["State"] == "running" and t["ServiceID"] in names:
                out.setdefault(names[t["ServiceID"]], []).append(t)
        return out

    def get(self, src: str, dst: str, port: int, path: str) -> str:
        """An HTTP GET from inside node src to node dst's address ('' when it failed)."""
        r = self.c.exec(src, sys.executable, "-c", _GET, f"http://{self.c.address(dst)}:{port}{path}", timeout=15)
        return r.stdout.strip() if r.returncode == 0 else ""


@pytest.fixture(scope="module")
def st(tmp_path_factory, request):
    if os.geteuid() != 0:
        pytest.skip("multi-host tests need root")
    if not supports_join():
        pytest.skip("`shoal swarm join` is not available yet")
    tar = tmp_path_factory.mktemp("image") / "busybox.tar"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make-busybox-image.py"), str(tar)], check=True,
                   capture_output=True)
    c = DevCluster(unique_name())
    failed_before = request.session.testsfailed
    ok = False
    try:
        c.up(1, 2)
        for n in ("m1", "w1", "w2"):
            c.shoal(n, "image", "import", str(tar), "busybox:latest")
        c.shoal("m1", "node", "update", "--label-add", "tier=edge", "w2")
        s = Stacks(c)
        for stack, file in STACKS.items():
            s.deploy(stack, REPO / "stacks" / file)
        ok = True
        yield s
    finally:
        if (not ok or request.session.testsfailed != failed_before) and c.exists():
            for n in ("m1", "w1", "w2"):
                sys.stderr.write(f"--- {c.name}/{n} shoald log (tail) ---\n{c.log_tail(n, 40)}\n")
        report = c.down()
        assert not report.leftovers, f"left behind: {report.leftovers}"


def test_services_converge_with_their_tasks_where_placement_says(st):
    def converged():
        running = st.running()
        return running if {k: len(v) for k, v in running.items()} == TASKS else None
    running = wait_for(converged, 60, 0.3, "every stack's tasks running")
    on = {name: sorted(st.hosts[t["NodeID"]] for t in ts) for name, ts in running.items()}
    assert on["mon_agent"] == ["w1", "w2"], "global, node.role == worker"
    assert on["mon_edge"] == ["w2"], "global, node.labels.tier == edge"
    assert on["vote_db"] == on["vote_worker"] == ["m1"], "node.role == manager"
    assert len(set(on["shop_web"])) == len(set(on["vote_vote"])) == 2, "replicas spread over nodes"
    nets = {name: sorted({a["Network"]["Spec"]["Name"] for t in ts for a in t["NetworksAttachments"]})
            for name, ts in running.items()}
    assert nets["vote_vote"] == ["ingress", "vote_frontend"] and nets["vote_redis"] == ["vote_frontend"]
    assert nets["vote_result"] == ["ingress", "vote_backend"] and nets["vote_db"] == ["vote_backend"]
    assert nets["vote_worker"] == ["vote_backend", "vote_frontend"], "only the worker is on both"
    assert nets["shop_cache"] == ["shop_backend"] and nets["mon_agent"] == ["mon_default"]
    spec = st.services()["vote_worker"]["Spec"]
    assert spec["TaskTemplate"]["RestartPolicy"] == {"Condition": "on-failure", "Delay": 10_000_000_000,
                                                     "MaxAttempts": 3, "Window": 120_000_000_000}
    assert st.services()["vote_result"]["Spec"]["UpdateConfig"]["Delay"] == 10_000_000_000


def test_the_web_answers_on_its_published_port_and_reaches_its_backend_by_name(st):
    for node in ("m1", "w1", "w2"):   # the routing mesh: every node, whether it runs a web task or not
        page = wait_for(lambda node=node: st.get("w1", node, 8080, "/"), 20, 0.3, f"{node}:8080")
        assert page.startswith("hello from ")
    # The CGI script asks "cache" over the stack's overlay network, through its DNS.
    assert st.get("w2", "m1", 8080, "/cgi-bin/cache").startswith("+PONG from ")


def test_the_global_agent_answers_on_the_workers_only(st):
    probe = [sys.executable, "-m", "tests.overlay.probe", "connect"]
    for node in ("w1", "w2"):   # a host-mode port: the task on that very node answers
        answer = wait_for(lambda node=node: st.c.exec("m1", *probe, st.c.address(node), "9100").stdout.strip(),
                          20, 0.3, f"{node}:9100")
        assert answer.startswith("agent_up"), answer
    r = st.c.exec("w1", *probe, st.c.address("m1"), "9100", "1")
    assert "refused" in r.stdout, "the manager runs no agent"


def test_a_vote_travels_from_vote_through_redis_and_worker_to_db_and_result(st):
    # vote -> redis on frontend; worker -> db on backend; result reads db on backend.
    for node, choice in (("w1", "a"), ("w2", "a"), ("m1", "b")):
        assert wait_for(lambda node=node, choice=choice: st.get("m1", node, 5000, f"/cgi-bin/vote?{choice}"),
                        20, 0.3, "a vote accepted") == "+OK"
    assert wait_for(lambda: st.get("w1", "w2", 5001, "/cgi-bin/result") == "a=2\nb=1", 20, 0.3, "the count")


def test_a_secret_reaches_only_its_tasks_and_no_disk(st):
    secret = (REPO / "stacks" / "secrets" / "db_password.txt").read_bytes()
    running = wait_for(lambda: len(st.running().get("vault_app", [])) == 2 and st.running(), 60, 0.3,
                       "vault_app running")
    assert sorted(st.hosts[t["NodeID"]] for t in running["vault_app"]) == ["w1", "w2"]
    for t in running["vault_app"]:
        root = Path(f"/proc/{t['Status']['ContainerStatus']['PID']}/root")
        f = root / "run" / "secrets" / "db_password"
        assert f.read_bytes() == secret
        assert (f.stat().st_uid, f.stat().st_gid, f.stat().st_mode & 0o777) == (1000, 1000, 0o400)
        assert "greeting = hello from a config" in (root / "etc" / "app.conf").read_text()
    other = running["shop_web"][0]
    assert not Path(f"/proc/{other['Status']['ContainerStatus']['PID']}/root/run/secrets/db_password").exists()
    assert "password of 30 bytes" in st.shoal("service", "logs", "vault_app").stdout
    # no node keeps its bytes on disk: the manager's Raft log holds it sealed, workers only in memory
    state_dirs = [str(st.c.paths(n).state_dir) for n in ("m1", "w1", "w2")]
    r = subprocess.run(["grep", "-rlsF", "--devices=skip", secret.decode().strip(), *state_dirs, "/run"],
                       capture_output=True, text=True)
    assert r.stdout == "", r.stdout
    secrets = {s["Spec"]["Name"]: s for s in st.c.api("m1", "/secrets")}
    assert secrets["vault_db_password"]["Spec"]["Labels"] == {"com.docker.stack.namespace": "vault"}
    assert "Data" not in secrets["vault_db_password"]["Spec"]


def test_redeploying_changes_nothing_and_a_dry_run_shows_an_edit_without_making_it(st, tmp_path):
    for stack, file in STACKS.items():
        assert f"Stack {stack} is up to date: nothing changed." in st.deploy(stack, REPO / "stacks" / file).stdout
    before = {name: s["Version"]["Index"] for name, s in st.services().items()}
    tasks_before = {t["ID"] for t in st.c.api("m1", "/tasks")}

    edited = tmp_path / "web.yml"
    text = (REPO / "stacks" / "web.yml").read_text()
    edited.write_text(text.replace("replicas: 2", "replicas: 3").replace("-h /www\n", "-h /www -v\n"))
    out = st.deploy("shop", edited, "--dry-run").stdout
    assert "~ service shop_web: Mode.Replicated.Replicas: 2 -> 3" in out, out
    assert '~ service shop_web: TaskTemplate.ContainerSpec.Args[2]: "…' in out and '-h /www -v\\n"' in out, out
    assert "shop_web: 3 tasks -> m1 (1), w1 (1), w2 (1)" in out, out   # every task is replaced: even spread
    assert "0 to create, 1 to update, 0 to remove, 1 service unchanged" in out, out

    pinned = tmp_path / "voting.yml"
    pinned.write_text((REPO / "stacks" / "voting.yml").read_text().replace("node.role == manager", "node.labels.tier == none"))
    out = st.deploy("vote", pinned, "--dry-run").stdout
    assert ("vote_db: 1 task cannot be placed: no suitable node (3 nodes did not satisfy constraint "
            "node.labels.tier==none)") in out, out

    bad = tmp_path / "bad.yml"
    bad.write_text(text.replace("busybox:latest", "NoSuch:1"))  # not a valid reference
    r = st.deploy("shop", bad, "--dry-run", check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "services.shop_web: TaskTemplate.ContainerSpec.Image: reference: repository name 'NoSuch' must be lowercase" in r.stderr, r.stderr
    r = st.deploy("other", bad, check=False)
    assert r.returncode == 1 and "services.other_web: TaskTemplate.ContainerSpec.Image: reference:" in r.stderr
    assert "Creating" not in r.stdout, "refused before anything changed"

    assert {name: s["Version"]["Index"] for name, s in st.services().items()} == before, "the dry runs changed nothing"
    assert {t["ID"] for t in st.c.api("m1", "/tasks")} == tasks_before
    assert "other_default" not in {n["Name"] for n in st.c.api("m1", "/networks")}
    with pytest.raises(ValueError, match="Services: must be a list"):
        st.c.api("m1", "/services/placement", "POST", {"Services": "web"})


def test_stack_rm_leaves_nothing(st):
    out = st.shoal("stack", "rm", *STACKS).stdout
    assert "Removing network vote_frontend" in out and "Removing service mon_agent" in out
    assert "Removing secret vault_db_password" in out and "Removing config vault_app_conf" in out
    wait_for(lambda: not st.c.api("m1", "/tasks"), 30, 0.3, "every task gone")
    assert st.c.api("m1", "/services") == []
    assert [n["Name"] for n in st.c.api("m1", "/networks")] == ["ingress"], "only the routing mesh stays"
    assert st.c.api("m1", "/secrets") == [] and st.c.api("m1", "/configs") == []
    r = st.shoal("stack", "rm", "shop", check=False)
    assert r.returncode == 1 and "Nothing found in stack: shop" in r.stderr
