"""What a service spec asks of its containers reaches them: mounts (bind, named volume, tmpfs),
read-only root, capabilities, ulimits, and health checks that gate running and replace a task."""
import shutil
import tempfile
from pathlib import Path

from tests.integration.harness import wait_for

LOOP = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]


def running(d, service):
    return [t for t in d.api_tasks(service) if t["Status"]["State"] == "running" and t["DesiredState"] == "running"]


def test_mounts_caps_ulimits_and_health(daemon, busybox_tar):
    d = daemon
    d.cli("swarm", "init")
    d.cli("image", "import", str(busybox_tar), "busybox:latest")
    host_dir = tempfile.mkdtemp(prefix="shoal-bind-")
    Path(host_dir, "hello.txt").write_text("from the host\n")
    try:
        d.cli("service", "create", "--name", "spec", "--detach", "--read-only",
              "--mount", f"type=bind,source={host_dir},target=/data,readonly",
              "--mount", "type=volume,source=store,target=/store",
              "--mount", "type=tmpfs,target=/scratch,tmpfs-size=1m",
              "--cap-drop", "CHOWN", "--ulimit", "nofile=100:200", "busybox",
              "sh", "-c", "echo kept > /store/v; trap 'exit 0' TERM; while true; do sleep 1; done")
        (t,) = wait_for(lambda: running(d, "spec"), 60, what="running")
        pid = t["Status"]["ContainerStatus"]["PID"]
        assert Path(f"/proc/{pid}/root/data/hello.txt").read_text() == "from the host\n"
        mounts = {line.split()[1]: line.split() for line in Path(f"/proc/{pid}/mounts").read_text().splitlines()}
        assert "ro" in mounts["/data"][3].split(",") and mounts["/scratch"][2] == "tmpfs"
        assert "ro" in mounts["/"][3].split(","), "read-only root filesystem"
        volume_file = d.state_dir / "volumes" / "store" / "_data" / "v"
        wait_for(volume_file.exists, 10, what="volume written")
        cap_eff = int([l for l in Path(f"/proc/{pid}/status").read_text().splitlines()
                       if l.startswith("CapEff:")][0].split()[1], 16)
        assert not cap_eff & 1, "CAP_CHOWN (bit 0) was dropped"
        nofile = [l for l in Path(f"/proc/{pid}/limits").read_text().splitlines() if l.startswith("Max open files")][0]
        assert nofile.split()[3:5] == ["100", "200"], nofile
        d.cli("service", "rm", "spec")
        wait_for(lambda: not [x for x in d.api_tasks() if x["ServiceID"] == t["ServiceID"]], 60, what="removed")
        assert volume_file.read_text() == "kept\n", "volumes outlive tasks"
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)

    # a health check gates "running"; an unhealthy task is replaced
    d.cli("service", "create", "--name", "healthy", "--detach", "--health-cmd", "test -e /tmp/ready",
          "--health-interval", "200ms", "--health-retries", "2", "--health-start-period", "10s", "busybox",
          "sh", "-c", "trap 'exit 0' TERM; sleep 1; touch /tmp/ready; while true; do sleep 1; done")
    wait_for(lambda: any(t["Status"]["State"] == "starting" for t in d.api_tasks("healthy")), 20,
             what="starting while not yet healthy")
    wait_for(lambda: running(d, "healthy"), 30, what="running once healthy")
    d.cli("service", "create", "--name", "sick", "--detach", "--health-cmd", "false", "--health-interval", "200ms",
          "--health-retries", "2", "--restart-delay", "0s", "busybox", *LOOP)
    wait_for(lambda: any("unhealthy" in (t["Status"].get("Err") or "") for t in d.api_tasks("sick")), 40,
             what="an unhealthy task failed")
    wait_for(lambda: len(d.api_tasks("sick")) >= 2, 30, what="and was replaced")
    r = d.cli("service", "create", "--name", "bad", "--mount", "type=bind,target=/x", "busybox", check=False)
    assert r.returncode != 0 and "--mount" in r.stderr


SURROUND_PROBE = ("for k in net/ipv4/ip_forward kernel/shmmax; do echo \"sysctl $k=$(cat /proc/sys/$k)\"; done; "
                  "cat /etc/hosts /etc/resolv.conf; trap 'exit 0' TERM; while true; do sleep 1; done")


