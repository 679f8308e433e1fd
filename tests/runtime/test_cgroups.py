"""cgroup layout detection and the files written for limits, on fake cgroup trees.
No root needed; the real v1 hierarchy is exercised by test_containers."""
from pathlib import Path

import pytest

from worker.runtime.cgroups import Cgroup, CgroupLayout, Resources, detect_layout

HYBRID = """\
31 24 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
UNIFIED = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
31 24 0:28 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
"""


def test_detect_hybrid_prefers_v1_memory():
    layout = detect_layout(HYBRID)
    assert layout.version == 1
    assert layout.v1["memory"] == Path("/sys/fs/cgroup/memory")
    assert layout.v1["cpu"] == layout.v1["cpuacct"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    dirs = Cgroup(layout, "shoal", "c1").dirs()
    assert Path("/sys/fs/cgroup/cpu,cpuacct/shoal/c1") in dirs
    assert len(dirs) == len(set(dirs)) == 3  # co-mounted controllers share one directory


def test_detect_unified():
    layout = detect_layout(UNIFIED)
    assert layout == CgroupLayout(2, unified=Path("/sys/fs/cgroup"))


def test_detect_nothing():
    with pytest.raises(RuntimeError, match="cgroups: no cgroup"):
        detect_layout("27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n")


def test_bad_parent_is_refused():
    for bad in ["", "/abs", "a/../b"]:
        with pytest.raises(ValueError, match="cgroup_parent: "):
            Cgroup(CgroupLayout(2, unified=Path("/x")), bad, "c")


def fake_files(d: Path, names) -> None:
    """What the kernel creates in a new cgroup directory."""
    d.mkdir(parents=True, exist_ok=True)
    for name in names:
        (d / name).write_text("max")


def test_v2_files(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    cg = Cgroup(CgroupLayout(2, unified=tmp_path), "shoal/nodes", "c1")
    # a real kernel fills these in; the fake tree needs them for the intermediate level
    (tmp_path / "shoal").mkdir()
    (tmp_path / "shoal" / "cgroup.controllers").write_text("cpu io memory pids\n")
    fake_files(tmp_path / "shoal" / "nodes" / "c1", ["memory.max", "memory.swap.max", "pids.max", "cpu.max"])
    cg.create(Resources(memory_limit=64 << 20, pids_limit=20, nano_cpus=250_000_000))
    d = tmp_path / "shoal" / "nodes" / "c1"
    assert cg.dirs() == [d]
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+memory +pids +cpu +io"
    assert (tmp_path / "shoal" / "cgroup.subtree_control").read_text() == "+memory +pids +cpu +io"
    assert (d / "memory.max").read_text() == str(64 << 20)
    assert (d / "memory.swap.max").read_text() == "0"
    assert (d / "pids.max").read_text() == "20"
    assert (d / "cpu.max").read_text() == "25000 100000"
    assert cg.procs_files() == [str(d / "cgroup.procs")]
    assert cg.oom_source() == {"path": str(d / "memory.events")}
    assert cg.memory_limit() == 64 << 20


def test_v1_files(tmp_path):
    layout = CgroupLayout(1, v1={c: tmp_path / c for c in ("memory", "pids", "cpu", "cpuacct")})
    cg = Cgroup(layout, "shoal", "c1")
    fake_files(tmp_path / "memory" / "shoal" / "c1", ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"])
    fake_files(tmp_path / "pids" / "shoal" / "c1", ["pids.max"])
    fake_files(tmp_path / "cpu" / "shoal" / "c1", ["cpu.cfs_period_us", "cpu.cfs_quota_us"])
    cg.create(Resources(memory_limit=32 << 20, pids_limit=-1, nano_cpus=2_000_000_000))
    mem = tmp_path / "memory" / "shoal" / "c1"
    assert (mem / "memory.limit_in_bytes").read_text() == str(32 << 20)
    assert (mem / "memory.memsw.limit_in_bytes").read_text() == str(32 << 20)  # no swap on top
    assert (tmp_path / "pids" / "shoal" / "c1" / "pids.max").read_text() == "max"
    assert (tmp_path / "cpu" / "shoal" / "c1" / "cpu.cfs_quota_us").read_text() == "200000"
    assert (tmp_path / "cpuacct" / "shoal" / "c1").is_dir()
    assert cg.oom_source() == {"path": str(mem / "memory.oom_control")}


def test_a_limit_without_its_controller_is_refused(tmp_path):
    v1 = Cgroup(CgroupLayout(1, v1={"memory": tmp_path / "memory"}), "shoal", "c1")
    with pytest.raises(RuntimeError, match="^pids_limit: the pids cgroup controller is not available"):
        v1.create(Resources(pids_limit=10))
    v2 = Cgroup(CgroupLayout(2, unified=tmp_path / "unified"), "shoal", "c1")
    (tmp_path / "unified").mkdir()
    with pytest.raises(RuntimeError, match="^memory_limit: the memory cgroup controller is not available"):
        v2.create(Resources(memory_limit=8 << 20))


def test_cpu_quota_has_a_floor():
    assert Resources(nano_cpus=1).cpu_quota_us() == 1000
    assert Resources().cpu_quota_us() is None
