"""One host: time from `shoal service create --replicas 50` to 50 running tasks, and the
daemon's RSS with 0 and with 50 tasks.

    sudo python3 bench/skeleton.py [--replicas 50]

Last line: create_s=… rss0_mib=… rss50_mib=… per_task_start_ms=…
(The reference for the same figure, Docker Swarm 20.10 on this machine, is 4.87 s for 50
replicas, measured in issue 9's benchmark, bench/converge.py once it exists.)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.harness import REPO, new_daemon, wait_for  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicas", type=int, default=50)
    args = ap.parse_args()
    d = new_daemon("bench")
    try:
        d.start()
        d.cli("swarm", "init")
        tar = d.root / "busybox.tar"
        subprocess.run([sys.executable, str(REPO / "scripts" / "make-busybox-image.py"), str(tar)], check=True,
                       capture_output=True)
        d.cli("image", "import", str(tar), "busybox:latest")
        time.sleep(1)
        rss0 = rss_mib(d.proc.pid)
        t0 = time.monotonic()
        d.cli("service", "create", "--name", "bench", "--replicas", str(args.replicas), "--detach", "busybox",
              "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done")

        def running():
            return sum(1 for t in d.api_tasks("bench")
                       if t["Status"]["State"] == "running" and t["DesiredState"] == "running")
        wait_for(lambda: running() == args.replicas, 300, 0.05, "all tasks running")
        elapsed = time.monotonic() - t0
        time.sleep(1)
        rss50 = rss_mib(d.proc.pid)
        d.cli("service", "rm", "bench")
        wait_for(lambda: not d.api_tasks(), 120, 0.2, "tasks removed")
    finally:
        d.cleanup()
    print(f"create_s={elapsed:.2f} rss0_mib={rss0:.1f} rss{args.replicas}_mib={rss50:.1f} "
          f"per_task_start_ms={elapsed / args.replicas * 1000:.0f}")


if __name__ == "__main__":
    main()
