"""The secret and config routes of the control API, with the Docker Engine API's paths and
shapes: POST /{secrets,configs}/create, GET /{secrets,configs}[/{id}],
POST /{secrets,configs}/{id}/update and DELETE /{secrets,configs}/{id}.

A secret's data is sealed before it is proposed and never returned; a config's data is
stored as given and shown by inspect, as Docker does. Both are immutable but for their labels.
"""
from __future__ import annotations

import base64
import binascii
import copy
import re
from dataclasses import dataclass
from typing import Any, Callable

from aiohttp import web

from api import codec
from api.ids import new_id
from api.objects import Config, ConfigSpec, Secret, SecretSpec
from manager import secretbox
from manager.controlapi import APIError, find_one, labels_match, parse_filters, read_json
from manager.manager import Manager
from manager.store import Action, StoreError

MAX_SIZE = 500 * 1024  # Docker's limit for both
_NAME = re.compile(r"^[a-zA-Z0-9]+(?:[a-zA-Z0-9_.-]*[a-zA-Z0-9])?$")


@dataclass(frozen=True)
class Kind:
    name: str  # "secret" | "config"
    spec_cls: type
    obj_cls: type

    @property
    def plural(self) -> str:
        return self.name + "s"


SECRET = Kind("secret", SecretSpec, Secret)
CONFIG = Kind("config", ConfigSpec, Config)


def validate_spec(kind: Kind, body: Any) -> tuple[Any, bytes]:
    """The decoded spec and its data, or APIError naming the field."""
    if not isinstance(body, dict):
        raise APIError(400, "body: must be an object")
    try:
        spec = codec.decode(kind.spec_cls, body)
    except codec.DecodeError as exc:
        raise APIError(400, str(exc)) from None
    if not spec.name:
        raise APIError(400, "Name: required")
    if len(spec.name) > 64 or not _NAME.match(spec.name):
        raise APIError(400, f"Name: invalid {kind.name} name {spec.name!r} (letters, digits, '-', '_' and '.', "
                            f"at most 64, starting and ending with a letter or digit)")
    if getattr(spec, "driver", None) is not None and spec.driver.name:
        raise APIError(400, f"Driver: external {kind.name} drivers are not supported (got {spec.driver.name!r})")
    if spec.templating is not None and spec.templating.name:
        raise APIError(400, f"Templating: template drivers are not supported (got {spec.templating.name!r})")
    try:
        data = base64.b64decode(spec.data, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, "Data: must be base64") from None
    if not data:
        raise APIError(400, f"Data: a {kind.name} must not be empty")
    if len(data) > MAX_SIZE:
        raise APIError(400, f"Data: {kind.name} data is {len(data)} bytes, above the limit of {MAX_SIZE} (500 KiB)")
    return spec, data


def public_json(obj: Any) -> dict:
    """Docker's Secret/Config object: a secret's data is never returned."""
    body = codec.encode(obj)
    body.pop("Sealed", None)
    if isinstance(obj, Secret):
        body.get("Spec", {}).pop("Data", None)
    return body


def _names(obj: Any) -> list[str]:
    return [obj.spec.name]


def _match(obj: Any, filters: dict[str, list[str]]) -> bool:
    if "name" in filters and not any(obj.spec.name.startswith(f) for f in filters["name"]):
        return False
    if "names" in filters and obj.spec.name not in filters["names"]:
        return False
    if "id" in filters and not any(obj.id.startswith(f) for f in filters["id"]):
        return False
    return labels_match(obj.spec.labels, filters)


class FileObjectAPI:
    """The routes of one kind (secrets or configs)."""

    def __init__(self, kind: Kind, get_manager: Callable[[], Manager]):
        self.kind = kind
        self.get_manager = get_manager

    def routes(self) -> list[web.RouteDef]:
        p = "/" + self.kind.plural
        return [
            web.post(p + "/create", self.create),
            web.get(p, self.ls),
            web.get(p + "/{id}", self.inspect),
            web.post(p + "/{id}/update", self.update),
            web.delete(p + "/{id}", self.remove),
        ]

    async def _propose(self, m: Manager, actions: list[Action]) -> None:
        try:
            await m.propose(actions)
        except StoreError as exc:
            raise APIError(exc.status, str(exc)) from None

    async def create(self, request: web.Request) -> web.Response:
        m = self.get_manager()
        spec, data = validate_spec(self.kind, await read_json(request))
        if any(o.spec.name == spec.name for o in m.store.list(self.kind.name)):
            raise APIError(409, f"Name: a {self.kind.name} named {spec.name!r} already exists")
        obj_id = new_id()
        actions = []
        if self.kind is SECRET:
            cluster = m.cluster
            if cluster is None:
                raise APIError(503, "swarm: not initialised")
            key = cluster.secrets_key
            if not key:  # a cluster made before secrets existed gets its key with its first secret
                cluster = copy.deepcopy(cluster)
                key = cluster.secrets_key = secretbox.new_key()
                actions.append(Action("update", "cluster", cluster))
            spec.data = ""
            obj = Secret(id=obj_id, spec=spec, sealed=secretbox.seal(key, obj_id, data))
        else:
            obj = Config(id=obj_id, spec=spec)
        actions.append(Action("create", self.kind.name, obj))
        await self._propose(m, actions)
        return web.json_response({"ID": obj_id}, status=201)

    async def ls(self, request: web.Request) -> web.Response:
        m = self.get_manager()
        filters = parse_filters(request)
        objs = sorted(m.store.list(self.kind.name), key=lambda o: (o.spec.name, o.id))
        return web.json_response([public_json(o) for o in objs if _match(o, filters)])

    def _find(self, m: Manager, ref: str) -> Any:
        return find_one(m.store.list(self.kind.name), ref, self.kind.name, _names)

    async def inspect(self, request: web.Request) -> web.Response:
        m = self.get_manager()
        return web.json_response(public_json(self._find(m, request.match_info["id"])))

    async def update(self, request: web.Request) -> web.Response:
        """Only the labels may change, as in Docker; the data given (if any) must be the same."""
        m = self.get_manager()
        obj = self._find(m, request.match_info["id"])
        version = request.query.get("version")
        if version is None or not version.isdigit():
            raise APIError(400, f"version: required, the Version.Index of the {self.kind.name} being updated")
        body = await read_json(request)
        if not isinstance(body, dict):
            raise APIError(400, "body: must be an object")
        try:
            spec = codec.decode(self.kind.spec_cls, body)
        except codec.DecodeError as exc:
            raise APIError(400, str(exc)) from None
        if spec.name and spec.name != obj.spec.name:
            raise APIError(400, f"Name: only updates to Labels are allowed (the name is {obj.spec.name!r})")
        if spec.data and (self.kind is SECRET or spec.data != obj.spec.data):
            raise APIError(400, "Data: only updates to Labels are allowed; create a new "
                                f"{self.kind.name} and update the services to rotate it")
        new = copy.deepcopy(obj)
        new.spec.labels = dict(spec.labels)
        new.version.index = int(version)
        await self._propose(m, [Action("update", self.kind.name, new)])
        return web.Response(status=200)

    async def remove(self, request: web.Request) -> web.Response:
        m = self.get_manager()
        obj = self._find(m, request.match_info["id"])
        await self._propose(m, [Action("delete", self.kind.name, None, obj.id)])
        return web.Response(status=204)


def routes(get_manager: Callable[[], Manager]) -> list[web.RouteDef]:
    return FileObjectAPI(SECRET, get_manager).routes() + FileObjectAPI(CONFIG, get_manager).routes()
