"""Pure parts of the runtime: config validation, config.json, users, /etc files, paths.
No root needed."""
import os
from pathlib import Path

import pytest

from worker.runtime.config import ContainerConfig, Mount, UserNamespace, parse_size
from worker.runtime.paths import secure_join
from worker.runtime.spec import DEVICE_RULES, build_spec, hosts_file, parse_user, resolv_conf

ID = "ab" * 32
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\napp:x:1000:1001::/home/app:/bin/sh\n"
GROUP = "root:x:0:\nnogroup:x:65534:\nappgrp:x:1001:\nwheel:x:10:app,other\ndocker:x:999:app\n"


def make(tmp_path, **kw):
    base = dict(id=ID, args=["sh"], env=["PATH=/bin"], layers=[tmp_path])
    base.update(kw)
    return ContainerConfig(**base)


def test_spec_defaults(tmp_path):
    spec = build_spec(make(tmp_path), 0, 0, [], f"shoal/{ID}", {"/etc/hosts": "/b/hosts"})
    assert spec["hostname"] == ID[:12]
    assert {ns["type"] for ns in spec["linux"]["namespaces"]} == {"pid", "mount", "uts", "ipc", "network", "cgroup"}
    mounts = {m["destination"]: m for m in spec["mounts"]}
    assert mounts["/proc"]["type"] == "proc"
    assert mounts["/dev"]["type"] == "tmpfs"
    assert "newinstance" in mounts["/dev/pts"]["options"]
    assert mounts["/dev/shm"]["type"] == "tmpfs"
    assert "ro" in mounts["/sys"]["options"]
    assert mounts["/etc/hosts"] == {"destination": "/etc/hosts", "type": "bind", "source": "/b/hosts",
                                    "options": ["rbind", "rprivate"]}
    assert [d["path"] for d in spec["linux"]["devices"]] == [
        "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"]
    assert spec["root"] == {"path": "rootfs", "readonly": False}
    assert mounts["/sys/fs/cgroup"] == {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                                        "options": ["ro", "nosuid", "noexec", "nodev"]}
    assert spec["linux"]["resources"] == {"devices": DEVICE_RULES}
    assert DEVICE_RULES[0] == {"allow": False, "access": "rwm"}  # everything denied, then the usual allowed
    assert spec["process"]["noNewPrivileges"] is True
    assert spec["process"]["env"] == ["PATH=/bin", "HOME=/"]
    assert "rlimits" not in spec["process"]
    seccomp = spec["linux"]["seccomp"]
    assert seccomp["defaultAction"] == "SCMP_ACT_ERRNO" and seccomp["defaultErrnoRet"] == 1
    assert "uidMappings" not in spec["linux"]
    assert "CAP_SYS_ADMIN" not in spec["process"]["capabilities"]["bounding"]
    assert spec["process"]["capabilities"]["effective"] == spec["process"]["capabilities"]["bounding"]


def test_spec_resources_and_user(tmp_path):
    config = make(tmp_path, memory_limit=64 << 20, pids_limit=100, nano_cpus=1_500_000_000,
                  hostname="web", cwd="/srv", labels={"task": "t1"})
    spec = build_spec(config, 1000, 1001, [10], "p/x", {})
    assert spec["linux"]["resources"] == {"memory": {"limit": 64 << 20, "swap": 64 << 20},
                                          "pids": {"limit": 100}, "cpu": {"quota": 150000, "period": 100000},
                                          "devices": DEVICE_RULES}
    assert spec["process"]["user"] == {"uid": 1000, "gid": 1001, "additionalGids": [10]}
    assert spec["process"]["capabilities"]["effective"] == []  # non-root gets no effective caps
    assert spec["hostname"] == "web" and spec["process"]["cwd"] == "/srv"
    assert spec["annotations"] == {"task": "t1"}


@pytest.mark.parametrize("user, expected", [
    ("", (0, 0, [])),
    ("0", (0, 0, [])),
    ("nobody", (65534, 65534, [])),
    ("app", (1000, 1001, [10, 999])),
    ("app:wheel", (1000, 10, [])),
    ("1000", (1000, 1001, [10, 999])),
    ("4242", (4242, 0, [])),            # numeric uid need not exist
    ("4242:77", (4242, 77, [])),
])
def test_parse_user(user, expected):
    assert parse_user(user, PASSWD, GROUP) == expected


@pytest.mark.parametrize("user, message", [("ghost", "user: no user 'ghost'"),
                                           ("app:ghosts", "user: no group 'ghosts'")])
def test_parse_user_errors(user, message):
    with pytest.raises(ValueError, match=message):
        parse_user(user, PASSWD, GROUP)


def test_etc_files():
    assert "127.0.0.1\tlocalhost" in hosts_file("abc") and "\tabc\n" in hosts_file("abc")
    resolv = resolv_conf("nameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch example.com\nnameserver ::1\n")
    assert resolv == "nameserver 10.0.0.2\nsearch example.com\n"
    assert resolv_conf("") == ""


