"""Live progress of a service converging, drawn as `docker service create --detach=false` draws it:
one bar per task slot (per node for global services), an overall line, then a verification
period before "Service converged" — or the reason it did not converge.

`Tracker` is pure: it turns successive snapshots of the service, its tasks and the live nodes
into the lines to show. `follow` polls the API and draws them (rich.live on a terminal; changed
lines only otherwise, so logs stay readable).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable

NUMBERED_STATES = {
    "new": 1, "allocated": 2, "pending": 3, "assigned": 4, "accepted": 5, "preparing": 6, "ready": 7,
    "starting": 8, "running": 9,
    # not drawn, but ordered
    "complete": 10, "shutdown": 11, "failed": 12, "rejected": 13, "remove": 14, "orphaned": 15,
}
MAX_PROGRESS = 9
MAX_JOB_PROGRESS = 10
MAX_BARS = 20  # more slots than this: the overall line only
LONGEST_STATE = max(len(s) for s, n in NUMBERED_STATES.items() if n <= 10)
BAR_WIDTH = 50


def bar(current: int, total: int, width: int = BAR_WIDTH) -> str:
    """Docker's progress bar: `[=====>      ]`."""
    filled = int(width * min(max(current, 0), total) / total) if total else 0
    return "[" + "=" * filled + ">" + " " * (width - filled) + "]"


def terminal(state: str) -> bool:
    return NUMBERED_STATES.get(state, 0) > NUMBERED_STATES["running"]


def trunc_error(err: str, width: int = 75) -> str:
    err = err.replace("\n", " ")
    return err if len(err) <= width else err[: width - 1] + "…"


def mode_of(spec: dict) -> str:
    mode = spec.get("Mode") or {}
    for key, name in (("Replicated", "replicated"), ("Global", "global"), ("ReplicatedJob", "replicated-job"),
                      ("GlobalJob", "global-job")):
        if key in mode:
            return name
    return "replicated"


def up_to_date(service: dict, tasks: list[dict]) -> list[dict]:
    """Tasks made from the service's current task template (and, for jobs, its current run)."""
    template = service.get("Spec", {}).get("TaskTemplate", {})
    iteration = ((service.get("JobStatus") or {}).get("JobIteration") or {}).get("Index", 0)
    job = mode_of(service.get("Spec", {})).endswith("-job")
    return [t for t in tasks if t.get("Spec", {}) == template
            and (not job or ((t.get("JobIteration") or {}).get("Index", 0) == iteration))]


@dataclass
class Frame:
    lines: list[tuple[str, str]]  # (id, text), in display order
    converged: bool


