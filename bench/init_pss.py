"""What --init costs per container: N containers running `sleep` with Shoal's init as pid 1 and N
without, through the public Runtime API (busybox image imported into a scratch image store).

    sudo python3 bench/init_pss.py [--containers 10]

Per container it prints the init's own PSS and private dirty memory, the PSS of everything the
container costs the node (its shim plus every process in its cgroup), and what its memory cgroup
is charged (memory.usage_in_bytes / memory.current). The init is a fork of the shim, so it
shares most of its pages with the shim and the node supervisor: the last line's
init_cost_pss_mib (total PSS with an init minus without) is the figure to compare, not its RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from worker.images import ImageStore  # noqa: E402
from worker.runtime import ContainerConfig, Runtime, linux  # noqa: E402

CGROUP_PARENT = "shoal-bench-init"


def rollup(pid: int) -> dict[str, int]:
    """KiB figures of /proc/PID/smaps_rollup."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


def charged_kib(rt: Runtime, cid: str) -> int:
    for d in rt.cgroup_dirs(cid):
        for name in ("memory.current", "memory.usage_in_bytes"):
            if (d / name).exists():
                return int((d / name).read_text()) // 1024
    return 0


def procs(rt: Runtime, cid: str) -> set[int]:
    out: set[int] = set()
    for d in rt.cgroup_dirs(cid):
        if (d / "cgroup.procs").exists():
            out |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
    return out


def measure(rt: Runtime, image, layers, n: int, init: bool) -> dict[str, float]:
    ids = []
    try:
        for _ in range(n):
            cfg = ContainerConfig(id=secrets.token_hex(32), args=["sleep", "1000"],
                                  env=list(image.config["config"]["Env"]), layers=list(layers), init=init)
            rt.create(cfg)
            rt.start(cfg.id)
            ids.append(cfg.id)
        time.sleep(1.5)  # the launchers have exited, the pages settled
        rows = []
        for cid in ids:
            state = json.loads((rt.root / cid / "state.json").read_text())
            pid1 = rollup(state["pid"])
            total = rollup(state["shim_pid"])["Pss"] + sum(rollup(p)["Pss"] for p in procs(rt, cid))
            rows.append({"pid1_pss": pid1["Pss"], "pid1_private": pid1["Private_Dirty"] + pid1["Private_Clean"],
                         "total_pss": total, "charged": charged_kib(rt, cid)})
    finally:
        for cid in ids:
            rt.delete(cid, force=True)
    return {k: statistics.mean(r[k] for r in rows) / 1024 for k in rows[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--containers", type=int, default=10)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root")
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-init-"))
    rt = None
    try:
        tar = work / "busybox.tar"
        subprocess.run([sys.executable, str(REPO / "scripts" / "make-busybox-image.py"), str(tar)], check=True,
                       capture_output=True)
        store = ImageStore(work / "images")
        image = store.import_rootfs(tar, "busybox")
        layers = store.layer_dirs(image)
        rt = Runtime(work / "state", cgroup_parent=CGROUP_PARENT)
        measure(rt, image, layers, 2, True)  # warm up: the supervisor starts, caches fill
        without = measure(rt, image, layers, args.containers, False)
        with_init = measure(rt, image, layers, args.containers, True)
        for name, m in (("without init", without), ("with init", with_init)):
            print(f"{name:12s}  pid 1: PSS {m['pid1_pss']:.2f} MiB, private {m['pid1_private']:.2f} MiB;  "
                  f"shim + container: PSS {m['total_pss']:.2f} MiB;  memory cgroup charged {m['charged']:.2f} MiB")
        print(f"init_pss_mib={with_init['pid1_pss']:.2f} init_private_mib={with_init['pid1_private']:.2f} "
              f"init_cost_pss_mib={with_init['total_pss'] - without['total_pss']:.2f} "
              f"init_cost_charged_mib={with_init['charged'] - without['charged']:.2f}")
    finally:
        if rt is not None:
            for st in rt.list():
                rt.delete(st.id, force=True)
            rt.close()
        for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            mp = line.split()[4]
            if mp.startswith(str(work)):
                linux.umount2(mp, linux.MNT_DETACH)
        shutil.rmtree(work, ignore_errors=True)
        for mount in Path("/sys/fs/cgroup").iterdir():
            try:
                (mount / CGROUP_PARENT).rmdir()
            except OSError:
                pass


if __name__ == "__main__":
    main()
