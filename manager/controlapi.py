"""The control API: swarm objects over HTTP/JSON with the Docker swarm API's paths and fields.

Handlers decode and validate the request, turn it into store actions, and propose them; the
response is the applied object. Errors are JSON `{"message": ...}` naming the field and reason.
"""
from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

from urllib.parse import urlencode

from aiohttp import web

from api import codec
from api.ids import new_id, timestamp
from api.objects import (SECOND, EncryptionKey, ManagerStatus, Node, NodeSpec, ReplicatedService, Service, ServiceSpec,
                         SwarmSpec, Task)
from manager.encryption.unlockkey import new_unlock_key
from manager.filerefs import FileRefError, complete_references, pending_objects
from manager import imagepin, pullauth
from manager.imagepin import ImageSource
from manager.manager import Manager
from manager.orchestrator.update import manual_rollback
from manager.store import Action, StoreError
from manager.validation import SpecError, validate_service_spec
from worker.images.nodeclient import image_registry
from worker.images.reference import parse_reference


_IMAGE_ID = re.compile(r"^(sha256:)?[a-f0-9]{64}$")


class APIError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


async def read_json(request: web.Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise APIError(400, "body: not valid JSON") from None


@web.middleware
async def error_middleware(request: web.Request, handler):
    """Errors become `{"message": ...}` with a status; a bug says so without a traceback."""
    try:
        return await handler(request)
    except APIError as exc:
        return error_response(exc.status, str(exc))
    except web.HTTPException:
        raise
    except StoreError as exc:
        return error_response(exc.status, str(exc))
    except Exception as exc:
        logging.getLogger("shoal.api").exception("%s %s failed", request.method, request.path)
        return error_response(500, f"internal error: {exc}")


def public_cluster(cluster) -> dict:
    body = codec.encode(cluster)
    body.pop("RootCAKey", None)
    body.pop("SecretsKey", None)
    body.pop("RootRotationPhase", None)
    body.pop("UnlockKeys", None)  # only through GET /swarm/unlockkey, as in Docker
    return body


def validate_swarm_spec(spec: SwarmSpec) -> None:
    """The checks a SwarmSpec passes at init and at every update."""
    if spec.ca_config.node_cert_expiry < 3600 * SECOND:
        raise APIError(400, "CAConfig.NodeCertExpiry: must be at least 1h")
    if spec.dispatcher.heartbeat_period < 100_000_000:
        raise APIError(400, "Dispatcher.HeartbeatPeriod: must be at least 100ms")
    if spec.orchestration.task_history_retention_limit < 0:
        raise APIError(400, "Orchestration.TaskHistoryRetentionLimit: must not be negative")


def unlock_keys_for(spec: SwarmSpec, current: list[EncryptionKey], rotate: bool) -> list[EncryptionKey]:
    """The cluster's unlock keys after a spec change: a new key when autolock turns on or
    the key is rotated, none when it is off (every manager then stores its data key plainly)."""
    if not spec.encryption_config.auto_lock_managers:
        if rotate:
            raise APIError(400, "rotateManagerUnlockKey: autolock is not turned on "
                                "(turn it on with `shoal swarm update --autolock=true`)")
        return []
    have = [k for k in current if k.subsystem == "manager" and k.key]
    if have and not rotate:
        return have
    return [EncryptionKey(subsystem="manager", key=new_unlock_key())]


def find_one(objs: list, ref: str, kind: str, names: Callable[[Any], list[str]]) -> Any:
    """Docker's lookup: exact id, then exact name, then a unique id prefix."""
    for o in objs:
        if o.id == ref:
            return o
    named = [o for o in objs if ref in names(o)]
    if len(named) == 1:
        return named[0]
    prefixed = [o for o in objs if o.id.startswith(ref)]
    if len(prefixed) == 1:
        return prefixed[0]
    if len(named) > 1 or len(prefixed) > 1:
        raise APIError(409, f"{kind} {ref!r} is ambiguous: use a longer id")
    raise APIError(404, f"{kind} {ref} not found")


def lookup(m: Manager, kind: str, ref: str, names: Callable[[Any], list[str]]) -> Any:
    """`find_one` over a table: an exact id (what clients mostly send) is one dict lookup
    instead of a scan of the whole table."""
    obj = m.store.get(kind, ref)
    return obj if obj is not None else find_one(m.store.list(kind), ref, kind, names)


def node_names(n: Node) -> list[str]:
    return [x for x in (n.spec.name, n.description.hostname) if x]


def service_names(s: Service) -> list[str]:
    return [s.spec.name]


def labels_match(labels: dict[str, str], filters: dict[str, list[str]]) -> bool:
    """Docker's `label` filter: every `key` present, every `key=value` equal."""
    for label in filters.get("label", []):
        key, sep, value = label.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def parse_filters(request: web.Request) -> dict[str, list[str]]:
    raw = request.query.get("filters")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        raise APIError(400, "filters: not valid JSON") from None
    if not isinstance(data, dict):
        raise APIError(400, "filters: must be an object")
    out: dict[str, list[str]] = {}
    for k, v in data.items():
        if isinstance(v, dict):  # Docker's legacy {"key": {"value": true}} form
            v = [x for x, on in v.items() if on]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise APIError(400, f"filters.{k}: must be a list of strings")
        out[k] = v
    return out


@dataclass
class ImageChoice:
    """What a create/update decided about the image: the reference to record, the credentials
    to keep with the service, and warnings for the caller."""
    image: str
    registry_auth: str
    warnings: list[str]


class ControlAPI:
    """`images`: the node's registries and store, to pin images (None: references are kept as
    given). `forwards`: this instance serves the node's own socket, so a service create/update
    that reaches it on a follower is prepared here (the image pinned with this node's logins)
    and then sent to the leader; the instance on the cluster port never forwards."""

    def __init__(self, get_manager: Callable[[], Manager], images: ImageSource | None, get_ca: Callable,
                 rotate_ca: Callable | None = None, forwards: bool = False):
        self.get_manager = get_manager
        self.images = images
        self.get_ca = get_ca
        self.rotate_ca = rotate_ca
        self.forwards = forwards

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/swarm", self.swarm_inspect),
            web.get("/nodes", self.node_list),
            web.get("/nodes/{id}", self.node_inspect),
            web.post("/nodes/{id}/update", self.node_update),
            web.delete("/nodes/{id}", self.node_remove),
            web.post("/swarm/update", self.swarm_update),
            web.get("/swarm/unlockkey", self.unlock_key),
            web.post("/swarm/ca/rotate", self.ca_rotate),
            web.get("/services", self.service_list),
            web.post("/services/create", self.service_create),
            web.post("/services/placement", self.service_placement),
            web.get("/services/{id}", self.service_inspect),
            web.post("/services/{id}/update", self.service_update),
            web.delete("/services/{id}", self.service_remove),
            web.get("/services/{id}/logs", self.service_logs),
            web.get("/tasks", self.task_list),
            web.get("/tasks/{id}", self.task_inspect),
            web.post("/tasks/{id}/exec", self.task_exec),
            web.get("/tasks/{id}/stats", self.task_stats),
        ]

    # --- swarm and nodes ----------------------------------------------------------------

    async def swarm_inspect(self, request: web.Request) -> web.Response:
        m = self.get_manager()
        cluster = m.cluster
        if cluster is None:
            raise APIError(503, "swarm: not initialised")
        return web.json_response(public_cluster(cluster))

    async def node_list(self, request: web.Request) -> web.Response:
        m = self.get_manager()
        nodes = sorted(m.store.list("node"), key=lambda n: (n.description.hostname, n.id))
        return web.json_response([self._node_json(m, n) for n in nodes])

    @staticmethod
    def _node_json(m: Manager, node: Node) -> dict:
        """Manager status is live, not stored: who leads now and whom this manager hears."""
        body = codec.encode(node)
        if node.manager_status is not None:
            ms = body.setdefault("ManagerStatus", {})
            ms["Leader"] = node.id == m.raft.leader_id
            ms["Reachability"] = m.reachability(node.id)
        return body

    async def node_inspect(self, request: web.Request) -> web.Response:
        m = self.get_manager()
        ref = request.match_info["id"]
        if ref == "self":
            ref = m.node_id
        node = lookup(m, "node", ref, node_names)
        return web.json_response(self._node_json(m, node))

    async def node_update(self, request: web.Request) -> web.Response:
        m = self.get_manager()
        node = lookup(m, "node", request.match_info["id"], node_names)
        version = request.query.get("version")
        if version is None or not version.isdigit():
            raise APIError(400, "version: required, the Version.Index of the node being updated")
        try:
            spec = codec.decode(NodeSpec, await read_json(request))
        except codec.DecodeError as exc:
            raise APIError(400, str(exc)) from None
        if spec.availability not in ("active", "pause", "drain"):
            raise APIError(400, f"Availability: must be active, pause or drain, got {spec.availability!r}")
        if spec.role not in ("worker", "manager"):
            raise APIError(400, f"Role: must be worker or manager, got {spec.role!r}")
        new = copy.deepcopy(node)
        if spec.role != node.spec.role:
            if spec.role == "worker":
                self._check_demotion(m, node)
            else:
                # The node moves itself: it renews its certificate as a manager and starts Raft;
                # the leader then adds it as a learner and promotes it once it caught up.
                addr = m.dispatcher.manager_addrs.get(node.id) or f"{node.status.addr}:2377"
                new.manager_status = ManagerStatus(reachability="unknown", addr=addr)
        new.spec = spec
        new.version.index = int(version)
        await self._propose(m, [Action("update", "node", new)])
        return web.Response(status=200)

    @staticmethod
    def _check_demotion(m: Manager, node: Node) -> None:
        """Refuse a demotion that would leave no manager, or no quorum among those that answer."""
        voters, _ = m.raft.members()
        if node.id not in voters:
            return
        rest = [v for v in voters if v != node.id]
        if not rest:
            raise APIError(400, f"node {node.id}: the last manager of the swarm cannot be demoted")
        reachable = [v for v in rest if m.reachability(v) == "reachable"]
        if len(reachable) < len(rest) // 2 + 1:
            raise APIError(400, f"node {node.id}: demoting it would leave {len(reachable)} reachable manager(s) of "
                                f"{len(rest)}, no quorum; bring the other managers back first")

    async def node_remove(self, request: web.Request) -> web.Response:
        m = self.get_manager()
        node = lookup(m, "node", request.match_info["id"], node_names)
        force = request.query.get("force", "false").lower() in ("1", "true")
        voters, learners = m.raft.members()
        if node.id == m.node_id or node.spec.role == "manager" or node.id in voters + learners:
            raise APIError(400, f"node {node.id} is a cluster manager and a member of the Raft cluster: demote it "
                                "before removing it (a swarm's last manager cannot be removed; use "
                                "`shoal swarm leave --force` on it)")
        if node.status.state == "ready" and not force:
            raise APIError(400, f"node {node.id} is not down and can't be removed: stop it with `shoal swarm leave` "
                                "on that node, or use --force")
        await self._propose(m, [Action("delete", "node", None, node.id)])
        return web.Response(status=200)

    async def swarm_update(self, request: web.Request) -> web.Response:
        """Docker's POST /swarm/update: a new SwarmSpec, and token rotation flags."""
        m = self.get_manager()
        cluster = m.cluster
        if cluster is None:
            raise APIError(503, "swarm: not initialised")
        version = request.query.get("version")
        if version is None or not version.isdigit():
            raise APIError(400, "version: required, the Version.Index of the swarm being updated")
        try:
            spec = codec.decode(SwarmSpec, await read_json(request))
        except codec.DecodeError as exc:
            raise APIError(400, str(exc)) from None
        validate_swarm_spec(spec)
        new = copy.deepcopy(cluster)
        new.spec = spec
        new.version.index = int(version)
        flags = {k: _query_bool(request, k) for k in ("rotateWorkerToken", "rotateManagerToken", "rotateManagerUnlockKey")}
        new.unlock_keys = unlock_keys_for(spec, cluster.unlock_keys, flags.pop("rotateManagerUnlockKey"))
        if any(flags.values()):
            from manager.ca.tokens import JoinTokens as CATokens
            tokens = CATokens(worker=cluster.join_tokens.worker, manager=cluster.join_tokens.manager)
            ca_cert = self.get_ca().signer.cert
            if flags["rotateWorkerToken"]:
                tokens = tokens.rotate("worker", ca_cert)
            if flags["rotateManagerToken"]:
                tokens = tokens.rotate("manager", ca_cert)
            new.join_tokens.worker, new.join_tokens.manager = tokens.worker, tokens.manager
        await self._propose(m, [Action("update", "cluster", new)])
        return web.Response(status=200)

    async def unlock_key(self, request: web.Request) -> web.Response:
        """Docker's GET /swarm/unlockkey: the key that unlocks a restarted manager (empty
        while autolock is off)."""
        cluster = self.get_manager().cluster
        if cluster is None:
            raise APIError(503, "swarm: not initialised")
        return web.json_response({"UnlockKey": cluster.unlock_key()})

    async def ca_rotate(self, request: web.Request) -> web.Response:
        self.get_manager()
        if self.rotate_ca is None:
            raise APIError(501, "root CA rotation is only served on the node's own socket")
        await self.rotate_ca()
        return web.Response(status=200)

    # --- services -------------------------------------------------------------------------

    def _decode_spec(self, body: Any, new_networks: frozenset[str] = frozenset(),
                     new_files: dict[str, frozenset[str]] | None = None) -> ServiceSpec:
        """The spec as create and update store it: decoded, checked, its image pinned.
        `new_networks`, `new_files` ({"secret": names, "config": names}): objects a placement
        preview may take as existing, because the change creates them first."""
        try:
            spec = codec.decode(ServiceSpec, body)
        except codec.DecodeError as exc:
            raise APIError(400, str(exc)) from None
        mode = spec.mode
        if all(m is None for m in (mode.replicated, mode.global_, mode.replicated_job, mode.global_job)):
            spec.mode.replicated = ReplicatedService(1)  # Docker's default mode
        try:
            validate_service_spec(spec)
        except SpecError as exc:
            raise APIError(400, str(exc)) from None
        store = self.get_manager().store
        try:
            pending = new_files or {}
            complete_references(spec.task_template.container_spec,
                                store.list("secret") + pending_objects("secret", pending.get("secret", ())),
                                store.list("config") + pending_objects("config", pending.get("config", ())))
        except FileRefError as exc:
            raise APIError(exc.status, str(exc)) from None
        networks = self.get_manager().store.list("network") if "network" in self.get_manager().store.tables else []
        known = {n.id for n in networks} | {n.spec.name for n in networks} | new_networks
        for i, att in enumerate(spec.task_template.networks or spec.networks):
            if att.target not in known and not any(n.id.startswith(att.target) for n in networks):
                raise APIError(404, f"TaskTemplate.Networks[{i}].Target: network {att.target!r} not found")
        cs = spec.task_template.container_spec
        if cs.pull_options is not None:
            raise APIError(400, "TaskTemplate.ContainerSpec.PullOptions: registry credentials are given in the "
                                "X-Registry-Auth header (or with withRegistryAuth=true), not in the spec")
        try:
            if not _IMAGE_ID.match(cs.image):  # an image id is not a reference, and is allowed
                parse_reference(cs.image)
        except ValueError as exc:
            raise APIError(400, f"TaskTemplate.ContainerSpec.Image: {exc}") from None
        return spec

    async def _choose_image(self, request: web.Request, spec: ServiceSpec, current: Service | None) -> ImageChoice:
        """Swarm's --resolve-image and --with-registry-auth, on the node that received the call.
        Query parameters (Shoal's, documented in README): resolveImage=always|changed|never
        (default never, as Docker's API, whose CLI resolves before it calls), and
        withRegistryAuth=true to keep this node's login for the image's registry with the
        service; Docker's X-Registry-Auth header gives the credentials explicitly."""
        q = request.query
        try:
            mode = imagepin.parse_mode(q.get("resolveImage"))
            with_auth = pullauth.parse_flag(q.get("withRegistryAuth"), "withRegistryAuth")
            given = pullauth.parse_registry_auth(request.headers.get("X-Registry-Auth", ""))
        except ValueError as exc:
            raise APIError(400, str(exc)) from None
        image = spec.task_template.container_spec.image
        warnings: list[str] = []
        wanted = with_auth or mode != "never"
        stored = self.images.stored_auth(image) if self.images is not None and not given and wanted else ""
        keep = given or (stored if with_auth else "")
        if with_auth and not keep:
            host = _registry_of(image)
            warnings.append(f"withRegistryAuth: this node holds no login for {host} (shoal login {host}); "
                            f"the workers will pull {image} with their own, or anonymously")
        current_image = current.spec.task_template.container_spec.image if current is not None else None
        # The registry is asked with the request's credentials, else this node's login, even
        # when none are kept with the service (better than Docker's CLI, which asks anonymously).
        pinned = await imagepin.pin_image(image, mode, current_image, self.images, given or stored)
        return ImageChoice(pinned.image, keep, warnings + pinned.warnings)

    def _should_forward(self, m: Manager) -> bool:
        return self.forwards and not m.is_leader

    async def _forward_service_write(self, m: Manager, request: web.Request, spec: ServiceSpec | None,
                                     choice: ImageChoice | None) -> web.Response:
        """Send a prepared create/update to the leader: the final image (resolveImage=never, so
        the leader keeps it), and the credentials to keep in X-Registry-Auth."""
        query = {k: v for k, v in request.query.items() if k not in ("resolveImage", "withRegistryAuth")}
        headers = {}
        body = b""
        if spec is not None and choice is not None:
            spec.task_template.container_spec.image = choice.image
            query["resolveImage"] = "never"
            if choice.registry_auth:
                headers["X-Registry-Auth"] = choice.registry_auth
            body = json.dumps(codec.encode(spec)).encode()
        path_qs = request.path + ("?" + urlencode(query) if query else "")
        status, payload, ctype = await m.forward(request.method, path_qs, body, "application/json", headers)
        if choice is not None and choice.warnings and status < 300:
            try:
                reply = json.loads(payload)
                reply["Warnings"] = choice.warnings + list(reply.get("Warnings") or [])
                return web.json_response(reply, status=status)
            except (ValueError, AttributeError):
                pass
        return web.Response(status=status, body=payload, content_type=ctype or "application/json")

    async def service_create(self, request: web.Request) -> web.Response:
        m = self.get_manager()
        spec = self._decode_spec(await read_json(request))
        choice = await self._choose_image(request, spec, None)
        if self._should_forward(m):
            return await self._forward_service_write(m, request, spec, choice)
        spec.task_template.container_spec.image = choice.image
        pullauth.attach(spec, choice.registry_auth)
        service = Service(id=new_id(), spec=spec)
        await self._propose(m, [Action("create", "service", service)])
        return web.json_response({"ID": service.id, "Warnings": choice.warnings}, status=201)

    async def service_placement(self, request: web.Request) -> web.Response:
        """Shoal's read-only preview (see manager/placementapi.py): where the new tasks of
        services about to be created or updated would go now, and why some could not."""
        from manager.placementapi import placement_preview
        return web.json_response(placement_preview(self.get_manager(), await read_json(request), self._decode_spec))

    async def service_list(self, request: web.Request) -> web.Response:
        m = self.get_manager()
        filters = parse_filters(request)
        services = sorted(m.store.list("service"), key=lambda s: s.spec.name)
        services = [s for s in services if _match_service(s, filters)]
        return web.json_response([pullauth.redact_service(codec.encode(s)) for s in services])

    async def service_inspect(self, request: web.Request) -> web.Response:
        m = self.get_manager()
        svc = lookup(m, "service", request.match_info["id"], service_names)
        return web.json_response(pullauth.redact_service(codec.encode(svc)))

    async def service_update(self, request: web.Request) -> web.Response:
        """Docker's POST /services/{id}/update: a new spec (the old one becomes PreviousSpec and
        a rolling update follows), or `?rollback=previous` to go back to PreviousSpec."""
        m = self.get_manager()
        svc = lookup(m, "service", request.match_info["id"], service_names)
        version = request.query.get("version")
        if version is None or not version.isdigit():
            raise APIError(400, "version: required, the Version.Index of the service being updated")
        rollback = request.query.get("rollback", "")
        if rollback not in ("", "previous"):
            raise APIError(400, f"rollback: must be previous, got {rollback!r}")
        try:
            auth_from = pullauth.parse_auth_from(request.query.get("registryAuthFrom"))
        except ValueError as exc:
            raise APIError(400, str(exc)) from None
        now = time.time()
        warnings: list[str] = []
        if rollback:
            if self._should_forward(m):
                return await self._forward_service_write(m, request, None, None)
            try:
                new = manual_rollback(svc, now)
            except ValueError as exc:
                raise APIError(400, f"rollback: {exc}") from None
        else:
            spec = self._decode_spec(await read_json(request))
            if _mode_kind(spec) != _mode_kind(svc.spec):
                raise APIError(400, f"Mode: service mode change is not allowed ({_mode_kind(svc.spec)} to "
                                    f"{_mode_kind(spec)}): remove the service and create it again")
            choice = await self._choose_image(request, spec, svc)
            if self._should_forward(m):
                return await self._forward_service_write(m, request, spec, choice)
            spec.task_template.container_spec.image = choice.image
            pullauth.attach(spec, choice.registry_auth, svc, auth_from)
            warnings = choice.warnings
            new = copy.deepcopy(svc)
            new.previous_spec = copy.deepcopy(svc.spec)
            new.spec = spec
            new.update_status = None  # a new update starts (and a paused one resumes), as in Swarm
        if new.job_status is not None:  # every change of a job runs it again
            new.job_status.job_iteration.index += 1
            new.job_status.last_execution = timestamp(now)
        new.version.index = int(version)
        await self._propose(m, [Action("update", "service", new)])
        return web.json_response({"Warnings": warnings})

    async def service_remove(self, request: web.Request) -> web.Response:
        m = self.get_manager()
        svc = lookup(m, "service", request.match_info["id"], service_names)
        await self._propose(m, [Action("delete", "service", None, svc.id)])
        return web.Response(status=200)

    async def service_logs(self, request: web.Request) -> web.StreamResponse:
        """The logs of every task of a service, from every node, as JSON lines: Task, Node,
        Time (ns), Stream, Line. Without follow they are merged in time order."""
        m = self.get_manager()
        svc = lookup(m, "service", request.match_info["id"], service_names)
        q = request.query
        tail_text = q.get("tail", "all")
        if tail_text != "all" and not tail_text.isdigit():
            raise APIError(400, f"tail: must be a number or all, got {tail_text!r}")
        tail = None if tail_text == "all" else int(tail_text)
        follow = q.get("follow", "false").lower() in ("1", "true")
        try:
            since = float(q["since"]) if q.get("since") else None
        except ValueError:
            raise APIError(400, f"since: must be a UNIX time in seconds, got {q['since']!r}") from None
        if not m.is_leader:  # the nodes' sessions are with the leader: ask it
            return await self._proxy_stream(m, request)
        hosts = {n.id: n.description.hostname or n.id for n in m.store.list("node")}
        by_node: dict[str, list[tuple[str, str]]] = {}
        names: dict[str, str] = {}
        unlogged = []
        for t in m.store.tasks_of(svc.id):
            cs = t.status.container_status
            if t.node_id and cs is not None and cs.container_id:
                names[t.id] = f"{svc.spec.name}.{t.slot or t.node_id}.{t.id}"
                if t.spec.log_driver is not None and t.spec.log_driver.name == "none":
                    unlogged.append(names[t.id])  # its node kept nothing: say so instead of nothing
                    continue
                by_node.setdefault(t.node_id, []).append((t.id, cs.container_id))
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for name in unlogged:  # Docker's words, and why
            await resp.write((json.dumps({"Error": f"{name}: configured logging driver does not support reading "
                                                   f"(log driver none: logging is disabled)"}) + "\n").encode())
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(node_id: str, containers) -> None:
            try:
                async for batch in m.dispatcher.stream_logs(node_id, containers, tail, follow, since):
                    await queue.put((node_id, batch, None))
            except LookupError as exc:
                await queue.put((node_id, [], f"{hosts.get(node_id, node_id)}: {exc}"))
            finally:
                await queue.put((node_id, None, None))

        pumps = [asyncio.create_task(pump(n, c)) for n, c in by_node.items()]
        pending, collected = len(pumps), []
        try:
            while pending:
                node_id, batch, error = await queue.get()
                if batch is None:
                    pending -= 1
                    continue
                if error:
                    await resp.write((json.dumps({"Error": error}) + "\n").encode())
                rows = [{"Task": names.get(tid, tid), "Node": hosts.get(node_id, node_id), "Time": ts,
                         "Stream": stream, "Line": line} for tid, ts, stream, line in batch]
                if follow:
                    await resp.write("".join(json.dumps(r) + "\n" for r in rows).encode())
                else:
                    collected.extend(rows)
            collected.sort(key=lambda r: r["Time"])
            for i in range(0, len(collected), 500):
                await resp.write("".join(json.dumps(r) + "\n" for r in collected[i:i + 500]).encode())
        finally:
            for p in pumps:
                p.cancel()
        await resp.write_eof()
        return resp

    async def _proxy_stream(self, m: Manager, request: web.Request) -> web.StreamResponse:
        import aiohttp
        leader = m.leader_addr()
        if not leader:
            raise APIError(503, "The swarm does not have a leader right now; try again")
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=2)) as http:
            async with http.get(f"https://{leader}/control{request.path_qs}", ssl=m.ssl_context()) as up:
                if up.status >= 400:
                    raise APIError(up.status, (await up.json(content_type=None)).get("message", "logs failed"))
                await resp.prepare(request)
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
        await resp.write_eof()
        return resp

    # --- tasks ----------------------------------------------------------------------------

    async def task_list(self, request: web.Request) -> web.Response:
        m = self.get_manager()
        filters = parse_filters(request)
        services = m.store.list("service")
        wanted_services = None
        if "service" in filters:
            wanted_services = set()
            for ref in filters["service"]:
                wanted_services.add(find_one(services, ref, "service", service_names).id)
        tasks: list[Task] = []
        for t in m.store.list("task"):
            if wanted_services is not None and t.service_id not in wanted_services:
                continue
            if "desired-state" in filters and t.desired_state not in filters["desired-state"]:
                continue
            if "node" in filters and t.node_id not in filters["node"]:
                continue
            tasks.append(t)
        tasks.sort(key=lambda t: (t.service_id, t.slot, t.created_at))
        return web.json_response([pullauth.redact_task(codec.encode(t)) for t in tasks])

    def _running_task(self, m: Manager, ref: str) -> Task:
        task = lookup(m, "task", ref, lambda t: [])
        cs = task.status.container_status
        if task.status.state != "running" or cs is None or not cs.container_id:
            raise APIError(409, f"task {task.id} is not running (state {task.status.state})")
        return task

    async def task_exec(self, request: web.Request) -> web.Response:
        """Run a command inside a running task's container, on whichever node runs it."""
        m = self.get_manager()
        body = await read_json(request)
        if not isinstance(body, dict):
            raise APIError(400, "body: must be an object")
        cmd, env = body.get("Cmd"), body.get("Env", [])
        if not isinstance(cmd, list) or not cmd or not all(isinstance(c, str) for c in cmd):
            raise APIError(400, "Cmd: must be a non-empty list of strings")
        if not isinstance(env, list) or not all(isinstance(e, str) and "=" in e for e in env):
            raise APIError(400, "Env: must be a list of KEY=VALUE strings")
        task = self._running_task(m, request.match_info["id"])
        return web.json_response(await self._ask(m, task, {"Type": "exec", "Cmd": cmd, "Env": env}, 330))

    async def task_stats(self, request: web.Request) -> web.Response:
        m = self.get_manager()
        if not m.is_leader:  # the nodes' sessions are with the leader
            status, payload, ctype = await m.forward("GET", request.path_qs, b"", "application/json")
            return web.Response(status=status, body=payload, content_type=ctype or "application/json")
        task = self._running_task(m, request.match_info["id"])
        return web.json_response(await self._ask(m, task, {"Type": "stats"}, 15))

    async def _ask(self, m: Manager, task: Task, msg: dict, timeout: float) -> dict:
        msg = {**msg, "ContainerID": task.status.container_status.container_id}
        try:
            reply = await m.dispatcher.request(task.node_id, msg, timeout)
        except LookupError as exc:
            raise APIError(503, str(exc)) from None
        except asyncio.TimeoutError:
            raise APIError(504, f"node {task.node_id} did not answer in {timeout:g}s") from None
        if reply.get("Error"):
            raise APIError(400, f"node {task.node_id}: {reply['Error']}")
        reply.pop("Type", None)
        reply.pop("Request", None)
        return reply

    async def task_inspect(self, request: web.Request) -> web.Response:
        m = self.get_manager()
        task = lookup(m, "task", request.match_info["id"], lambda t: [])
        return web.json_response(pullauth.redact_task(codec.encode(task)))

    async def _propose(self, m: Manager, actions: list[Action]) -> None:
        try:
            await m.propose(actions)
        except StoreError as exc:
            raise APIError(exc.status, str(exc)) from None


def _registry_of(image: str) -> str:
    try:
        return image_registry(image)
    except ValueError:
        return image


def _query_bool(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in ("1", "true", "0", "false", ""):
        raise APIError(400, f"{name}: must be true or false, got {raw!r}")
    return raw in ("1", "true")


def _mode_kind(spec: ServiceSpec) -> str:
    mode = spec.mode
    for name, value in (("replicated", mode.replicated), ("global", mode.global_),
                        ("replicated-job", mode.replicated_job), ("global-job", mode.global_job)):
        if value is not None:
            return name
    return "replicated"


def _match_service(s: Service, filters: dict[str, list[str]]) -> bool:
    if "name" in filters and not any(s.spec.name.startswith(n) for n in filters["name"]):
        return False
    if "id" in filters and not any(s.id.startswith(i) for i in filters["id"]):
        return False
    return labels_match(s.spec.labels, filters)