def test_sysctls_hosts_dns_logging(daemon, busybox_tar, tmp_path):
    """Sysctls, extra hosts, DNS search and options, isolation and log options from `service
    create` flags reach the task (seen from inside it, on an overlay network); a compose file with
    the same keys deploys; --log-driver none leaves a task without logs, and service logs says so."""
    import json
    d = daemon
    d.cli("swarm", "init")
    d.cli("image", "import", str(busybox_tar), "busybox:latest")
    d.cli("network", "create", "-d", "overlay", "--subnet", "10.92.0.0/24", "surround-net")
    d.cli("service", "create", "--name", "surround", "--detach", "--network", "surround-net",
          "--sysctl", "net.ipv4.ip_forward=1", "--sysctl", "kernel.shmmax=123456789",
          "--host", "db.internal:10.1.2.3", "--dns", "192.0.2.53", "--dns-search", "example.test",
          "--dns-option", "ndots:3", "--log-opt", "max-size=64k", "--log-opt", "max-file=2", "--isolation", "default",
          "busybox", "sh", "-c", SURROUND_PROBE)
    (t,) = wait_for(lambda: running(d, "surround"), 60, what="running")
    out = wait_for(lambda: (lambda o: o if "options" in o else None)(d.cli("service", "logs", "surround").stdout),
                   20, what="the probe's output in the task's log")
    lines = [line.split("    | ", 1)[1] for line in out.splitlines()]
    assert "sysctl net/ipv4/ip_forward=1" in lines and "sysctl kernel/shmmax=123456789" in lines, lines
    assert "10.1.2.3\tdb.internal" in lines, lines                    # the extra host ...
    own = t["NetworksAttachments"][0]["Addresses"][0].split("/")[0]
    assert lines.index("10.1.2.3\tdb.internal") < [i for i, l in enumerate(lines) if l.startswith(own)][0], \
        "... kept, before the line the overlay appends for the container's own address"
    gateway = "10.92.0.1"
    assert "search example.test" in lines and f"nameserver {gateway}" in lines and "options ndots:3" in lines, lines
    assert "nameserver 192.0.2.53" not in lines, "on an overlay, the node's DNS server forwards to it instead"
    meta = json.loads((d.state_dir / "containers" / t["Status"]["ContainerStatus"]["ContainerID"] / "shoal.json")
                      .read_text())
    assert (meta["log"]["max_size"], meta["log"]["max_files"]) == (64 * 1024, 2)
    (svc,) = d.json("service", "inspect", "surround")
    cs = svc["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert cs["Sysctls"] == {"net.ipv4.ip_forward": "1", "kernel.shmmax": "123456789"}
    assert cs["Hosts"] == ["10.1.2.3 db.internal"] and cs["Isolation"] == "default"
    assert cs["DNSConfig"] == {"Nameservers": ["192.0.2.53"], "Search": ["example.test"], "Options": ["ndots:3"]}
    assert svc["Spec"]["TaskTemplate"]["LogDriver"] == {"Name": "json-file", "Options": {"max-size": "64k", "max-file": "2"}}

    d.cli("service", "update", "--detach", "--log-driver", "none", "surround")
    wait_for(lambda: [x for x in running(d, "surround") if x["ID"] != t["ID"]], 60, what="the updated task running")
    r = d.cli("service", "logs", "surround", check=False)
    assert r.returncode != 0 and "logging is disabled" in r.stderr and "log driver none" in r.stderr, r.stderr

    # a compose file with the same keys deploys (replicas 0: no task needed to see the spec land) ...
    stack = tmp_path / "stack.yml"
    stack.write_text("services:\n  app:\n    image: busybox\n    deploy: {replicas: 0}\n"
                     "    sysctls: {net.core.somaxconn: '1024'}\n    extra_hosts: ['db:10.0.0.2']\n"
                     "    dns: [10.0.0.53]\n    dns_search: [example.test]\n    dns_opt: [use-vc]\n"
                     "    isolation: default\n    logging: {driver: local, options: {max-size: 1m}}\n")
    d.cli("stack", "deploy", "-c", str(stack), "st")
    (app,) = d.json("service", "inspect", "st_app")
    assert app["Spec"]["TaskTemplate"]["ContainerSpec"]["Hosts"] == ["10.0.0.2 db"]
    assert app["Spec"]["TaskTemplate"]["LogDriver"] == {"Name": "local", "Options": {"max-size": "1m"}}
    # ... and one asking for a host-wide sysctl is refused by the managers, naming it
    stack.write_text("services:\n  app:\n    image: busybox\n    sysctls: {kernel.panic: '1'}\n")
    r = d.cli("stack", "deploy", "-c", str(stack), "st", check=False)
    assert r.returncode != 0 and "TaskTemplate.ContainerSpec.Sysctls: kernel.panic is not a namespaced sysctl" in r.stderr
    r = d.cli("service", "create", "--name", "bad", "--isolation", "hyperv", "busybox", check=False)
    assert r.returncode != 0 and r.stderr.strip().endswith("--isolation: only default is supported on Linux, got 'hyperv'")
