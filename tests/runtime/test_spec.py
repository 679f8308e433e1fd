"""Pure parts of the runtime: config validation, config.json, users, /etc files, paths.
No root needed."""
import os
from pathlib import Path

import pytest

from worker.runtime.config import ContainerConfig
from worker.runtime.paths import secure_join
from worker.runtime.spec import build_spec, hosts_file, parse_user, resolv_conf

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
    assert {ns["type"] for ns in spec["linux"]["namespaces"]} == {"pid", "mount", "uts", "ipc", "network"}
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
    assert spec["linux"]["resources"] == {}
    assert "CAP_SYS_ADMIN" not in spec["process"]["capabilities"]["bounding"]
    assert spec["process"]["capabilities"]["effective"] == spec["process"]["capabilities"]["bounding"]


def test_spec_resources_and_user(tmp_path):
    config = make(tmp_path, memory_limit=64 << 20, pids_limit=100, nano_cpus=1_500_000_000,
                  hostname="web", cwd="/srv", labels={"task": "t1"})
    spec = build_spec(config, 1000, 1001, [10], "p/x", {})
    assert spec["linux"]["resources"] == {"memory": {"limit": 64 << 20, "swap": 64 << 20},
                                          "pids": {"limit": 100}, "cpu": {"quota": 150000, "period": 100000}}
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
])
def test_config_validation(tmp_path, change, message):
    with pytest.raises(ValueError) as exc:
        make(tmp_path, **change).validate()
    assert str(exc.value).startswith(message)


def test_config_valid(tmp_path):
    make(tmp_path, hostname="web-1.local", user="1000:1000", memory_limit=6 << 20, pids_limit=-1,
         nano_cpus=10**7).validate()


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