@pytest.mark.parametrize("change, message", [
    ({"id": "xyz"}, "id: must be 64 lowercase hex"),
    ({"id": "AB" * 32}, "id: must be 64 lowercase hex"),
    ({"args": []}, "args: must be a non-empty list"),
    ({"args": [""]}, "args: must be a non-empty list"),
    ({"args": ["a\0b"]}, "args: must not contain NUL"),
    ({"env": ["NOVALUE"]}, "env: 'NOVALUE' is not NAME=VALUE"),
    ({"env": ["=x"]}, "env: '=x' is not NAME=VALUE"),
    ({"layers": [Path("relative")]}, "layers: relative is not an existing absolute directory"),
    ({"hostname": "bad_host!"}, "hostname: 'bad_host!' is not a valid host name"),
    ({"cwd": "srv"}, "cwd: must be an absolute path"),
    ({"user": "a b"}, "user: 'a b' is not user"),
    ({"memory_limit": 1024}, "memory_limit: minimum is"),
    ({"pids_limit": 0}, "pids_limit: must be positive"),
    ({"nano_cpus": 1}, "nano_cpus: must be between 0.01 and"),
    ({"nano_cpus": (os.cpu_count() + 1) * 10**9}, "nano_cpus: must be between"),
    ({"memory_reservation": 0}, "memory_reservation: must be positive"),
    ({"memory_limit": 8 << 20, "memory_reservation": 9 << 20}, "memory_reservation: must not be above"),
    ({"cpu_shares": 1}, "cpu_shares: must be between 2 and 262144"),
    ({"seccomp": "strict"}, "seccomp: must be 'default' or 'unconfined'"),
    ({"cap_add": ["SYS_MAGIC"]}, "cap_add: unknown capability 'SYS_MAGIC'"),
    ({"cap_drop": ["CAP_NOPE"]}, "cap_drop: unknown capability 'CAP_NOPE'"),
    ({"ulimits": {"files": (1, 2)}}, "ulimits: unknown limit 'files'"),
    ({"ulimits": {"nofile": (10, 5)}}, "ulimits: nofile soft limit 10 is above the hard limit 5"),
    ({"ulimits": {"nofile": 10}}, "ulimits: nofile must be (soft, hard)"),
    ({"user_namespace": UserNamespace(size=0)}, "user_namespace.size: must be an integer in range"),
    ({"mounts": [Mount("volume", "/x")]}, "mounts[0].type: must be one of bind, tmpfs"),
    ({"mounts": [Mount("bind", "rel", "/tmp")]}, "mounts[0].target: must be an absolute path"),
    ({"mounts": [Mount("bind", "/x", "/no/such/dir")]}, "mounts[0].source: '/no/such/dir' is not an existing"),
    ({"mounts": [Mount("tmpfs", "/x", "/tmp")]}, "mounts[0].source: a tmpfs mount takes no source"),
    ({"log_max_size": 100}, "log_max_size: minimum is 4096 bytes"),
    ({"log_max_files": 0}, "log_max_files: must be between 1 and 100"),
    ({"log_driver": "syslog"}, "log_driver: must be one of json-file, none"),
    ({"sysctls": {"kernel.panic": "1"}}, "sysctls: kernel.panic is not a namespaced sysctl"),
    ({"sysctls": {"net/ipv4/ip_forward": "1"}}, "sysctls: 'net/ipv4/ip_forward' is not a sysctl name"),
    ({"sysctls": {"net.ipv4.ip_forward": "1\n"}}, "sysctls: net.ipv4.ip_forward: the value must be one line"),
    ({"extra_hosts": ["db 10.0.0.2"]}, "extra_hosts: 'db 10.0.0.2' is not"),
    ({"extra_hosts": ["10.0.0.2"]}, "extra_hosts: '10.0.0.2' is not"),
    ({"dns_servers": ["localhost"]}, "dns_servers: 'localhost' is not an IP address"),
    ({"dns_search": ["a b"]}, "dns_search: 'a b' must be one word"),
    ({"dns_options": ["x\ny"]}, "dns_options: 'x\\ny' must be one word"),
])
def test_config_validation(tmp_path, change, message):
    with pytest.raises(ValueError) as exc:
        make(tmp_path, **change).validate()
    assert str(exc.value).startswith(message)


def test_etc_files_with_hosts_and_dns():
    hosts = hosts_file("box", ["10.0.0.2 db", "2001:db8::1 v6 alias"])
    assert hosts.endswith("127.0.1.1\tbox\n10.0.0.2\tdb\n2001:db8::1\tv6 alias\n")
    host = "# generated\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch corp.test\noptions edns0\n"
    assert resolv_conf(host, nameservers=["192.0.2.53"]) == \
        "search corp.test\nnameserver 192.0.2.53\noptions edns0\n", "each given part replaces the host's"
    assert resolv_conf(host, search=["a.test", "b.test"], options=["ndots:2"]) == \
        "search a.test b.test\nnameserver 10.0.0.2\noptions ndots:2\n"
    assert resolv_conf(host, search=["."]) == "nameserver 10.0.0.2\noptions edns0\n", "'.': no search domains"