@dataclass
class Tracker:
    """Docker's progress updaters, one per mode, as a pure function of successive snapshots."""
    service: dict
    slot_map: dict[int, int] = field(default_factory=dict)
    done: bool = False
    nodes_seen: list[str] = field(default_factory=list)

    def update(self, service: dict, tasks: list[dict], active_nodes: set[str], rollback: bool = False) -> Frame:
        self.service = service
        mode = mode_of(service.get("Spec", {}))
        tasks = [t for t in up_to_date(service, tasks)
                 if t.get("DesiredState") in NUMBERED_STATES and t.get("Status", {}).get("State") in NUMBERED_STATES]
        if mode == "replicated":
            return self._replicated(service, tasks, active_nodes, rollback)
        if mode == "global":
            return self._global(tasks, active_nodes, rollback)
        if mode == "replicated-job":
            return self._replicated_job(service, tasks)
        return self._global_job(tasks, active_nodes)

    @staticmethod
    def _overall(running: int, total: int, rollback: bool) -> tuple[str, str]:
        text = f"{running} out of {total} tasks"
        return ("overall progress", ("rolling back update: " + text) if rollback else text)

    @staticmethod
    def _task_line(task: dict, total: int) -> str | None:
        status = task.get("Status", {})
        if status.get("Err"):
            return trunc_error(status["Err"])
        state = status.get("State", "")
        if terminal(task.get("DesiredState", "")) or terminal(state):
            return None
        return f"{state:<{LONGEST_STATE}} {bar(NUMBERED_STATES[state], total)}"

    @staticmethod
    def _pick(existing: dict | None, task: dict) -> bool:
        """Several tasks in one slot (a restart, start-first): show the one meant to run, least advanced."""
        if existing is None:
            return True
        ed, td = NUMBERED_STATES[existing["DesiredState"]], NUMBERED_STATES[task["DesiredState"]]
        if ed != td:
            return td < ed
        return NUMBERED_STATES[task["Status"]["State"]] < NUMBERED_STATES[existing["Status"]["State"]]

    def _replicated(self, service: dict, tasks: list[dict], active: set[str], rollback: bool) -> Frame:
        replicas = service["Spec"]["Mode"]["Replicated"].get("Replicas", 0)
        by_slot: dict[int, dict] = {}
        for t in tasks:
            if t.get("NodeID") and t["NodeID"] not in active:
                continue
            if self._pick(by_slot.get(t.get("Slot", 0)), t):
                by_slot[t.get("Slot", 0)] = t
        running = sum(1 for t in by_slot.values()
                      if not terminal(t["DesiredState"]) and t["Status"]["State"] == "running")
        lines = [self._overall(running, replicas, rollback)]
        if replicas <= MAX_BARS:
            shown: dict[int, str] = {i: " " for i in range(1, replicas + 1)}
            for slot in sorted(by_slot):
                task = by_slot[slot]
                if terminal(task["DesiredState"]) and slot not in self.slot_map:
                    continue  # a slot being removed by a scale-down
                mapped = self.slot_map.setdefault(slot, len(self.slot_map) + 1)
                text = self._task_line(task, MAX_PROGRESS)
                if mapped <= replicas and text is not None:
                    shown[mapped] = text
            lines += [(f"{i}/{replicas}", shown[i]) for i in sorted(shown)]
        return Frame(lines, running == replicas)

    def _global(self, tasks: list[dict], active: set[str], rollback: bool) -> Frame:
        by_node: dict[str, dict] = {}
        for t in tasks:
            if t.get("NodeID") and self._pick(by_node.get(t["NodeID"]), t):
                by_node[t["NodeID"]] = t
        wanted = {n: t for n, t in by_node.items() if not terminal(t["DesiredState"]) and n in active}
        if not wanted and not self.nodes_seen:
            return Frame([("overall progress", "waiting for new tasks")], False)
        running = sum(1 for t in wanted.values() if t["Status"]["State"] == "running")
        lines = [self._overall(running, len(wanted), rollback)]
        if len(wanted) <= MAX_BARS:
            for node in sorted(wanted):
                if node not in self.nodes_seen:
                    self.nodes_seen.append(node)
            for node in self.nodes_seen:
                if node in wanted:
                    lines.append((node[:12], self._task_line(wanted[node], MAX_PROGRESS) or " "))
        return Frame(lines, running == len(wanted))

    def _replicated_job(self, service: dict, tasks: list[dict]) -> Frame:
        rj = service["Spec"]["Mode"]["ReplicatedJob"]
        concurrent = rj.get("MaxConcurrent", 1)
        total = rj.get("TotalCompletions", concurrent)
        by_slot: dict[int, dict] = {}
        for t in tasks:
            slot = t.get("Slot", 0)
            if slot not in by_slot or NUMBERED_STATES[t["Status"]["State"]] < NUMBERED_STATES[by_slot[slot]["Status"]["State"]]:
                by_slot[slot] = t
        complete = sum(1 for t in by_slot.values() if t["Status"]["State"] == "complete")
        active_n = sum(1 for t in by_slot.values() if NUMBERED_STATES[t["Status"]["State"]] < NUMBERED_STATES["complete"])
        digits = len(str(total))
        lines = [("job progress", f"{complete:>{digits}} out of {total} complete {bar(complete, total)}"),
                 ("active tasks", f"{active_n} out of {min(total - complete, concurrent)} tasks")]
        if total <= MAX_BARS:
            for slot in range(1, total + 1):
                t = by_slot.get(slot)
                lines.append((f"{slot}/{total}", self._job_line(t)))
        return Frame(lines, complete >= total)

    def _global_job(self, tasks: list[dict], active: set[str]) -> Frame:
        by_node: dict[str, dict] = {}
        for t in tasks:
            node = t.get("NodeID", "")
            if node and (node not in by_node or NUMBERED_STATES[t["Status"]["State"]]
                         < NUMBERED_STATES[by_node[node]["Status"]["State"]]):
                by_node[node] = t
        if not self.nodes_seen:
            if not by_node:
                return Frame([("job progress", "waiting for tasks")], False)
            self.nodes_seen = sorted(by_node)  # the nodes of the start; later joiners are not waited for
        complete = sum(1 for n in self.nodes_seen if by_node.get(n, {}).get("Status", {}).get("State") == "complete")
        total = len(self.nodes_seen)
        lines = [("job progress", f"{complete:>{len(str(total))}} out of {total} complete {bar(complete, total)}")]
        if total <= MAX_BARS:
            lines += [(n[:12], self._job_line(by_node.get(n))) for n in self.nodes_seen]
        return Frame(lines, complete == total)

    @staticmethod
    def _job_line(t: dict | None) -> str:
        if t is None:
            return " "
        if t["Status"].get("Err"):
            return trunc_error(t["Status"]["Err"])
        state = t["Status"]["State"]
        return f"{state:<{LONGEST_STATE}} {bar(NUMBERED_STATES.get(state, 0), MAX_JOB_PROGRESS)}"


