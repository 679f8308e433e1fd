"""ContainerConfig.groups (Docker's --group-add): supplementary groups of the container process,
names from the image's /etc/group or numeric gids, on top of those the user has there; the same
under Shoal's init, runc and crun (process.user.additionalGids of the one bundle)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .conftest import IS_ROOT, cfg, facts, run

pytestmark = [pytest.mark.root, pytest.mark.skipif(not IS_ROOT, reason="needs root")]

ENGINES = ["shoal"] + [e for e in ("runc", "crun") if shutil.which(e)]
PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"
GROUP = "root:x:0:\nstaff:x:50:app\naudio:x:29:\napp:x:1000:\nnogroup:x:65534:\n"
PROBE = ["sh", "-c", "echo ids=$(id -G)"]


@pytest.fixture
def etc_layer(tmp_path) -> Path:
    """An image layer on top of busybox's with more users and groups."""
    layer = tmp_path / "etc-layer"
    (layer / "etc").mkdir(parents=True)
    (layer / "etc" / "passwd").write_text(PASSWD)
    (layer / "etc" / "group").write_text(GROUP)
    return layer


def config(busybox, layer: Path, args: list[str], **kw):
    c = cfg(busybox, args, **kw)
    c.layers.append(layer)
    return c


def ids(log: str) -> set[int]:
    return {int(g) for g in facts(log)["ids"].split()}


@pytest.mark.parametrize("engine", ENGINES)
def test_groups_are_added_to_the_users(engine_runtime, busybox, etc_layer, engine):
    rt = engine_runtime(engine)
    st, log = run(rt, config(busybox, etc_layer, PROBE, groups=["audio", "44"]))
    assert st.exit_code == 0, log
    assert ids(log) == {0, 29, 44}
    # app is in staff by /etc/group; its own primary group and staff again change nothing
    st, log = run(rt, config(busybox, etc_layer, PROBE, user="app", groups=["audio", "staff", "1000", "2147483647"]))
    assert st.exit_code == 0, log
    assert ids(log) == {1000, 50, 29, 2147483647}
    st, log = run(rt, config(busybox, etc_layer, PROBE, user="app"))  # without: only what the user has
    assert ids(log) == {1000, 50}


def test_groups_reach_exec_and_the_init(runtime, busybox, etc_layer):
    import asyncio
    c = config(busybox, etc_layer, ["sleep", "1000"], groups=["audio"], init=True)
    runtime.create(c)
    pid = runtime.start(c.id)
    res = asyncio.run(runtime.exec_run(c.id, ["id", "-G"], timeout=10))
    assert set(res.stdout.decode().split()) == {"0", "29"}
    status = Path(f"/proc/{pid}/status").read_text()
    assert "Groups:\t29 \n" in status
    asyncio.run(runtime.stop(c.id, timeout=1))


@pytest.mark.parametrize("groups, message", [
    (["video"], "groups: no group 'video' in the image's /etc/group"),
    (["audio", "a:b"], "groups: 'a:b' is not a group name or numeric gid"),
    (["2147483648"], "groups: gid 2147483648 is out of range (0-2147483647)"),
    ([""], "groups: '' is not a group name or numeric gid"),
])
def test_a_bad_group_is_refused_naming_it(runtime, busybox, etc_layer, groups, message):
    c = config(busybox, etc_layer, ["true"], groups=groups)
    with pytest.raises(ValueError) as err:
        runtime.create(c)
    assert str(err.value) == message
    assert not (runtime.root / c.id).exists()
    assert not any(d.exists() for d in runtime.cgroup_dirs(c.id))
