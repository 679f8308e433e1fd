"""The replicated tables: cluster, nodes, services, tasks.

Every change arrives as a log entry (a list of actions) and is applied by `Store.apply`, a
deterministic function of the current tables and the entry: the same entries applied in the same
order give the same tables on every manager. An entry applies whole or not at all.

Readers get the stored objects themselves and must not mutate them; writers copy first.
Stored objects are replaced, never changed in place, so an updated object may share the parts
it did not change with the one it replaces.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from api import codec
from api.objects import KINDS, Service, Task, TaskStatus, Version, state_rank


class StoreError(Exception):
    status = 400


class NotFound(StoreError):
    status = 404


class Conflict(StoreError):
    status = 409


# Action operations. Task fields have one owner each (the worker reports status, the
# orchestrator sets the desired state, the scheduler assigns the node), so they get their own
# operations that only move forward and never conflict with one another.
OPS = ("create", "update", "delete", "task_status", "task_desired", "task_assign")


@dataclass
class Action:
    op: str
    kind: str
    obj: Any = None  # the object (create/update) or a dict of fields for the task ops
    id: str = ""

    def to_wire(self) -> dict:
        body = codec.encode(self.obj) if self.obj is not None else None
        return {"Op": self.op, "Kind": self.kind, "ID": self.id or _id_of(self.obj), "Object": body}

    @staticmethod
    def from_wire(data: Any) -> "Action":
        if not isinstance(data, dict):
            raise codec.DecodeError("action", "must be an object")
        op, kind, obj_id = data.get("Op"), data.get("Kind"), data.get("ID", "")
        if op not in OPS:
            raise codec.DecodeError("action.Op", f"unknown operation {op!r}")
        if kind not in KINDS:
            raise codec.DecodeError("action.Kind", f"unknown kind {kind!r}")
        body = data.get("Object")
        if op in ("create", "update"):
            return Action(op, kind, codec.decode(KINDS[kind], body, "action.Object"), obj_id)
        if op == "task_status":
            return Action(op, kind, codec.decode(TaskStatus, body, "action.Object"), obj_id)
        return Action(op, kind, body, obj_id)


def _id_of(obj: Any) -> str:
    return getattr(obj, "id", "") if obj is not None else ""


@dataclass
class Change:
    """What one applied action did; watchers receive these."""

    op: str
    kind: str
    obj: Any  # the object after the change (before it, for delete)


@dataclass
class Store:
    tables: dict[str, dict[str, Any]] = field(default_factory=lambda: {k: {} for k in KINDS})
    index: int = 0  # index of the last applied entry
    _watchers: list[Callable[[list[Change]], None]] = field(default_factory=list)

    # --- reads --------------------------------------------------------------------------

    def get(self, kind: str, obj_id: str) -> Any | None:
        return self.tables[kind].get(obj_id)

    def list(self, kind: str) -> list[Any]:
        return list(self.tables[kind].values())

    def service_by_name(self, name: str) -> Service | None:
        for svc in self.tables["service"].values():
            if svc.spec.name == name:
                return svc
        return None

    def tasks_of(self, service_id: str) -> list[Task]:
        return [t for t in self.tables["task"].values() if t.service_id == service_id]

    def watch(self, callback: Callable[[list[Change]], None]) -> None:
        self._watchers.append(callback)

    # --- the one write path -----------------------------------------------------------------

    def apply(self, index: int, timestamp: str, actions: Iterable[Action], owned: bool = False) -> list[Change]:
        """Apply one log entry. Raises StoreError and changes nothing if any action is refused.

        `owned`: the actions' objects are the caller's to give away (freshly decoded from the
        log, as Raft's apply does), so the store keeps them instead of a deep copy each."""
        staged: dict[tuple[str, str], Any] = {}  # (kind, id) -> new object or None (deleted)
        changes: list[Change] = []

        def current(kind: str, obj_id: str) -> Any | None:
            key = (kind, obj_id)
            if key in staged:
                return staged[key]
            return self.tables[kind].get(obj_id)

        for action in actions:
            change = self._stage(action, current, index, timestamp, staged, owned)
            if change is not None:
                changes.append(change)
        for (kind, obj_id), obj in staged.items():
            if obj is None:
                self.tables[kind].pop(obj_id, None)
            else:
                self.tables[kind][obj_id] = obj
        self.index = index
        if changes:
            for watcher in list(self._watchers):
                watcher(changes)
        return changes

    def _stage(self, action: Action, current, index: int, ts: str, staged: dict, owned: bool = False) -> Change | None:
        kind, op = action.kind, action.op
        if op == "create":
            obj = action.obj if owned else copy.deepcopy(action.obj)
            if not obj.id:
                raise StoreError("id: must not be empty")
            if current(kind, obj.id) is not None:
                raise Conflict(f"{kind} {obj.id} already exists")
            if kind in _NAMED:
                self._check_name_free(kind, obj.spec.name, obj.id, current, staged)
            if kind == "service":
                self._check_references(obj, current)
            obj.version.index = index
            obj.created_at = obj.created_at or ts
            obj.updated_at = ts
            staged[(kind, obj.id)] = obj
            return Change("create", kind, obj)
        if op == "update":
            obj = action.obj if owned else copy.deepcopy(action.obj)
            old = current(kind, obj.id)
            if old is None:
                raise NotFound(f"{kind} {obj.id} not found")
            if obj.version.index != old.version.index:
                raise Conflict(
                    f"version: update out of sequence ({kind} {obj.id} is at version "
                    f"{old.version.index}, the update was based on {obj.version.index})")
            if kind in _NAMED and obj.spec.name != old.spec.name:
                self._check_name_free(kind, obj.spec.name, obj.id, current, staged)
            if kind == "service":
                self._check_references(obj, current)
            obj.version.index = index
            obj.created_at = old.created_at
            obj.updated_at = ts
            staged[(kind, obj.id)] = obj
            return Change("update", kind, obj)
        if op == "delete":
            old = current(kind, action.id)
            if old is None:
                raise NotFound(f"{kind} {action.id} not found")
            if kind in ("secret", "config"):
                self._check_unused(kind, old, current, staged)
            staged[(kind, action.id)] = None
            return Change("delete", kind, old)
        # Task field operations: stale or backwards ones are dropped, not errors, because
        # reports race with the orchestrator by nature.
        task = current("task", action.id)
        if task is None:
            return None
        if op == "task_status":
            status: TaskStatus = action.obj
            if state_rank(status.state) < state_rank(task.status.state):
                return None
            if status.state == task.status.state and status == task.status:
                return None
            new = _task_copy(task)
            new.status = status if owned else copy.deepcopy(status)
        elif op == "task_desired":
            desired = action.obj
            if not isinstance(desired, str) or desired not in _DESIRED_OK:
                raise StoreError(f"desired_state: invalid value {desired!r}")
            if state_rank(desired) <= state_rank(task.desired_state):
                return None
            new = _task_copy(task)
            new.desired_state = desired
        elif op == "task_assign":
            body = action.obj if isinstance(action.obj, dict) else {}
            node_id, message = body.get("NodeID", ""), body.get("Message", "")
            if task.status.state not in ("new", "pending"):
                return None
            new = _task_copy(task)
            if node_id:
                new.node_id = node_id
                new.status = TaskStatus(timestamp=ts, state="assigned", message="scheduler assigned task to node")
            else:
                if task.status.state == "pending" and task.status.err == message:
                    return None
                new.status = TaskStatus(timestamp=ts, state="pending", message="pending task scheduling", err=message)
        else:  # pragma: no cover - guarded by Action.from_wire
            raise StoreError(f"op: unknown operation {op!r}")
        new.version.index = index
        new.updated_at = ts
        staged[("task", new.id)] = new
        return Change("update", "task", new)

    def _check_name_free(self, kind: str, name: str, obj_id: str, current, staged) -> None:
        for key, obj in staged.items():
            if key[0] == kind and obj is not None and obj.id != obj_id and obj.spec.name == name:
                raise Conflict(f"name: a {kind} named {name!r} already exists")
        for other in self.tables[kind].values():
            if other.id != obj_id and other.spec.name == name and current(kind, other.id) is not None:
                raise Conflict(f"name: a {kind} named {name!r} already exists")

    @staticmethod
    def _check_references(svc: Service, current) -> None:
        """A service may only name secrets and configs that exist (in this entry or before)."""
        cs = svc.spec.task_template.container_spec
        for i, ref in enumerate(cs.secrets):
            if current("secret", ref.secret_id) is None:
                raise NotFound(f"TaskTemplate.ContainerSpec.Secrets[{i}].SecretID: secret "
                               f"{ref.secret_name or ref.secret_id!r} not found")
        for i, ref in enumerate(cs.configs):
            if current("config", ref.config_id) is None:
                raise NotFound(f"TaskTemplate.ContainerSpec.Configs[{i}].ConfigID: config "
                               f"{ref.config_name or ref.config_id!r} not found")

    def _check_unused(self, kind: str, obj: Any, current, staged) -> None:
        """Docker refuses to remove a secret or config that a service still uses."""
        users = []
        ids = set(self.tables["service"]) | {k[1] for k in staged if k[0] == "service"}
        for sid in ids:
            svc = current("service", sid)
            if svc is None:
                continue
            cs = svc.spec.task_template.container_spec
            refs = [r.secret_id for r in cs.secrets] if kind == "secret" else [r.config_id for r in cs.configs]
            if obj.id in refs:
                users.append(svc.spec.name)
        if users:
            raise Conflict(f"{kind} {obj.spec.name!r} is in use by the following service"
                           f"{'s' if len(users) > 1 else ''}: {', '.join(sorted(users))}")

    # --- snapshots ------------------------------------------------------------------------

    def snapshot(self) -> dict:
        return {
            "Index": self.index,
            "Tables": {kind: [codec.encode(o) for o in objs.values()] for kind, objs in self.tables.items()},
        }

    def restore(self, data: dict) -> None:
        tables: dict[str, dict[str, Any]] = {k: {} for k in KINDS}
        for kind, items in data.get("Tables", {}).items():
            if kind not in KINDS:
                raise StoreError(f"snapshot: unknown table {kind!r}")
            for item in items:
                obj = codec.decode(KINDS[kind], item, f"snapshot.{kind}")
                tables[kind][obj.id] = obj
        self.tables = tables
        self.index = int(data.get("Index", 0))


_NAMED = ("service", "secret", "config")  # kinds whose spec names are unique
_DESIRED_OK = {"running", "ready", "complete", "shutdown", "remove"}


def _task_copy(task: Task) -> Task:
    """The next version of a stored task for the task operations: they replace whole fields
    (status, desired state, node) and the version, so the rest may be shared with the
    stored one (which nobody changes in place) instead of deep-copied on every report."""
    new = copy.copy(task)
    new.version = Version(task.version.index)
    return new
