"""Scheduler throughput: place T tasks of 100 services (with constraints and preferences) on N nodes.

Cases: 1,000 tasks on 100 nodes, 10,000 on 1,000, 50,000 on 5,000; each timed as the
median of 5 runs of one schedule() call on an empty cluster. Targets: 10k/1k under
1 s, 50k/5k under 6 s. The reference measured in the same run is the 10k case:
scale_50k_over_10k is about 5 when cost grows linearly (25 if it grew with
tasks x nodes).

Run: python bench/scheduler.py [--runs 5]
The last line carries the figures as name=value pairs.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler import NodeInfo, TaskRequest, schedule  # noqa: E402

GIB = 1 << 30
CPU = 1_000_000_000
SERVICES = 100


def make_nodes(n: int, rng: random.Random) -> list[NodeInfo]:
    nodes = []
    zones = [f"zone-{z}" for z in range(5)]
    for i in range(n):
        nodes.append(NodeInfo(
            id=f"node-{i:05d}",
            hostname=f"host-{i:05d}",
            role="manager" if i < 3 else "worker",
            # A few nodes are down, paused or drained, as in a real cluster.
            ready=rng.random() > 0.01,
            availability=rng.choice(["active"] * 97 + ["pause", "drain", "active"]),
            labels={"zone": zones[i % len(zones)], "rack": f"r{(i // 5) % 20}",
                    "disk": "ssd" if i % 2 else "hdd"},
            engine_labels={"kernel": "6"},
            nano_cpus=16 * CPU,
            memory_bytes=64 * GIB,
        ))
    return nodes


def make_tasks(total: int) -> list[TaskRequest]:
    """100 services; a third with a constraint, a third spreading over zones, some over
    zone then rack, a fifth reserving resources, a tenth limiting replicas per node."""
    per_service = total // SERVICES
    tasks = []
    for s in range(SERVICES):
        constraints: tuple[str, ...] = ()
        if s % 3 == 0:
            constraints = ("node.labels.disk==ssd",)
        elif s % 3 == 1:
            constraints = ("node.role!=manager",)
        preferences: tuple[str, ...] = ()
        if s % 3 != 2:
            preferences = ("spread=node.labels.zone",)
            if s % 2:
                preferences += ("spread=node.labels.rack",)
        cpu, memory = (CPU // 10, 128 << 20) if s % 5 == 0 else (0, 0)
        max_per_node = 4 if s % 10 == 0 else 0
        for r in range(per_service):
            tasks.append(TaskRequest(
                id=f"task-{s:03d}-{r:05d}", service_id=f"svc-{s:03d}", spec_key=f"svc-{s:03d}:v1",
                constraints=constraints, preferences=preferences, reserve_nano_cpus=cpu,
                reserve_memory=memory, max_replicas_per_node=max_per_node))
    return tasks


def run_case(tasks: int, nodes: int, runs: int) -> tuple[float, int]:
    rng = random.Random(tasks * 31 + nodes)
    node_list = make_nodes(nodes, rng)
    pending = make_tasks(tasks)
    times = []
    placed = 0
    for _ in range(runs):
        start = time.perf_counter()
        decision = schedule(node_list, [], pending)
        times.append(time.perf_counter() - start)
        placed = len(decision.assignments)
        if decision.unplaced:
            reason = next(iter(decision.unplaced.values()))
            raise SystemExit(f"{len(decision.unplaced)} tasks unplaced: {reason}")
    return statistics.median(times), placed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    figures = {}
    for name, tasks, nodes in (("t1k_100", 1_000, 100), ("t10k_1k", 10_000, 1_000), ("t50k_5k", 50_000, 5_000)):
        seconds, placed = run_case(tasks, nodes, args.runs)
        figures[name] = (seconds, placed)
        print(f"{tasks} tasks of {SERVICES} services on {nodes} nodes: {seconds:.3f} s "
              f"(median of {args.runs}), {placed / seconds:,.0f} placements/s", flush=True)
    parts = [f"{name}_s={s:.3f}" for name, (s, _) in figures.items()]
    parts += [f"{name}_placements_per_s={p / s:.0f}" for name, (s, p) in figures.items()]
    parts.append(f"placements_per_s={figures['t10k_1k'][1] / figures['t10k_1k'][0]:.0f}")
    parts.append(f"scale_50k_over_10k={figures['t50k_5k'][0] / figures['t10k_1k'][0]:.2f}")
    parts.append(f"t10k_1k_target_met={figures['t10k_1k'][0] < 1.0}")
    parts.append(f"t50k_5k_target_met={figures['t50k_5k'][0] < 6.0}")
    print(" ".join(parts))


if __name__ == "__main__":
    main()
