"""Joining a swarm from the node's side: pin the cluster's root by the token's digest, then
send the token and a CSR, and keep the certificate that comes back. The key never leaves."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
import msgpack

from api import codec
from api.objects import NodeDescription
from manager.ca import (
    BootstrapError, CAError, bootstrap_client_context, client_context, make_csr, make_node_key,
    verify_presented_chain,
)
from manager.ca.pem import certs_pem, key_pem
from manager.ca.tokens import parse_token

DEFAULT_PORT = 2377


class JoinError(Exception):
    pass


@dataclass
class JoinResult:
    node_id: str
    cluster_id: str
    role: str
    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes
    managers: list[str]
    raft_peers: dict[str, str]


def split_addr(addr: str, default_port: int = DEFAULT_PORT, field: str = "ADDR") -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep:
        host, port = addr, str(default_port)
    host = host.strip("[]")
    if not host:
        raise JoinError(f"{field}: {addr!r} has no host")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise JoinError(f"{field}: {addr!r} has an invalid port")
    return host, int(port)


async def _fetch_roots(host: str, port: int, ctx) -> tuple[bytes | None, bytes]:
    """GET /ca on a raw TLS stream, so the server's certificate from this very handshake is
    at hand; the request carries nothing secret."""
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        server_der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        writer.write(f"GET /ca HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        raw = await reader.read(1 << 20)
        while True:
            more = await reader.read(1 << 20)
            if not more:
                break
            raw += more
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1:2]
    if status != [b"200"]:
        raise JoinError(f"{host}:{port}: the manager did not serve its CA certificate")
    return server_der, body


async def join_cluster(addr: str, token_text: str, description: NodeDescription, advertise_addr: str = "",
                       manager_addr: str = "", timeout: float = 15, redirects: int = 3) -> JoinResult:
    try:
        token = parse_token(token_text.strip())
    except CAError as exc:
        raise JoinError(str(exc)) from None
    host, port = split_addr(addr)
    base = f"https://{host}:{port}"
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    try:
        # 1. Unverified connection: fetch the roots, and check them and the server's own
        #    certificate against the token's digest before anything secret is sent.
        server_der, roots_pem = await asyncio.wait_for(
            _fetch_roots(host, port, bootstrap_client_context(token.ca_digest)), timeout)
        if not server_der:
            raise JoinError(f"{addr}: the manager presented no certificate")
        pinned = verify_presented_chain(server_der, token.ca_digest, roots_pem)

        # 2. Verified against the pinned root: send the token and a CSR.
        key = make_node_key()
        body = msgpack.packb({"Token": token_text.strip(), "CSR": make_csr(key),
                              "Description": codec.encode(description), "Addr": advertise_addr,
                              "ManagerAddr": manager_addr})
        async with aiohttp.ClientSession(timeout=client_timeout) as s:
            async with s.post(base + "/join", data=body, ssl=client_context(None, [pinned]),
                              headers={"Content-Type": "application/msgpack"}) as resp:
                payload = await resp.read()
                if resp.status == 421 and redirects > 0:  # not the leader: go to the one it names
                    leader = (await resp.json(content_type=None)).get("Leader") or ""
                    if leader:
                        return await join_cluster(leader, token_text, description, advertise_addr, manager_addr,
                                                  timeout, redirects - 1)
                    raise JoinError(f"{addr}: this manager knows no leader right now; try again")
                if resp.status >= 400:
                    try:
                        message = (await resp.json(content_type=None))["message"]
                    except Exception:
                        message = payload.decode(errors="replace")[:200]
                    raise JoinError(message)
        reply = msgpack.unpackb(payload, raw=False)
    except (BootstrapError, CAError) as exc:
        raise JoinError(str(exc)) from None
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise JoinError(f"{addr}: could not reach a manager: {exc or type(exc).__name__}") from None
    return JoinResult(node_id=reply["NodeID"], cluster_id=reply["ClusterID"], role=reply["Role"],
                      key_pem=key_pem(key), cert_pem=reply["Certificate"], ca_pem=reply["CACerts"],
                      managers=[m for m in reply.get("Managers", []) if isinstance(m, str)],
                      raft_peers={k: v for k, v in (reply.get("RaftPeers") or {}).items()
                                  if isinstance(k, str) and isinstance(v, str)})
