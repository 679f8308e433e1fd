"""Worker sessions: what each node is told to run, and the status it reports back.

A session carries msgpack-ready messages only (assignment sets out, status batches in), so the
same session runs in-process for the manager's own worker and over the network for the others.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import copy
import time
from dataclasses import dataclass, field
from typing import Any

from api import codec
from api.objects import Node, NodeStatus, Task, TaskStatus, is_terminal, state_rank
from manager import secretbox
from manager.allocator import node_view
from manager.store import Action, Change, Conflict, Store

log = logging.getLogger("shoal.dispatcher")
ASSIGNED = state_rank("assigned")


def assignments_for(store: Store, node_id: str) -> list[Task]:
    """Every task placed on the node, until the task is deleted: the worker keeps a task's
    container while the task exists and removes it once the task is gone. A global task carries
    its node from birth, but is the node's only once the allocator gave it its networks and the
    scheduler assigned it (as SwarmKit's dispatcher sends tasks from `assigned` on): sent earlier,
    the worker would start it without networks, published ports or a resource check."""
    return [t for t in store.list("task") if t.node_id == node_id and state_rank(t.status.state) >= ASSIGNED]


def assignment_message(tasks: list[Task], cluster=None) -> dict:
    """The node's whole task set, and the roots the cluster trusts now (so that nodes follow
    a CA rotation over their authenticated session)."""
    msg: dict = {"Type": "assignments", "Tasks": [codec.encode(t) for t in tasks]}
    if cluster is not None:
        msg["CA"] = {"TrustRoot": cluster.tls_info.trust_root, "RootDigest": cluster.root_ca_digest,
                     "Phase": cluster.root_rotation_phase}
    return msg


def files_for(store: Store, tasks: list[Task], cluster=None) -> dict:
    """The secrets and configs the node's live tasks use, with their data: a node hears of a
    secret only while it has a task that needs it (a task that ended needs none: its files
    were mounted when it started)."""
    secret_ids: set[str] = set()
    config_ids: set[str] = set()
    for t in tasks:
        if is_terminal(t.status.state) or state_rank(t.desired_state) > state_rank("running"):
            continue
        cs = t.spec.container_spec
        secret_ids.update(r.secret_id for r in cs.secrets)
        config_ids.update(r.config_id for r in cs.configs)
    out: dict = {"Secrets": [], "Configs": []}
    key = cluster.secrets_key if cluster is not None else ""
    for sid in sorted(secret_ids):
        secret = store.get("secret", sid)
        if secret is None or not key:
            continue
        try:
            data = secretbox.unseal(key, sid, secret.sealed)
        except secretbox.SealError as exc:
            log.error("%s", exc)
            continue
        out["Secrets"].append({"ID": sid, "Data": data})
    for cid in sorted(config_ids):
        config = store.get("config", cid)
        if config is not None:
            out["Configs"].append({"ID": cid, "Data": base64.b64decode(config.spec.data)})
    return out


def parse_status_updates(message: Any) -> list[tuple[str, TaskStatus]]:
    """Validates a status batch from a worker; raises DecodeError naming the bad field."""
    if not isinstance(message, dict) or message.get("Type") != "status":
        raise codec.DecodeError("Type", "expected a status message")
    updates = message.get("Updates")
    if not isinstance(updates, list):
        raise codec.DecodeError("Updates", "must be a list")
    out = []
    for i, u in enumerate(updates):
        if not isinstance(u, dict) or not isinstance(u.get("TaskID"), str):
            raise codec.DecodeError(f"Updates[{i}].TaskID", "must be a string")
        out.append((u["TaskID"], codec.decode(TaskStatus, u.get("Status"), f"Updates[{i}].Status")))
    return out


@dataclass
class Session:
    node_id: str
    dispatcher: "Dispatcher"
    local: bool = False  # the manager's own worker, in-process: alive while the manager is
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    outbox: asyncio.Queue = field(default_factory=asyncio.Queue)  # requests to the node (logs)
    closed: bool = False

    async def next_assignments(self) -> dict:
        """Waits until the node's assignment set may have changed, then returns it whole."""
        await self._changed.wait()
        self._changed.clear()
        store = self.dispatcher.store
        clusters = store.list("cluster")
        tasks = assignments_for(store, self.node_id)
        msg = assignment_message(tasks, clusters[0] if clusters else None)
        msg.update(files_for(store, tasks, clusters[0] if clusters else None))
        node = store.get("node", self.node_id)
        if node is not None:
            msg["Role"] = node.spec.role  # the role the node should take (promotion, demotion)
            # A removed member no longer hears from Raft; it learns of its removal here.
            msg["RaftMembers"] = sorted(self.dispatcher.members())
        msg.update(node_view(store, self.node_id))  # overlay networks: endpoints, names, VIPs, ports
        return msg

    async def report(self, message: Any) -> None:
        updates = parse_status_updates(message)
        await self.dispatcher.report(self.node_id, updates)

    def heartbeat(self) -> None:
        self.dispatcher.last_heartbeat[self.node_id] = time.monotonic()


