"""One host's daemon: the worker it always is, and the manager it becomes after `swarm init`."""
from __future__ import annotations

import asyncio
import copy
import ipaddress
import datetime as dt
import json
import logging
import os
import platform
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from api.ids import new_id
from daemon import certs
from api.objects import (
    CAConfig, Cluster, EngineDescription, JoinTokens, ManagerStatus, Node, NodeDescription, NodeSpec,
    NodeStatus, Platform, Resources, SECOND, SwarmSpec,
)
from manager.ca import storage as ca_storage
from manager.ca.certs import make_csr, make_node_key, sign_csr
from manager.ca.root import ClusterCA
from manager.ca.tls import client_context, server_context
from manager.ca.tokens import JoinTokens as CAJoinTokens
from manager.clusterapi import ClusterAPI
from manager.manager import Manager
from manager.store import Action
from worker.agent import Agent
from worker.images.store import ImageStore
from worker.join import JoinError, join_cluster, split_addr
from worker.runtime import Runtime
from worker.session import RemoteSession

log = logging.getLogger("shoal.node")
VERSION = "0.1.0"


class NodeError(Exception):
    status = 400


class NotAManager(NodeError):
    status = 503

    def __init__(self):
        super().__init__('This node is not a swarm manager. Use "shoal swarm init" or "shoal swarm join" '
                         "to connect this node to a swarm and try again.")


@dataclass
class NodeConfig:
    state_dir: Path
    hostname: str
    cgroup_parent: str = "shoal"
    listen_addr: str = "0.0.0.0:2377"
    advertise_addr: str = ""


