"""Networks and published ports from the CLI: create, attach, refuse what does not exist."""
from tests.integration.harness import wait_for


def test_network_and_publish_flags(daemon, busybox_tar):
    d = daemon
    d.cli("swarm", "init")
    d.cli("image", "import", str(busybox_tar), "busybox:latest")
    d.cli("network", "create", "-d", "overlay", "--subnet", "10.91.0.0/24", "backend")
    assert "backend" in d.cli("network", "ls").stdout
    r = d.cli("service", "create", "--name", "lost", "--network", "nosuch", "busybox", "true", check=False)
    assert r.returncode != 0 and "TaskTemplate.Networks[0].Target" in r.stderr and "nosuch" in r.stderr
    r = d.cli("service", "create", "--name", "x", "--publish", "80:http", "busybox", check=False)
    assert r.returncode != 0 and "--publish" in r.stderr

    d.cli("service", "create", "--name", "web", "--detach", "--network", "name=backend,alias=www",
          "--publish", "published=18080,target=80", "busybox",
          "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done")
    (svc,) = d.json("service", "inspect", "web")
    assert svc["Spec"]["TaskTemplate"]["Networks"][0]["Aliases"] == ["www"]
    assert svc["Spec"]["EndpointSpec"]["Ports"][0]["PublishedPort"] == 18080

    def attached():
        for t in d.api_tasks("web"):
            if t["Status"]["State"] == "running":
                addrs = [a for att in t.get("NetworksAttachments", []) for a in att.get("Addresses", [])]
                if any(a.startswith("10.91.0.") for a in addrs):
                    return addrs
        return None
    wait_for(attached, 60, what="the task running with an address on backend")
    r = d.cli("network", "rm", "backend", check=False)
    assert r.returncode != 0 and "in use" in r.stderr
    d.cli("service", "rm", "web")
    wait_for(lambda: d.cli("network", "rm", "backend", check=False).returncode == 0, 60, what="network removable")