class Dispatcher:
    def __init__(self, store: Store, propose, members=lambda: ()):
        self.store = store
        self.propose = propose
        self.members = members
        self.sessions: dict[str, list[Session]] = {}
        self.last_heartbeat: dict[str, float] = {}
        self._log_streams: dict[str, asyncio.Queue] = {}
        self._replies: dict[str, asyncio.Future] = {}
        self.manager_addrs: dict[str, str] = {}  # where each node would serve Raft, from its hello
        self.session_roles: dict[str, str] = {}  # the role in the certificate of each open session
        store.watch(self._on_changes)

    def open_session(self, node_id: str, local: bool = False) -> Session:
        session = Session(node_id, self, local=local)
        session._changed.set()  # the first call returns the current set at once
        self.sessions.setdefault(node_id, []).append(session)
        session.heartbeat()
        return session

    def close_session(self, session: Session) -> None:
        session.closed = True
        lst = self.sessions.get(session.node_id, [])
        if session in lst:
            lst.remove(session)
        # A closed session leaves a short grace to reconnect before the node is marked down.
        self.last_heartbeat[session.node_id] = time.monotonic() - self.heartbeat_s * (self.MISSED - 1)

    MISSED = 3  # heartbeats a node may miss before it is marked down
    heartbeat_s = 2.0

    def alive(self, node_id: str, now: float) -> bool:
        sessions = self.sessions.get(node_id, [])
        if any(s.local for s in sessions):
            return True
        last = self.last_heartbeat.get(node_id)
        return last is not None and now - last <= self.heartbeat_s * self.MISSED

    async def node_up(self, node_id: str, description, addr: str) -> None:
        node: Node | None = self.store.get("node", node_id)
        if node is None:
            return
        if node.status.state == "ready" and node.description == description and node.status.addr == addr:
            return
        new = copy.deepcopy(node)
        new.description = description
        new.status = NodeStatus(state="ready", message="", addr=addr)
        await self.propose([Action("update", "node", new)])

    async def stream_logs(self, node_id: str, containers: list[tuple[str, str]], tail: int | None,
                          follow: bool, since: float | None):
        """Ask a node for the logs of some of its containers; yields batches of
        [task id, time ns, stream, line] until the node says it is done."""
        sessions = self.sessions.get(node_id)
        if not sessions:
            raise LookupError(f"node {node_id} has no session with this manager")
        rid = secrets.token_hex(8)
        queue: asyncio.Queue = asyncio.Queue()
        self._log_streams[rid] = queue
        session = sessions[-1]
        session.outbox.put_nowait({"Type": "logs", "Request": rid, "Containers": [list(c) for c in containers],
                                   "Tail": tail, "Follow": follow, "Since": since})
        finished = False
        try:
            while True:
                msg = await queue.get()
                if msg is None:
                    raise LookupError(f"node {node_id}: the session ended while streaming logs")
                if msg.get("Lines"):
                    yield msg["Lines"]
                if msg.get("Done"):
                    finished = True
                    return
        finally:
            self._log_streams.pop(rid, None)
            if not finished:
                session.outbox.put_nowait({"Type": "logs-cancel", "Request": rid})

    async def request(self, node_id: str, msg: dict, timeout: float) -> dict:
        """One question to a node over its session (exec, stats), and its answer."""
        sessions = self.sessions.get(node_id)
        if not sessions:
            raise LookupError(f"node {node_id} has no session with this manager (is it down?)")
        rid = secrets.token_hex(8)
        fut = asyncio.get_running_loop().create_future()
        self._replies[rid] = fut
        sessions[-1].outbox.put_nowait({**msg, "Request": rid})
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._replies.pop(rid, None)

    def deliver_reply(self, node_id: str, msg: dict) -> None:
        fut = self._replies.get(str(msg.get("Request")))
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def deliver_logs(self, node_id: str, msg: dict) -> None:
        queue = self._log_streams.get(str(msg.get("Request")))
        if queue is not None and isinstance(msg.get("Lines", []), list):
            queue.put_nowait(msg)

    def grant_grace(self) -> None:
        """A manager that (re)starts has heard from nobody yet: every node gets a full heartbeat
        window to reconnect before it is marked down, so a manager restart moves no task."""
        now = time.monotonic()
        for node in self.store.list("node"):
            # also over a heartbeat this manager heard in an earlier term: that says nothing now
            self.last_heartbeat[node.id] = now

    async def monitor(self) -> None:
        """Marks nodes down when they stop sending heartbeats (or their session closed and
        did not come back within the grace)."""
        self.grant_grace()
        while True:
            await asyncio.sleep(min(0.5, self.heartbeat_s / 2))
            now = time.monotonic()
            for node in self.store.list("node"):
                if node.status.state == "ready" and not self.alive(node.id, now):
                    await self.mark_node(node.id, "down", "heartbeat failure")

    def _on_changes(self, changes: list[Change]) -> None:
        touched: set[str] = set()
        for c in changes:
            # Every node on a network must hear of an endpoint, a name or a port anywhere on it.
            if c.kind in ("network", "service", "networkkeys") or (c.kind == "task" and c.obj.networks_attachments):
                touched.update(self.sessions)
            if c.kind == "task" and c.obj.node_id:
                touched.add(c.obj.node_id)
            elif c.kind == "cluster":
                touched.update(self.sessions)
            elif c.kind == "node":
                touched.add(c.obj.id)
                if c.obj.attachments:  # its address on ingress (or its underlay address) changed
                    touched.update(self.sessions)
        for node_id in touched:
            for s in self.sessions.get(node_id, []):
                s._changed.set()

    async def report(self, node_id: str, updates: list[tuple[str, TaskStatus]]) -> None:
        actions = []
        for task_id, status in updates:
            task = self.store.get("task", task_id)
            if task is None or task.node_id != node_id:
                continue  # a node may only report on its own tasks
            actions.append(Action("task_status", "task", status, task_id))
        if actions:
            await self.propose(actions)

    async def mark_node(self, node_id: str, state: str, message: str = "", addr: str | None = None) -> None:
        node: Node | None = self.store.get("node", node_id)
        if node is None or (node.status.state == state and (addr is None or node.status.addr == addr)):
            return
        new = copy.deepcopy(node)
        new.status = NodeStatus(state=state, message=message, addr=addr if addr is not None else node.status.addr)
        try:
            await self.propose([Action("update", "node", new)])
        except Conflict:
            pass  # changed meanwhile; the monitor looks again