def memory_total() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class NodeDaemon:
    def __init__(self, config: NodeConfig):
        self.config = config
        self.state_dir = config.state_dir
        self.images = ImageStore(self.state_dir / "images")
        self.runtime = Runtime(self.state_dir / "containers", cgroup_parent=config.cgroup_parent)
        self.manager: Manager | None = None
        self.agent: Agent | None = None
        self.session: RemoteSession | None = None
        self.node_id: str = ""
        self.identity: dict = {}
        self._tasks: list[asyncio.Task] = []
        self._cluster_port: web.AppRunner | None = None
        self._cluster_api: ClusterAPI | None = None
        self._lock = asyncio.Lock()  # init, join and leave one at a time
        self._last_ca: dict | None = None
        self._cert_task: asyncio.Task | None = None
        self._jitter = certs.renewal_jitter()

    @property
    def swarm_dir(self) -> Path:
        return self.state_dir / "swarm"

    def _identity_path(self) -> Path:
        return self.swarm_dir / "node.json"

    def _write_identity(self, ident: dict) -> None:
        self.swarm_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._identity_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(ident))
        os.replace(tmp, self._identity_path())
        self.identity = ident

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        if not self._identity_path().exists():
            return
        self.identity = json.loads(self._identity_path().read_text())
        self.node_id = self.identity["NodeID"]
        if self.identity.get("Role") == "manager":
            self.manager = Manager(self.state_dir, self.node_id)
            self.manager.load()
            await self.manager.start()
            await self._serve_cluster_port(self.identity.get("ListenAddr") or self.config.listen_addr)
        await self._start_agent()

    async def stop(self) -> None:
        await self._stop_member(stop_containers=False)

    async def _stop_member(self, stop_containers: bool) -> None:
        if self.agent:
            await self.agent.shutdown()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        await self._close_cluster_port()
        if self.manager:
            await self.manager.stop()
        if stop_containers:
            for c in self.runtime.list():
                try:
                    if c.status == "running":
                        await self.runtime.stop(c.id, 10.0)
                    await asyncio.to_thread(self.runtime.delete, c.id, True)
                except Exception as exc:  # keep going: leaving must not strand the rest
                    log.warning("removing container %s: %s", c.id[:12], exc)
        self.agent = None
        self.session = None
        self.manager = None

    # --- queries --------------------------------------------------------------------------

    def pinned_image(self, ref: str) -> str | None:
        """The normalised reference if the image is here, else None. Locally imported images
        have no registry digest to pin, so every node resolves the tag itself (as Swarm does
        for images it cannot find on a registry)."""
        if self.images.resolve(ref) is None:
            return None
        if "@" in ref or ref.startswith("sha256:"):
            return ref
        from worker.images.store import normalize_reference
        return normalize_reference(ref)

    def require_manager(self) -> Manager:
        if self.manager is None:
            raise NotAManager()
        return self.manager

    def describe(self) -> NodeDescription:
        info = None
        if (self.swarm_dir / "certs").exists():
            try:
                info = certs.tls_info(ca_storage.load_node_credentials(self.swarm_dir / "certs"))
            except Exception as exc:  # unreadable credentials: say so in the log, describe the rest
                log.warning("node credentials: %s", exc)
        return NodeDescription(
            hostname=self.config.hostname,
            platform=Platform(architecture=platform.machine(), os="linux"),
            resources=Resources(nano_cpus=(os.cpu_count() or 1) * SECOND, memory_bytes=memory_total()),
            engine=EngineDescription(engine_version=VERSION),
            tls_info=info,
        )

    def load_ca(self) -> ClusterCA:
        return ca_storage.load_ca(self.swarm_dir / "ca")

    # --- init, join, leave ------------------------------------------------------------------

    async def swarm_init(self, advertise_addr: str = "", listen_addr: str = "") -> str:
        async with self._lock:
            if self._identity_path().exists():
                raise NodeError("This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm and join another one.")
            listen = normalize_listen(listen_addr or self.config.listen_addr)
            advertise = normalize_advertise(advertise_addr or self.config.advertise_addr, listen)
            cluster_id, node_id = new_id(), new_id()
            shutil.rmtree(self.state_dir / "raft", ignore_errors=True)  # leftovers of an init that crashed
            ca = ClusterCA.create()
            key = make_node_key()
            cert = sign_csr(ca, make_csr(key), node_id, "manager", cluster_id)
            ca_storage.save_ca(self.swarm_dir / "ca", ca)
            ca_storage.save_node_credentials(self.swarm_dir / "certs", key, cert, ca.signer.cert)
            tokens = CAJoinTokens.generate(ca.signer.cert)

            manager = Manager(self.state_dir, node_id)
            manager.load()
            await manager.start()
            cluster = Cluster(
                id=cluster_id, spec=SwarmSpec(ca_config=CAConfig()),
                join_tokens=JoinTokens(worker=tokens.worker, manager=tokens.manager), root_ca_digest=ca.digest,
                tls_info=certs.root_tls_info(ca.signer.cert, ca.trust_bundle_pem),
            )
            node = Node(
                id=node_id,
                spec=NodeSpec(name="", role="manager", availability="active"),
                description=self.describe(),
                status=NodeStatus(state="ready", addr=split_addr(advertise)[0]),
                manager_status=ManagerStatus(leader=True, reachability="reachable", addr=advertise),
            )
            await manager.propose([Action("create", "cluster", cluster), Action("create", "node", node)])
            self.manager = manager
            self.node_id = node_id
            try:
                await self._serve_cluster_port(listen)
            except OSError as exc:
                await manager.stop()
                self.manager = None
                shutil.rmtree(self.swarm_dir, ignore_errors=True)
                shutil.rmtree(self.state_dir / "raft", ignore_errors=True)
                raise NodeError(f"--listen-addr: cannot listen on {listen}: {exc.strerror or exc}") from None
            # The identity file is written last: a crash before it leaves a node that can init again.
            self._write_identity({"NodeID": node_id, "ClusterID": cluster_id, "Role": "manager",
                                  "ListenAddr": listen, "AdvertiseAddr": advertise,
                                  "Created": dt.datetime.now(dt.timezone.utc).isoformat()})
            await self._start_agent()
            return node_id

    async def swarm_join(self, remote: str, token: str, advertise_addr: str = "", listen_addr: str = "") -> str:
        async with self._lock:
            if self._identity_path().exists():
                raise NodeError("This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm and join another one.")
            try:
                host, port = split_addr(remote, field="ADDR")
                advertise = advertise_addr or self.config.advertise_addr
                if advertise:
                    split_addr(advertise, field="--advertise-addr")
                result = await join_cluster(f"{host}:{port}", token, self.describe(), split_addr(advertise)[0] if advertise else "")
            except JoinError as exc:
                raise NodeError(str(exc)) from None
            certs = self.swarm_dir / "certs"
            ca_storage.save_node_credentials(certs, result.key_pem, result.cert_pem, result.ca_pem)
            self.node_id = result.node_id
            self._write_identity({"NodeID": result.node_id, "ClusterID": result.cluster_id, "Role": result.role,
                                  "Managers": [f"{host}:{port}"], "AdvertiseAddr": advertise,
                                  "Created": dt.datetime.now(dt.timezone.utc).isoformat()})
            await self._start_agent()
            return result.node_id

    async def swarm_leave(self, force: bool) -> None:
        async with self._lock:
            if not self._identity_path().exists():
                raise NodeError("This node is not part of a swarm")
            if self.manager is not None and not force:
                raise NodeError("You are attempting to leave the swarm on a node that is participating as a manager. "
                                "Removing the last manager erases all current state of the swarm. "
                                "Use `--force` to ignore this message.")
            await self._stop_member(stop_containers=True)
            shutil.rmtree(self.swarm_dir, ignore_errors=True)
            shutil.rmtree(self.state_dir / "raft", ignore_errors=True)
            self.node_id = ""
            self.identity = {}

    # --- wiring ---------------------------------------------------------------------------

    # --- certificates -------------------------------------------------------------------------

    def _on_ca_info(self, info: dict) -> None:
        """The managers' current roots arrived over the session: follow them (worker side)."""
        self._last_ca = info
        if self._cert_task is None or self._cert_task.done():
            self._cert_task = asyncio.create_task(self._check_worker_cert())

    async def _check_worker_cert(self) -> None:
        info = self._last_ca or {}
        certs_dir = self.swarm_dir / "certs"
        try:
            creds = ca_storage.load_node_credentials(certs_dir)
            if info.get("TrustRoot") and certs.save_trust_bundle(certs_dir, creds, info["TrustRoot"]):
                log.info("trusted roots updated by the managers")
                creds = ca_storage.load_node_credentials(certs_dir)
            now = dt.datetime.now(dt.timezone.utc)
            if certs.wants_renewal(creds, info.get("RootDigest", ""), now, self._jitter) and self.session:
                await certs.renew_remote(certs_dir, self.session.current_manager)
                log.info("node certificate renewed")
                await self.session.reconnect()  # present the new certificate
        except Exception as exc:
            log.warning("certificate renewal failed, will retry: %s", exc)

    async def _worker_cert_loop(self) -> None:
        while True:
            await asyncio.sleep(30)
            await self._check_worker_cert()

    async def _manager_cert_loop(self) -> None:
        """Renew the manager's own certificate, and finish a root rotation once every other
        node holds a certificate from the new root."""
        while True:
            await asyncio.sleep(0.5)
            try:
                await self._manager_cert_step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("certificate upkeep: %s", exc)

    async def _manager_cert_step(self) -> None:
        m = self.manager
        cluster = m.cluster if m else None
        if cluster is None:
            return
        certs_dir = self.swarm_dir / "certs"
        creds = ca_storage.load_node_credentials(certs_dir)
        ca = self.load_ca()
        if cluster.root_rotation_in_progress:
            others = [n for n in m.store.list("node") if n.id != self.node_id]
            want = cluster.tls_info.cert_issuer_public_key
            if all(n.description.tls_info and n.description.tls_info.cert_issuer_public_key == want for n in others):
                await self._finish_ca_rotation()
            return
        now = dt.datetime.now(dt.timezone.utc)
        if certs.wants_renewal(creds, cluster.root_ca_digest, now, self._jitter):
            self._issue_own_cert(ca, ca.trusted)
            await self._restart_cluster_port()
            await m.dispatcher.node_up(self.node_id, self.describe(), m.store.get("node", self.node_id).status.addr)

    def _issue_own_cert(self, ca: ClusterCA, trusted) -> None:
        cluster = self.manager.cluster
        key = make_node_key()
        expiry = dt.timedelta(seconds=cluster.spec.ca_config.node_cert_expiry / SECOND)
        cert = sign_csr(ca, make_csr(key), self.node_id, "manager", cluster.id, expiry)
        ca_storage.save_node_credentials(self.swarm_dir / "certs", key, cert, trusted)

    async def start_ca_rotation(self) -> None:
        """`shoal swarm ca --rotate`: a new root signs from now on; both are trusted until every
        node has a certificate from the new one."""
        m = self.require_manager()
        cluster = m.cluster
        if cluster.root_rotation_in_progress:
            raise NodeError("a root CA rotation is already in progress")
        ca = self.load_ca().start_rotation()
        creds = ca_storage.load_node_credentials(self.swarm_dir / "certs")
        ca_storage.save_node_credentials(self.swarm_dir / "certs", creds.key, creds.cert, ca.trusted)
        ca_storage.save_ca(self.swarm_dir / "ca", ca)
        await self._restart_cluster_port()  # trust clients of both roots
        new = copy.deepcopy(cluster)
        new.root_rotation_in_progress = True
        new.root_ca_digest = ca.digest
        new.tls_info = certs.root_tls_info(ca.signer.cert, ca.trust_bundle_pem)
        tokens = CAJoinTokens(worker=cluster.join_tokens.worker, manager=cluster.join_tokens.manager).with_ca(ca.signer.cert)
        new.join_tokens = JoinTokens(worker=tokens.worker, manager=tokens.manager)
        await m.propose([Action("update", "cluster", new)])

    async def _finish_ca_rotation(self) -> None:
        m = self.manager
        ca = self.load_ca().finish_rotation()
        self._issue_own_cert(ca, ca.trusted)
        ca_storage.save_ca(self.swarm_dir / "ca", ca)
        cluster = m.cluster
        new = copy.deepcopy(cluster)
        new.root_rotation_in_progress = False
        new.tls_info = certs.root_tls_info(ca.signer.cert, ca.trust_bundle_pem)
        await m.propose([Action("update", "cluster", new)])
        await m.dispatcher.node_up(self.node_id, self.describe(), m.store.get("node", self.node_id).status.addr)
        await self._restart_cluster_port()
        log.info("root CA rotation complete")

    async def _close_cluster_port(self) -> None:
        if self._cluster_port is None:
            return
        # Sessions are long-lived websockets: end them now (their nodes reconnect at once)
        # rather than letting the server wait for them to finish.
        for t in list(self._cluster_api.session_tasks):
            t.cancel()
        await self._cluster_port.cleanup()
        self._cluster_port = None

    async def _restart_cluster_port(self) -> None:
        await self._close_cluster_port()
        await self._serve_cluster_port(self.identity.get("ListenAddr") or self.config.listen_addr)

    async def _serve_cluster_port(self, listen: str) -> None:
        host, port = split_addr(listen, field="--listen-addr")
        creds = ca_storage.load_node_credentials(self.swarm_dir / "certs")
        ca = self.load_ca()
        ctx = server_context(creds, ca.trusted, require_client_cert=False)
        from manager.controlapi import ControlAPI
        api = ClusterAPI(self.require_manager(), self.load_ca,
                         ControlAPI(self.require_manager, self.pinned_image, self.load_ca))
        runner = web.AppRunner(api.app(), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ctx, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._cluster_port = runner
        self._cluster_api = api
        log.info("cluster port listening on %s:%d (mutual TLS)", host, port)

    async def _start_agent(self) -> None:
        self.agent = Agent(self.node_id, self.runtime, self.images)
        self.agent.adopt_existing()
        if self.manager is not None:
            self._tasks.append(asyncio.create_task(self._manager_cert_loop(), name="cert-upkeep"))
            session = self.manager.dispatcher.open_session(self.node_id, local=True)
            await self.manager.dispatcher.node_up(self.node_id, self.describe(),
                                                  split_addr(self.identity.get("AdvertiseAddr") or "127.0.0.1:2377")[0])
        else:
            creds_dir = self.swarm_dir / "certs"

            def ssl_ctx():
                creds = ca_storage.load_node_credentials(creds_dir)
                return client_context(creds, creds.ca_certs)

            advertise = self.identity.get("AdvertiseAddr") or ""
            session = RemoteSession(self.identity.get("Managers", []), ssl_ctx, self.describe,
                                    split_addr(advertise)[0] if advertise else "", on_ca=self._on_ca_info)
            self.session = session
            self._tasks.append(asyncio.create_task(session.run(), name="session"))
            self._tasks.append(asyncio.create_task(self._worker_cert_loop(), name="cert-renewal"))
        self._tasks.append(asyncio.create_task(self.agent.run(session), name="agent"))


def normalize_listen(addr: str) -> str:
    host, port = split_addr(addr or "0.0.0.0:2377", field="--listen-addr")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise NodeError(f"--listen-addr: {host!r} is not an IP address") from None
    return f"{host}:{port}"


def normalize_advertise(addr: str, listen: str) -> str:
    """The address other nodes use: given, or the listen address, or this host's address
    on its default route (found without sending anything)."""
    listen_host, listen_port = split_addr(listen)
    if addr:
        host, port = split_addr(addr, default_port=listen_port, field="--advertise-addr")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise NodeError(f"--advertise-addr: {host!r} is not an IP address") from None
        return f"{host}:{port}"
    if listen_host not in ("0.0.0.0", "::"):
        return listen
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET address; a UDP connect sends no packet
            return f"{s.getsockname()[0]}:{listen_port}"
    except OSError:
        return f"127.0.0.1:{listen_port}"


def default_hostname() -> str:
    return socket.gethostname()
