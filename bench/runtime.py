"""Container runtime: time to run a bundle whose process is `true` to completion (create, start,
wait, delete), median of N runs, for Shoal's runtime, runc and crun on the same OCI bundle
(same namespaces, mounts, cgroups, capabilities, seccomp filter); and the memory a running
container costs the node beyond its own process, as PSS.

    sudo python3 bench/runtime.py [--runs 30] [--containers 10]

As in the issue's reference measurement, everything runs in a private mount namespace where
/sys/fs/cgroup/unified is unmounted (crun 1.8 refuses the hybrid layout otherwise); the host's
mounts are untouched. Shoal is measured through its public API (Runtime.create_bundle, start,
wait, delete: shim, log relay and state files included); runc and crun through their CLIs
(create, start, wait on the pid, delete).

Memory: N containers running `sleep`; overhead = (PSS of their shims + growth of the node
supervisor's PSS) / N. The supervisor's own PSS with no container is printed separately.

Last line: shoal_ms=… runc_ms=… crun_ms=… overhead_pss_mib=… (and ratios).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import select
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from worker.runtime import ContainerConfig, Runtime, linux  # noqa: E402
from worker.runtime.engines import hybrid_unified, hide_unified  # noqa: E402
from worker.runtime.spec import build_spec, hosts_file  # noqa: E402

CGROUP_PARENT = "shoal-bench"


def make_bundle(work: Path, args: list[str], cgroups_path: str | None) -> Path:
    """An OCI bundle: config.json from Shoal's spec builder, busybox rootfs shared by reference."""
    bundle = work / ("bundle-" + secrets.token_hex(4))
    bundle.mkdir()
    for name, text in (("hostname", "bench\n"), ("hosts", hosts_file("bench")), ("resolv.conf", "")):
        (bundle / name).write_text(text)
    cfg = ContainerConfig(id="0" * 64, args=args, env=["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], layers=[],
                          hostname="bench", read_only=True)
    etc = {f"/etc/{n}": str(bundle / n) for n in ("hostname", "hosts", "resolv.conf")}
    spec = build_spec(cfg, 0, 0, [], cgroups_path or "", etc)
    spec["root"]["path"] = str(work / "rootfs")
    if cgroups_path is None:
        del spec["linux"]["cgroupsPath"]  # each container gets /<parent>/<id>
    (bundle / "config.json").write_text(json.dumps(spec, indent=1))
    return bundle


def busybox_rootfs(work: Path) -> None:
    tar = work / "busybox.tar"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make-busybox-image.py"), str(tar)], check=True,
                   capture_output=True)
    (work / "rootfs").mkdir()
    with tarfile.open(tar) as t:
        t.extractall(work / "rootfs")


def time_shoal(rt: Runtime, bundle: Path, runs: int) -> list[float]:
    async def main() -> list[float]:
        times = []
        for i in range(runs):
            cid = secrets.token_hex(32)
            t0 = time.perf_counter()
            rt.create_bundle(cid, bundle)
            rt.start(cid)
            st = await rt.wait(cid)
            rt.delete(cid)
            times.append(time.perf_counter() - t0)
            if st.exit_code != 0:
                raise SystemExit(f"shoal: container exited with {st.exit_code}: {st.error}")
        return times
    return asyncio.run(main())


def time_cli(engine: str, bundle: Path, root: Path, runs: int) -> list[float]:
    binary = shutil.which(engine)
    times = []
    pid_file = root / "pid"
    for i in range(runs):
        cid = f"bench-{i}-{secrets.token_hex(4)}"
        t0 = time.perf_counter()
        subprocess.run([binary, "--root", str(root), "create", "--bundle", str(bundle), "--pid-file",
                        str(pid_file), cid], check=True, stdin=subprocess.DEVNULL)
        pidfd = os.pidfd_open(int(pid_file.read_text()))
        subprocess.run([binary, "--root", str(root), "start", cid], check=True)
        select.select([pidfd], [], [])
        os.close(pidfd)
        subprocess.run([binary, "--root", str(root), "delete", cid], check=True)
        times.append(time.perf_counter() - t0)
    return times


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                return int(line.split()[1])
    return 0


