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


def test_resources_from_the_oci_spec():
    res = Resources.from_oci({"memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 64 << 20},
                              "pids": {"limit": 50}, "cpu": {"quota": 150000, "period": 100000, "shares": 512},
                              "devices": [{"allow": False, "access": "rwm"}]})
    assert res == Resources(memory_limit=64 << 20, pids_limit=50, nano_cpus=1_500_000_000,
                            memory_reservation=32 << 20, cpu_shares=512,
                            devices=({"allow": False, "access": "rwm"},))
    assert Resources.from_oci({}) == Resources()


def test_device_rules_and_cpu_weight():
    from worker.runtime.cgroups import cpu_weight, device_rule
    assert device_rule({"allow": False, "access": "rwm"}) == "a"
    assert device_rule({"type": "c", "major": 1, "minor": 3, "access": "rwm"}) == "c 1:3 rwm"
    assert device_rule({"type": "c", "major": 136, "access": "rw"}) == "c 136:* rw"
    assert device_rule({"type": "b", "access": "m"}) == "b *:* m"
    assert (cpu_weight(2), cpu_weight(1024), cpu_weight(262144)) == (1, 39, 10000)


def test_v1_reservation_shares_and_devices(tmp_path, monkeypatch):
    import worker.runtime.cgroups as cgroups
    layout = CgroupLayout(1, v1={c: tmp_path / c for c in ("memory", "cpu", "devices")})
    fake_files(tmp_path / "memory" / "shoal" / "c1", ["memory.soft_limit_in_bytes"])
    fake_files(tmp_path / "cpu" / "shoal" / "c1", ["cpu.shares"])
    fake_files(tmp_path / "devices" / "shoal" / "c1", [])
    writes = []
    monkeypatch.setattr(cgroups, "_write", lambda path, value: writes.append((path.name, value)))
    rules = ({"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"})
    Cgroup(layout, "shoal", "c1").create(Resources(memory_reservation=16 << 20, cpu_shares=512, devices=rules))
    assert writes == [("memory.soft_limit_in_bytes", str(16 << 20)), ("cpu.shares", "512"),
                      ("devices.deny", "a"), ("devices.allow", "c 1:3 rwm")]


def test_stats_from_v1_and_v2_files(tmp_path):
    layout = CgroupLayout(1, v1={c: tmp_path / c for c in ("memory", "cpuacct", "pids")})
    d = {c: tmp_path / c / "shoal" / "c1" for c in ("memory", "cpuacct", "pids")}
    for p in d.values():
        p.mkdir(parents=True)
    (d["cpuacct"] / "cpuacct.usage").write_text("123456789\n")
    (d["memory"] / "memory.usage_in_bytes").write_text(str(50 << 20))
    (d["memory"] / "memory.stat").write_text(f"cache 1\ntotal_inactive_file {10 << 20}\n")
    (d["memory"] / "memory.limit_in_bytes").write_text(str(64 << 20))
    (d["pids"] / "pids.current").write_text("3\n")
    assert Cgroup(layout, "shoal", "c1").stats() == {
        "cpu_usage_ns": 123456789, "memory_usage_bytes": 40 << 20, "memory_limit_bytes": 64 << 20, "pids": 3}
    u = tmp_path / "unified" / "shoal" / "c1"
    u.mkdir(parents=True)
    (u / "cpu.stat").write_text("usage_usec 2500\nuser_usec 2000\n")
    (u / "memory.current").write_text(str(8 << 20))
    (u / "memory.stat").write_text("inactive_file 0\n")
    (u / "memory.max").write_text("max\n")
    (u / "pids.current").write_text("1\n")
    st = Cgroup(CgroupLayout(2, unified=tmp_path / "unified"), "shoal", "c1").stats()
    total = [int(ln.split()[1]) * 1024 for ln in Path("/proc/meminfo").read_text().splitlines()
             if ln.startswith("MemTotal:")][0]
    assert st == {"cpu_usage_ns": 2_500_000, "memory_usage_bytes": 8 << 20, "memory_limit_bytes": total, "pids": 1}


def test_cgroup_from_an_oci_path():
    layout = CgroupLayout(2, unified=Path("/sys/fs/cgroup"))
    assert Cgroup.from_path(layout, "/shoal/abc").dirs() == [Path("/sys/fs/cgroup/shoal/abc")]
    assert Cgroup.from_path(layout, "a/b/c").dirs() == [Path("/sys/fs/cgroup/a/b/c")]
    with pytest.raises(ValueError, match="linux.cgroupsPath: must be parent/name"):
        Cgroup.from_path(layout, "/lonely")


def test_device_program_shape():
    from worker.runtime.devices_bpf import program
    from worker.runtime.spec import DEVICE_RULES
    prog = program(DEVICE_RULES)
    assert len(prog) % 8 == 0
    # the deny-everything first rule is tested last and ends the program: nothing after it
    assert prog[-16:] == bytes([0xB7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="devices: type must be a, b or c"):
        program([{"type": "x"}])
    with pytest.raises(ValueError, match="devices: access must be made of r, w and m"):
        program([{"type": "c", "access": "rx"}])
