"""Secrets and configs end to end on a real shoald: created, given only to the tasks that name
them, mounted with the owner and mode asked, never on the node's disk, rotated through an
update, refused removal while used, and gone with the last task that used them."""
import json
import secrets as pysecrets
import subprocess
from pathlib import Path

from tests.integration.harness import wait_for

LOOP = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]


def running(d, service):
    return [t for t in d.api_tasks(service) if t["Status"]["State"] == "running" and t["DesiredState"] == "running"]


def bytes_found(needle: bytes, roots: list[Path]) -> list[str]:
    """Files under roots (not crossing into containers' mount namespaces) that hold needle."""
    hits = []
    r = subprocess.run(["grep", "-rlsF", "--devices=skip", needle.decode(), *map(str, roots)],
                       capture_output=True, text=True)
    hits += [line for line in r.stdout.splitlines() if line]
    return hits


def test_secret_and_config_lifecycle(daemon, busybox_tar, tmp_path):
    d = daemon
    d.cli("swarm", "init")
    d.cli("image", "import", str(busybox_tar), "busybox:latest")
    value = ("s3cr3t-" + pysecrets.token_hex(16)).encode()
    src = tmp_path / "pw"
    src.write_bytes(value)
    secret_id = d.cli("secret", "create", "--label", "team=a", "db_pw", str(src)).stdout.strip()
    src.unlink()  # from here, the bytes may only be in the cluster's sealed store and in the task
    d.cli("config", "create", "app_conf", "-", input="listen 8080\n")

    # the API never returns a secret's data; a config's, yes
    inspected = json.loads(d.cli("secret", "inspect", "db_pw").stdout)[0]
    assert inspected["ID"] == secret_id and inspected["Spec"]["Labels"] == {"team": "a"}
    assert "Data" not in inspected["Spec"] and "Sealed" not in inspected
    assert value.decode() not in json.dumps(d.api("/swarm")) and "SecretsKey" not in d.api("/swarm")
    conf = json.loads(d.cli("config", "inspect", "app_conf").stdout)[0]
    assert conf["Spec"]["Data"] == "bGlzdGVuIDgwODAK"
    assert "listen 8080" in d.cli("config", "inspect", "--pretty", "app_conf").stdout
    assert "db_pw" in d.cli("secret", "ls").stdout

    # bad input: named field, non-zero, nothing created
    r = d.cli("secret", "create", "db_pw", "-", input="x", check=False)
    assert r.returncode != 0 and "already exists" in r.stderr
    r = d.cli("secret", "create", "bad/name", "-", input="x", check=False)
    assert r.returncode != 0 and "Name" in r.stderr
    big = tmp_path / "big"
    big.write_bytes(b"x" * (500 * 1024 + 1))
    r = d.cli("secret", "create", "big", str(big), check=False)
    assert r.returncode != 0 and "500 KiB" in r.stderr
    r = d.cli("service", "create", "--name", "nosuch", "--secret", "missing", "busybox", *LOOP, check=False)
    assert r.returncode != 0 and "missing" in r.stderr and "not found" in r.stderr
    r = d.cli("service", "create", "--name", "badmode", "--secret", "source=db_pw,mode=999", "busybox", *LOOP,
              check=False)
    assert r.returncode != 0 and "mode" in r.stderr

    d.cli("service", "create", "--name", "user", "--detach",
          "--secret", "source=db_pw,target=password,uid=1000,gid=1001,mode=0400",
          "--config", "source=app_conf,target=/etc/app.conf", "busybox", *LOOP)
    d.cli("service", "create", "--name", "other", "--detach", "busybox", *LOOP)
    (t,) = wait_for(lambda: running(d, "user"), 60, what="user running")
    (o,) = wait_for(lambda: running(d, "other"), 60, what="other running")
    pid = t["Status"]["ContainerStatus"]["PID"]
    other_pid = o["Status"]["ContainerStatus"]["PID"]

    # inside the task that uses it: the bytes, owner and mode asked, read-only, on a tmpfs
    secret_file = Path(f"/proc/{pid}/root/run/secrets/password")
    assert secret_file.read_bytes() == value
    st = secret_file.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1000, 1001, 0o400)
    assert Path(f"/proc/{pid}/root/etc/app.conf").read_text() == "listen 8080\n"
    mounts = {l.split()[1]: l.split() for l in Path(f"/proc/{pid}/mounts").read_text().splitlines()}
    assert mounts["/run/secrets/password"][2] == "tmpfs" and "ro" in mounts["/run/secrets/password"][3].split(",")
    assert "ro" in mounts["/etc/app.conf"][3].split(",")
    # not in the task that does not use it
    assert not Path(f"/proc/{other_pid}/root/run/secrets/password").exists()
    # not on the node: the state dir (Raft log, snapshots, bundles) and /run hold no copy
    assert bytes_found(value, [d.state_dir, Path("/run")]) == []
    assert str(d.state_dir / "taskfiles") not in Path("/proc/self/mounts").read_text(), \
        "the node let go of the tmpfs once the task started"

    # refused removal while used; nothing changes
    r = d.cli("secret", "rm", "db_pw", check=False)
    assert r.returncode != 0 and "in use" in r.stderr and "user" in r.stderr
    r = d.cli("config", "rm", "app_conf", check=False)
    assert r.returncode != 0 and "in use" in r.stderr
    assert "db_pw" in d.cli("secret", "ls").stdout

    # rotation: add the new secret at the same target, remove the old one, in one update
    new_value = ("rotated-" + pysecrets.token_hex(16)).encode()
    d.cli("secret", "create", "db_pw_v2", "-", input=new_value.decode())
    d.cli("service", "update", "--detach", "--secret-rm", "db_pw", "--secret-add",
          "source=db_pw_v2,target=password,mode=0400", "user")
    wait_for(lambda: [x for x in running(d, "user") if x["ID"] != t["ID"]], 60, what="updated task running")
    (t2,) = running(d, "user")
    assert Path(f"/proc/{t2['Status']['ContainerStatus']['PID']}/root/run/secrets/password").read_bytes() == new_value
    d.cli("secret", "rm", "db_pw")  # no longer used
    assert d.cli("secret", "ls", "-q", "--filter", "name=db_pw").stdout.split() == [
        json.loads(d.cli("secret", "inspect", "db_pw_v2").stdout)[0]["ID"]]

    # the last task gone: the node holds the secret no longer
    d.cli("service", "rm", "user")
    wait_for(lambda: not [x for x in d.api_tasks() if x["ServiceID"] == t["ServiceID"]], 60, what="user tasks gone")
    d.cli("secret", "rm", "db_pw_v2")
    d.cli("config", "rm", "app_conf")
    assert d.cli("secret", "ls", "-q").stdout.strip() == ""
    taskfiles = d.state_dir / "taskfiles"
    assert not taskfiles.exists() or not any(taskfiles.iterdir())