def supervisor_pid(rt: Runtime) -> int:
    conn, reply, _ = rt._supervisor.request({"op": "ping"})
    conn.close()
    return int(reply["pid"])


def memory(rt: Runtime, bundle: Path, n: int) -> dict[str, float]:
    sup = supervisor_pid(rt)
    time.sleep(0.5)
    sup_before = pss_kib(sup)
    ids = []
    try:
        for _ in range(n):
            cid = secrets.token_hex(32)
            rt.create_bundle(cid, bundle)
            rt.start(cid)
            ids.append(cid)
        time.sleep(1.0)
        shims = [json.loads((rt.root / cid / "state.json").read_text())["shim_pid"] for cid in ids]
        shim_pss = sum(pss_kib(p) for p in shims)
        shim_rss = sum(rss_kib(p) for p in shims) / n
        sup_after = pss_kib(sup)
    finally:
        for cid in ids:
            rt.delete(cid, force=True)
    overhead = (shim_pss + sup_after - sup_before) / n
    return {"overhead_pss_mib": overhead / 1024, "shim_rss_mib": shim_rss / 1024,
            "supervisor_pss_mib": sup_before / 1024}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--containers", type=int, default=10, help="running containers for the memory figure")
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root")
    if hybrid_unified():
        hide_unified()  # this process only: crun cannot run on the hybrid layout
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    os.chmod(work, 0o711)
    results: dict[str, float] = {}
    rt = None
    try:
        busybox_rootfs(work)
        true_bundle = make_bundle(work, ["true"], f"/{CGROUP_PARENT}/bench")
        sleep_bundle = make_bundle(work, ["sleep", "1000"], None)
        rt = Runtime(work / "state", cgroup_parent=CGROUP_PARENT)
        time_shoal(rt, true_bundle, args.warmup)
        samples = {"shoal": time_shoal(rt, true_bundle, args.runs)}
        for engine in ("runc", "crun"):
            if shutil.which(engine) is None:
                print(f"{engine}: not installed (apt-get install {engine})", file=sys.stderr)
                continue
            root = work / f".{engine}"
            root.mkdir()
            time_cli(engine, true_bundle, root, args.warmup)
            samples[engine] = time_cli(engine, true_bundle, root, args.runs)
        for name, ts in samples.items():
            ms = [t * 1000 for t in ts]
            results[f"{name}_ms"] = statistics.median(ms)
            print(f"{name:6s} median {statistics.median(ms):6.1f} ms  min {min(ms):6.1f}  max {max(ms):6.1f}")
        mem = memory(rt, sleep_bundle, args.containers)
        print(f"per container, {args.containers} running: {mem['overhead_pss_mib']:.2f} MiB PSS "
              f"(shim RSS {mem['shim_rss_mib']:.1f} MiB); node supervisor alone {mem['supervisor_pss_mib']:.2f} MiB PSS")
        results.update(mem)
    finally:
        if rt is not None:
            for st in rt.list():
                rt.delete(st.id, force=True)
            rt.close()
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mp = line.split()[4]
            if mp.startswith(str(work)):
                linux.umount2(mp, linux.MNT_DETACH)
        shutil.rmtree(work, ignore_errors=True)
        for mount in Path("/sys/fs/cgroup").iterdir():
            try:
                (mount / CGROUP_PARENT).rmdir()
            except OSError:
                pass
    out = [f"shoal_ms={results['shoal_ms']:.1f}"]
    for engine in ("runc", "crun"):
        if f"{engine}_ms" in results:
            out.append(f"{engine}_ms={results[f'{engine}_ms']:.1f}")
    out.append(f"overhead_pss_mib={results['overhead_pss_mib']:.2f}")
    if "runc_ms" in results:
        out.append(f"vs_runc={results['shoal_ms'] / results['runc_ms']:.2f}")
    if "crun_ms" in results:
        out.append(f"vs_crun={results['shoal_ms'] / results['crun_ms']:.2f}")
    out.append(f"shim_rss_mib={results['shim_rss_mib']:.1f} supervisor_pss_mib={results['supervisor_pss_mib']:.2f}")
    print(" ".join(out))


if __name__ == "__main__":
    main()
