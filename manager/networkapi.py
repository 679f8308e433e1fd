"""The network routes of the control API, with the Docker Engine API's paths and shapes:
POST /networks/create (NetworkCreateRequest), GET /networks, GET /networks/{id} and
DELETE /networks/{id}. Networks are swarm-scoped overlay networks; the leader's allocator
gives each its VXLAN id and subnet (see manager/allocator.py)."""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from aiohttp import web

from api import codec
from api.ids import new_id
from api.objects import Network, NetworkSpec
from manager import allocator
from manager.controlapi import APIError, find_one, labels_match, parse_filters, read_json
from manager.manager import Manager
from manager.store import Action, StoreError

ALLOCATION_WAIT_S = 5.0
# Request fields Docker accepts that change nothing here.
_IGNORED = ("CheckDuplicate",)


def network_names(n: Network) -> list[str]:
    return [n.spec.name]


def network_json(net: Network, store) -> dict:
    """Docker's Network object (GET /networks): the spec as given, the subnet, gateway and
    VXLAN id as allocated, and the nodes with a task on it (Peers)."""
    spec = net.spec
    got = allocator.network_subnet(net)
    requested = spec.ipam.config[0] if spec.ipam and spec.ipam.config else None
    config: dict[str, Any] = {}
    if got:
        config = {"Subnet": str(got[0]), "Gateway": str(got[1])}
        cfg = net.ipam_options.config[0]
        if cfg.ip_range:
            config["IPRange"] = cfg.ip_range
        if cfg.auxiliary_addresses:
            config["AuxiliaryAddresses"] = dict(cfg.auxiliary_addresses)
    elif requested is not None:
        config = codec.encode(requested)
    options = dict(spec.options)
    vni = allocator.network_vni(net)
    if vni is not None:
        options[allocator.VXLAN_ID_OPTION] = str(vni)
    peers = {}
    for t in store.list("task"):
        if allocator.live(t) and any(a.network.id == net.id for a in t.networks_attachments):
            node = store.get("node", t.node_id)
            if node is not None:
                peers[node.id] = {"Name": node.description.hostname or node.id, "IP": node.status.addr}
    body = {
        "Name": spec.name, "Id": net.id, "Created": net.created_at, "Scope": "swarm", "Driver": spec.driver,
        "EnableIPv6": False, "IPAM": {"Driver": "default", "Options": dict(spec.ipam.options) if spec.ipam else {},
                                      "Config": [config] if config else []},
        "Internal": spec.internal, "Attachable": spec.attachable, "Ingress": spec.ingress,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": {}, "Options": options,
        "Labels": dict(spec.labels), "Peers": sorted(peers.values(), key=lambda p: p["Name"]),
        "Version": {"Index": net.version.index},
    }
    if not allocator.is_allocated(net):
        body["Status"] = "allocation pending"
    return body


def _match(net: Network, filters: dict[str, list[str]]) -> bool:
    if "name" in filters and not any(f in net.spec.name for f in filters["name"]):
        return False
    if "id" in filters and not any(net.id.startswith(f) for f in filters["id"]):
        return False
    if "driver" in filters and net.spec.driver not in filters["driver"]:
        return False
    if "scope" in filters and "swarm" not in filters["scope"]:
        return False
    if "type" in filters and "custom" not in filters["type"]:
        return False
    return labels_match(net.spec.labels, filters)


class NetworkAPI:
    def __init__(self, get_manager: Callable[[], Manager]):
        self.get_manager = get_manager

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/networks/create", self.create),
            web.get("/networks", self.ls),
            web.get("/networks/{id}", self.inspect),
            web.delete("/networks/{id}", self.remove),
        ]

    async def create(self, request: web.Request) -> web.Response:
        m = self.get_manager()
        body = await read_json(request)
        if not isinstance(body, dict):
            raise APIError(400, "body: must be an object")
        body = {k: v for k, v in body.items() if k not in _IGNORED}
        for key in ("ConfigOnly", "ConfigFrom"):
            if body.pop(key, None):
                raise APIError(400, f"{key}: config-only networks are not supported")
        try:
            spec = codec.decode(NetworkSpec, body)
            spec = allocator.validate_network_spec(spec, m.store.list("network"))
        except (codec.DecodeError, allocator.AllocationError) as exc:
            raise APIError(400, str(exc)) from None
        net = Network(id=new_id(), spec=spec)
        try:
            await m.propose([Action("create", "network", net)])
        except StoreError as exc:
            raise APIError(exc.status, str(exc)) from None
        # The leader's allocator gives it a VXLAN id and a subnet within a pass; wait for it, so
        # that what the caller inspects next is complete.
        deadline = asyncio.get_running_loop().time() + ALLOCATION_WAIT_S
        while asyncio.get_running_loop().time() < deadline:
            stored = m.store.get("network", net.id)
            if stored is None or allocator.is_allocated(stored):
                break
            await asyncio.sleep(0.05)
        return web.json_response({"Id": net.id, "Warning": ""}, status=201)

    async def ls(self, request: web.Request) -> web.Response:
        m = self.get_manager()
        filters = parse_filters(request)
        nets = sorted(m.store.list("network"), key=lambda n: (n.spec.name, n.id))
        return web.json_response([network_json(n, m.store) for n in nets if _match(n, filters)])

    async def inspect(self, request: web.Request) -> web.Response:
        m = self.get_manager()
        net = find_one(m.store.list("network"), request.match_info["id"], "network", network_names)
        return web.json_response(network_json(net, m.store))

    async def remove(self, request: web.Request) -> web.Response:
        """Refused while a service (or a task of one) uses the network."""
        m = self.get_manager()
        networks = m.store.list("network")
        net = find_one(networks, request.match_info["id"], "network", network_names)
        reason = allocator.network_in_use(net, m.store.list("service"), m.store.list("task"), networks)
        if reason:
            raise APIError(409, reason)
        try:
            await m.propose([Action("delete", "network", None, net.id)])
        except StoreError as exc:
            raise APIError(exc.status, str(exc)) from None
        return web.Response(status=204)