def test_sysctls_go_to_linux_sysctl(tmp_path):
    assert "sysctl" not in build_spec(make(tmp_path), 0, 0, [], "", {})["linux"]
    spec = build_spec(make(tmp_path, sysctls={"net.ipv4.ip_forward": "1"}), 0, 0, [], "", {})
    assert spec["linux"]["sysctl"] == {"net.ipv4.ip_forward": "1"}  # where runc and crun read them


def test_config_valid(tmp_path):
    make(tmp_path, hostname="web-1.local", user="1000:1000", memory_limit=6 << 20, pids_limit=-1,
         nano_cpus=10**7).validate()
    make(tmp_path, sysctls={"kernel.shmmax": "1", "fs.mqueue.msg_max": "20", "net.core.somaxconn": "1"},
         extra_hosts=["10.0.0.2 db", "::1 v6"], dns_servers=["10.0.0.53", "2001:db8::53"], dns_search=["."],
         dns_options=["ndots:2"], log_driver="none").validate()


def test_secure_join_stays_inside(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "real").mkdir()
    os.symlink("/etc", root / "abs")           # absolute: taken inside root
    os.symlink("../../../..", root / "up")     # climbs: clamped at root
    os.symlink("real", root / "rel")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    r = str(root)
    assert secure_join(r, "/abs/passwd") == f"{r}/etc/passwd"
    assert secure_join(r, "/up/etc") == f"{r}/etc"
    assert secure_join(r, "../../etc/shadow") == f"{r}/etc/shadow"
    assert secure_join(r, "/rel/x/y") == f"{r}/real/x/y"
    assert secure_join(r, "/") == r
    with pytest.raises(OSError, match="too many symlinks"):
        secure_join(r, "/loop1")


def test_spec_hardening_options(tmp_path):
    config = make(tmp_path, read_only=True, no_new_privileges=False, seccomp="unconfined", cgroupns=False,
                  cap_add=["SYS_ADMIN"], cap_drop=["NET_RAW"], ulimits={"nofile": (100, 200), "core": (-1, -1)},
                  user_namespace=UserNamespace(100000, 200000, 1000), memory_reservation=1 << 20, cpu_shares=512,
                  mounts=[Mount("tmpfs", "/run", tmpfs_size=1 << 20, tmpfs_mode=0o700, read_only=True),
                          Mount("bind", "/data", str(tmp_path))])
    spec = build_spec(config, 0, 0, [], "/p/x", {}, home="/root")
    assert spec["root"]["readonly"] is True and spec["process"]["noNewPrivileges"] is False
    assert "seccomp" not in spec["linux"]
    kinds = [ns["type"] for ns in spec["linux"]["namespaces"]]
    assert "cgroup" not in kinds and "user" in kinds
    assert spec["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 100000, "size": 1000}]
    assert spec["linux"]["gidMappings"] == [{"containerID": 0, "hostID": 200000, "size": 1000}]
    caps = spec["process"]["capabilities"]["bounding"]
    assert "CAP_SYS_ADMIN" in caps and "CAP_NET_RAW" not in caps
    assert spec["process"]["rlimits"] == [{"type": "RLIMIT_CORE", "soft": 2**64 - 1, "hard": 2**64 - 1},
                                          {"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}]
    assert spec["process"]["env"] == ["PATH=/bin", "HOME=/root"]
    assert spec["linux"]["resources"]["memory"] == {"reservation": 1 << 20}
    assert spec["linux"]["resources"]["cpu"] == {"shares": 512}
    mounts = {m["destination"]: m for m in spec["mounts"]}
    assert mounts["/run"] == {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
                              "options": ["nosuid", "nodev", "noexec", "ro", "size=1048576", "mode=700"]}
    assert mounts["/data"]["options"] == ["rbind", "rprivate"] and mounts["/data"]["source"] == str(tmp_path)


def test_capability_set():
    from worker.runtime.spec import DEFAULT_CAPABILITIES, capability_set
    assert capability_set([], []) == DEFAULT_CAPABILITIES
    assert capability_set(["ALL"], ["ALL"]) == []
    assert len(capability_set(["ALL"], [])) == 41
    assert capability_set(["net_admin"], ["ALL"]) == ["CAP_NET_ADMIN"]


def test_parse_size():
    assert parse_size("10m", "log_max_size") == 10 << 20
    assert parse_size("512k", "x") == 512 << 10 and parse_size("1g", "x") == 1 << 30 and parse_size(42, "x") == 42
    with pytest.raises(ValueError, match="log_max_size: 'ten' is not a size"):
        parse_size("ten", "log_max_size")