@dataclass
class Outcome:
    ok: bool
    message: str = ""


class Display:
    """Keyed lines: redrawn in place on a terminal, printed when they change otherwise."""

    def __init__(self, quiet: bool = False, tty: bool | None = None, out=None):
        self.quiet = quiet
        self.out = out or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.lines: dict[str, str] = {}
        self.printed: dict[str, str] = {}
        self.live = None
        if self.tty and not quiet:
            from rich.console import Console
            from rich.live import Live
            self.live = Live(console=Console(file=self.out), auto_refresh=False, transient=False)
            self.live.start()

    def set(self, key: str, text: str) -> None:
        self.lines[key] = text

    def show(self) -> None:
        if self.quiet:
            return
        if self.live is not None:
            from rich.text import Text
            self.live.update(Text("\n".join(f"{k}: {v}" for k, v in self.lines.items())), refresh=True)
            return
        for k, v in self.lines.items():
            if self.printed.get(k) != v:
                self.out.write(f"{k}: {v}\n")
                self.printed[k] = v
        self.out.flush()

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def follow(get_service: Callable[[], dict], get_tasks: Callable[[], list[dict]], get_active_nodes: Callable[[], set[str]],
           *, display: Display, rollback_requested: bool = False, interval: float = 0.2,
           clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """Docker's ServiceProgress loop. Ends when the service has converged and stayed so for the
    update monitor period (jobs: when they complete), or when an update pauses or is rolled back
    against the user's wish: that outcome carries the reason."""
    tracker: Tracker | None = None
    converged, converged_at = False, None
    rollback, auto_rollback = False, ""
    while True:
        service = get_service()
        spec = service.get("Spec", {})
        monitor = (spec.get("UpdateConfig") or {}).get("Monitor", 5_000_000_000) / 1e9
        if tracker is None:
            tracker = Tracker(service)
        status = service.get("UpdateStatus") or {}
        state, message = status.get("State", ""), status.get("Message", "")
        if state == "updating":
            rollback = False
        elif state == "paused":
            return Outcome(False, f"service update paused: {message}")
        elif state == "rollback_paused":
            return Outcome(False, f"service rollback paused: {message}")
        elif state in ("rollback_started", "rollback_completed"):
            if not rollback and message:
                display.set("rollback", message)
            rollback = True
            if not rollback_requested and not auto_rollback:
                auto_rollback = message
        settled = state not in ("updating", "rollback_started")  # the updater's own verdict, when there is one
        if converged and converged_at is not None and clock() - converged_at >= monitor and settled:
            display.set("verify", "Service converged")
            display.show()
            if auto_rollback:
                return Outcome(False, f"service rolled back: {auto_rollback}")
            return Outcome(True)
        frame = tracker.update(service, get_tasks(), get_active_nodes(), rollback)
        for key, text in frame.lines:
            display.set(key, text)
        converged = frame.converged
        if converged:
            if mode_of(spec).endswith("-job"):
                display.set("job", "job complete")
                display.show()
                return Outcome(True)
            if converged_at is None:
                converged_at = clock()
            wait = monitor - (clock() - converged_at)
            if wait >= 0 or not settled:
                display.set("verify", f"Waiting {int(max(wait, 0)) + 1} seconds to verify that tasks are stable...")
        else:
            if converged_at is not None:
                display.set("verify", "Detected task failure")
            converged_at = None
        display.show()
        sleep(interval)
