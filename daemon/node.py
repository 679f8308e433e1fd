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
from daemon import certs, statedir
from daemon.autolock import Autolock
from daemon.serviceimages import NodeImages
from api.objects import (
    Cluster, EncryptionKey, EngineDescription, JoinTokens, ManagerStatus, Node, NodeDescription, NodeSpec,
    NodeStatus, Platform, Resources, SECOND, SwarmSpec,
)
from manager.ca import storage as ca_storage
from manager.ca.certs import make_csr, make_node_key, sign_csr
from manager.ca.pem import as_certs, as_key, cert_pem, key_pem
from manager.ca.root import ClusterCA, RootCA
from manager.ca.tls import client_context, server_context
from manager.ca.tokens import JoinTokens as CAJoinTokens
from manager.allocator import key_rotation_loop
from manager.clusterapi import ClusterAPI
from manager import secretbox
from manager.encryption import InvalidUnlockKey, KeyFileError, new_unlock_key, parse_unlock_key
from manager.manager import Manager
from manager.raft.storage.disk import remove_storage
from manager.raft.storage.memory import StorageError
from manager.store import Action
from worker.agent import Agent
from worker.images.nodeclient import node_registry_client
from worker.images.puller import ImagePuller
from worker.images.store import ImageStore
from worker.join import JoinError, join_cluster, split_addr
from worker.networks import NodeNetworking
from worker.runtime import Runtime, UserNamespace
from worker.logstream import LogStreamer
from worker.requests import NodeRequests
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


class SwarmLocked(NodeError):
    status = 503

    def __init__(self):
        super().__init__('Swarm is encrypted and needs to be unlocked before it can be used. '
                         'Please use "shoal swarm unlock" to unlock it.')


@dataclass
class NodeConfig:
    state_dir: Path
    hostname: str
    cgroup_parent: str = "shoal"
    listen_addr: str = "0.0.0.0:2377"
    runtime: str = "shoal"  # or runc / crun: the same OCI bundle, another engine
    advertise_addr: str = ""
    userns_remap: UserNamespace | None = None  # --userns-remap: every container in a user namespace


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
        self.runtime = Runtime(self.state_dir / "containers", cgroup_parent=config.cgroup_parent,
                               engine=config.runtime)
        self.manager: Manager | None = None
        self.agent: Agent | None = None
        self.networks: NodeNetworking | None = None
        self.session: RemoteSession | None = None
        self.node_id: str = ""
        self.identity: dict = {}
        self._tasks: list[asyncio.Task] = []
        self._cluster_port: web.AppRunner | None = None
        self._cluster_api: ClusterAPI | None = None
        self._listener_creds: bytes = b""
        self._lock = asyncio.Lock()  # init, join and leave one at a time
        self._last_ca: dict | None = None
        self._cert_task: asyncio.Task | None = None
        self._jitter = certs.renewal_jitter()
        self._manager_tasks: list[asyncio.Task] = []
        self._role_task: asyncio.Task | None = None
        self._raft_members: set[str] = set()
        self.autolock = Autolock(self.swarm_dir, self.raft_dir)
        self.locked = False  # a manager with autolock on, restarted and not unlocked yet
        self._recover_after_unlock = False  # --force-new-cluster given while locked

    @property
    def swarm_dir(self) -> Path:
        return self.state_dir / "swarm"

    @property
    def certs_dir(self) -> Path:
        return self.swarm_dir / "certs"

    @property
    def raft_dir(self) -> Path:
        return self.state_dir / "raft"

    def load_creds(self):
        """The node's TLS credentials (the key decrypted with the data key when autolock is on)."""
        return certs.load_credentials(self.certs_dir, self.autolock)

    def save_creds(self, key, cert, ca_certs) -> None:
        certs.save_credentials(self.certs_dir, key, cert, ca_certs, self.autolock)

    def _identity_path(self) -> Path:
        return self.swarm_dir / "node.json"

    def _write_identity(self, ident: dict) -> None:
        statedir.private_dir(self.swarm_dir)
        tmp = self._identity_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(ident))
        os.replace(tmp, self._identity_path())
        self.identity = ident

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self, force_new_cluster: bool = False) -> None:
        try:
            statedir.prepare(self.state_dir, self.config.userns_remap)
        except statedir.StateDirError as exc:
            raise NodeError(str(exc)) from None
        if not self._identity_path().exists():
            if force_new_cluster:
                raise NodeError("--force-new-cluster: this node holds no swarm state to recover from")
            return
        self.identity = json.loads(self._identity_path().read_text())
        self.node_id = self.identity["NodeID"]
        if force_new_cluster and self.identity.get("Role") != "manager":
            raise NodeError("--force-new-cluster: this node is not a manager; only a manager's state can be recovered")
        try:
            locked = self.identity.get("Role") == "manager" and self.autolock.locked()
        except KeyFileError as exc:
            raise NodeError(f"this manager's key file is unusable: {exc}") from None
        if locked:
            # Swarm's autolock: neither Raft nor the agent can start (the data key and the TLS
            # key are wrapped); the socket answers, and `shoal swarm unlock` starts the rest.
            self.locked = True
            self._recover_after_unlock = force_new_cluster
            log.warning("this manager is locked: run `shoal swarm unlock` and give the swarm's unlock key")
            return
        await self._start_member(force_new_cluster)

    async def _start_member(self, force_new_cluster: bool = False) -> None:
        if force_new_cluster:
            self._force_new_cluster()
        if self.identity.get("Role") == "manager":
            await self._start_manager(bootstrap=False)
        await self._start_agent()

    def _force_new_cluster(self) -> None:
        from manager.raft.recover import force_new_cluster as recover
        try:
            self.autolock.finish_rotation()
            recover(self.raft_dir, self.node_id, self.autolock.keys.crypter())
        except (StorageError, KeyFileError) as exc:
            raise NodeError(f"--force-new-cluster: {exc}") from None
        self._recover_after_unlock = False
        log.warning("forced a new cluster of one from this manager's state")

    async def unlock(self, key_text: str) -> None:
        """`shoal swarm unlock`: unwrap the data key with the unlock key, then start Raft, the
        manager and the agent, as a restart without autolock would have."""
        async with self._lock:
            if not self._identity_path().exists():
                raise NodeError("This node is not part of a swarm")
            if not self.locked:
                raise NodeError("swarm is not locked")
            try:
                self.autolock.unlock(key_text)
            except InvalidUnlockKey as exc:
                raise NodeError(str(exc)) from None
            except KeyFileError as exc:
                raise NodeError(f"this manager's key file is unusable: {exc}") from None
            self.locked = False
            try:
                await self._start_member(self._recover_after_unlock)
            except BaseException as exc:
                await self._stop_member(stop_containers=False)
                self.autolock.forget()
                self.locked = True
                if isinstance(exc, Exception) and not isinstance(exc, NodeError):
                    raise NodeError(f"the key fits, but the manager could not start: {exc}") from None
                raise
            log.info("unlocked")

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
        await self._stop_manager_quietly()
        if stop_containers:
            for c in self.runtime.list():
                try:
                    if c.status == "running":
                        await self.runtime.stop(c.id, 10.0)
                    await asyncio.to_thread(self.runtime.delete, c.id, True)
                except Exception as exc:  # keep going: leaving must not strand the rest
                    log.warning("removing container %s: %s", c.id[:12], exc)
        if self.networks is not None:
            # Leaving removes the node's networks; a plain exit leaves them to the running
            # containers, and the next daemon rebuilds them.
            await (self.networks.close() if stop_containers else self.networks.stop())
            self.networks = None
        self.agent = None
        self.session = None
        self.manager = None

    # --- queries --------------------------------------------------------------------------

    def require_manager(self) -> Manager:
        if self.locked:
            raise SwarmLocked()
        if self.manager is None:
            raise NotAManager()
        return self.manager

    def describe(self) -> NodeDescription:
        info = None
        if self.certs_dir.exists():
            try:
                info = certs.tls_info(self.load_creds())
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
        """The cluster's CA as the replicated store holds it (any manager can sign once it leads)."""
        cluster = self.require_manager().cluster
        if cluster is None or not cluster.root_ca_key:
            raise NodeError("swarm: the cluster CA is not available on this manager yet")
        signer = RootCA(cert=as_certs(cluster.root_ca_cert.encode(), "RootCACert")[0],
                        key=as_key(cluster.root_ca_key.encode(), "RootCAKey"))
        return ClusterCA(signer=signer, trusted=as_certs(cluster.tls_info.trust_root.encode(), "TrustRoot"))

    def _client_ssl(self):
        creds = self.load_creds()
        return client_context(creds, creds.ca_certs)

    # --- init, join, leave ------------------------------------------------------------------

    async def swarm_init(self, advertise_addr: str = "", listen_addr: str = "", spec: SwarmSpec | None = None) -> str:
        """`spec` (validated by the caller) is the new swarm's; with autolock, the unlock key is
        made here and the data key wrapped by it before anything is written."""
        async with self._lock:
            if self._identity_path().exists():
                raise NodeError("This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm and join another one.")
            listen = normalize_listen(listen_addr or self.config.listen_addr)
            advertise = normalize_advertise(advertise_addr or self.config.advertise_addr, listen)
            spec = spec or SwarmSpec()
            cluster_id, node_id = new_id(), new_id()
            remove_storage(str(self.raft_dir))  # leftovers of an init that crashed
            unlock_key = new_unlock_key() if spec.encryption_config.auto_lock_managers else ""
            self.autolock.create(parse_unlock_key(unlock_key) if unlock_key else None)
            ca = ClusterCA.create()
            key = make_node_key()
            cert = sign_csr(ca, make_csr(key), node_id, "manager", cluster_id)
            statedir.private_dir(self.swarm_dir)  # the node's key goes in: 0700 before it is written
            self.save_creds(key, cert, ca.signer.cert)
            tokens = CAJoinTokens.generate(ca.signer.cert)
            self.node_id = node_id
            self.identity = {"NodeID": node_id, "ClusterID": cluster_id, "Role": "manager",
                             "ListenAddr": listen, "AdvertiseAddr": advertise, "Managers": [advertise]}
            try:
                manager = await self._start_manager(bootstrap=True)
            except OSError as exc:
                await self._stop_member(stop_containers=False)
                shutil.rmtree(self.swarm_dir, ignore_errors=True)
                remove_storage(str(self.raft_dir))
                self.autolock.forget()
                raise NodeError(f"--listen-addr: cannot listen on {listen}: {exc.strerror or exc}") from None
            for _ in range(100):  # a cluster of one elects itself at once
                if manager.is_leader:
                    break
                await asyncio.sleep(0.05)
            cluster = Cluster(
                id=cluster_id, spec=spec,
                unlock_keys=[EncryptionKey(subsystem="manager", key=unlock_key)] if unlock_key else [],
                join_tokens=JoinTokens(worker=tokens.worker, manager=tokens.manager), root_ca_digest=ca.digest,
                tls_info=certs.root_tls_info(ca.signer.cert, ca.trust_bundle_pem),
                root_ca_cert=cert_pem(ca.signer.cert).decode(), root_ca_key=key_pem(ca.signer.key).decode(),
                secrets_key=secretbox.new_key(),
            )
            node = Node(
                id=node_id,
                spec=NodeSpec(name="", role="manager", availability="active"),
                description=self.describe(),
                status=NodeStatus(state="unknown", addr=split_addr(advertise)[0]),
                manager_status=ManagerStatus(leader=True, reachability="reachable", addr=advertise),
            )
            await manager.propose([Action("create", "cluster", cluster), Action("create", "node", node)])
            # The identity file is written last: a crash before it leaves a node that can init again.
            self._write_identity(dict(self.identity, Created=dt.datetime.now(dt.timezone.utc).isoformat()))
            await self._start_agent()
            return node_id

    async def swarm_join(self, remote: str, token: str, advertise_addr: str = "", listen_addr: str = "") -> str:
        async with self._lock:
            if self._identity_path().exists():
                raise NodeError("This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm and join another one.")
            try:
                host, port = split_addr(remote, field="ADDR")
                listen = normalize_listen(listen_addr or self.config.listen_addr)
                advertise_raw = advertise_addr or self.config.advertise_addr
                manager_addr = normalize_advertise(advertise_raw, listen) if advertise_raw or listen_addr or \
                    not listen.startswith("0.0.0.0") else normalize_advertise("", listen)
                result = await join_cluster(f"{host}:{port}", token, self.describe(),
                                            split_addr(advertise_raw)[0] if advertise_raw else "", manager_addr)
            except JoinError as exc:
                raise NodeError(str(exc)) from None
            statedir.private_dir(self.swarm_dir)
            ca_storage.save_node_credentials(self.certs_dir, result.key_pem, result.cert_pem, result.ca_pem)
            self.autolock.forget()  # a joining manager starts unlocked and follows the cluster's setting
            self.node_id = result.node_id
            managers = result.managers or [f"{host}:{port}"]
            self.identity = {"NodeID": result.node_id, "ClusterID": result.cluster_id, "Role": result.role,
                             "Managers": managers, "AdvertiseAddr": advertise_raw, "ListenAddr": listen,
                             "ManagerAddr": manager_addr, "RaftPeers": result.raft_peers,
                             "Created": dt.datetime.now(dt.timezone.utc).isoformat()}
            if result.role == "manager":
                self.identity["AdvertiseAddr"] = manager_addr
                await self._start_manager(bootstrap=False)
                # Return once this manager votes: until then it does not count toward the quorum.
                for _ in range(300):
                    if self.node_id in self.manager.raft.members()[0]:
                        break
                    await asyncio.sleep(0.05)
            self._write_identity(self.identity)
            await self._start_agent()
            return result.node_id

    async def swarm_leave(self, force: bool) -> None:
        async with self._lock:
            if not self._identity_path().exists():
                raise NodeError("This node is not part of a swarm")
            if (self.manager is not None or self.locked) and not force:
                raise NodeError("You are attempting to leave the swarm on a node that is participating as a manager. "
                                "Removing the last manager erases all current state of the swarm. "
                                "Use `--force` to ignore this message.")
            await self._stop_member(stop_containers=True)
            shutil.rmtree(self.swarm_dir, ignore_errors=True)
            remove_storage(str(self.raft_dir))
            self.autolock.forget()
            self.locked = False
            self._recover_after_unlock = False
            self.node_id = ""
            self.identity = {}

    # --- certificates -------------------------------------------------------------------------

    def _on_ca_info(self, info: dict) -> None:
        """The managers' current roots arrived over the session: follow them."""
        self._last_ca = info
        if self._cert_task is None or self._cert_task.done():
            self._cert_task = asyncio.create_task(self._check_cert())

    async def _check_cert(self) -> None:
        info = self._last_ca or {}
        try:
            creds = self.load_creds()
            if info.get("TrustRoot") and certs.save_trust_bundle(self.certs_dir, creds, info["TrustRoot"], self.autolock):
                log.info("trusted roots updated by the managers")
                creds = self.load_creds()
            root_digest = info.get("RootDigest", "")
            if self.manager is not None and info.get("Phase", 0) == 1:
                root_digest = ""  # managers keep serving their old certificate until the workers moved
            now = dt.datetime.now(dt.timezone.utc)
            if certs.wants_renewal(creds, root_digest, now, self._jitter) and self.session:
                await certs.renew_remote(self.certs_dir, self.session.current_manager, pw=self.autolock)
                log.info("node certificate renewed")
                await self.session.reconnect()  # present the new certificate
            await self._refresh_listener()
        except Exception as exc:
            log.warning("certificate renewal failed, will retry: %s", exc)

    async def _cert_loop(self) -> None:
        while True:
            await asyncio.sleep(30)
            await self._check_cert()

    async def _refresh_listener(self) -> None:
        """A manager serves with its current certificate and trusts the current roots."""
        if self.manager is None or self._cluster_port is None:
            return
        if self._served_creds() != self._listener_creds:
            await self._restart_cluster_port()

    def _served_creds(self) -> bytes:
        """What the listener serves: the certificate and the roots (not the key's encoding,
        which changes when autolock re-encrypts it without the key changing)."""
        creds = self.load_creds()
        return creds.cert_pem + creds.ca_pem

    async def _rotation_loop(self) -> None:
        """On the leader: move a root rotation from phase to phase as the nodes report
        certificates from the new root (Description.TLSInfo, sent when their session opens)."""
        while True:
            await asyncio.sleep(0.5)
            m = self.manager
            if m is None or not m.is_leader:
                continue
            cluster = m.cluster
            if cluster is None or not cluster.root_rotation_in_progress:
                continue
            want = cluster.tls_info.cert_issuer_public_key

            def moved(n):
                return n.description.tls_info is not None and n.description.tls_info.cert_issuer_public_key == want
            nodes = m.store.list("node")
            new = copy.deepcopy(cluster)
            if cluster.root_rotation_phase == 1 and all(moved(n) for n in nodes if n.spec.role != "manager"):
                new.root_rotation_phase = 2
            elif cluster.root_rotation_phase == 2 and all(moved(n) for n in nodes):
                ca = self.load_ca().finish_rotation()
                new.root_rotation_in_progress = False
                new.root_rotation_phase = 0
                new.tls_info = certs.root_tls_info(ca.signer.cert, ca.trust_bundle_pem)
                log.info("root CA rotation complete")
            else:
                continue
            try:
                await m.propose([Action("update", "cluster", new)])
            except Exception as exc:
                log.debug("rotation step postponed: %s", exc)

    async def start_ca_rotation(self) -> None:
        """`shoal swarm ca --rotate`: a new root signs from now on; both are trusted until every
        node has a certificate from the new one (workers first, then managers)."""
        m = self.require_manager()
        cluster = m.cluster
        if cluster.root_rotation_in_progress:
            raise NodeError("a root CA rotation is already in progress")
        ca = self.load_ca().start_rotation()
        # This manager must accept new-root clients before any node holds a new-root certificate.
        creds = self.load_creds()
        self.save_creds(creds.key, creds.cert, ca.trusted)
        await self._refresh_listener()
        new = copy.deepcopy(cluster)
        new.root_rotation_in_progress = True
        new.root_rotation_phase = 1
        new.root_ca_digest = ca.digest
        new.root_ca_cert = cert_pem(ca.signer.cert).decode()
        new.root_ca_key = key_pem(ca.signer.key).decode()
        new.tls_info = certs.root_tls_info(ca.signer.cert, ca.trust_bundle_pem)
        tokens = CAJoinTokens(worker=cluster.join_tokens.worker, manager=cluster.join_tokens.manager).with_ca(ca.signer.cert)
        new.join_tokens = JoinTokens(worker=tokens.worker, manager=tokens.manager)
        await m.propose([Action("update", "cluster", new)])

    # --- wiring ---------------------------------------------------------------------------

    async def _start_manager(self, bootstrap: bool) -> Manager:
        statedir.private_dir(self.state_dir / "raft")  # holds the CA key: never under a wider mode
        try:
            self.autolock.finish_rotation()  # also makes the keys of a new manager
        except (StorageError, KeyFileError) as exc:
            raise NodeError(f"raft storage: {exc}") from None
        m = Manager(self.state_dir, self.node_id, ssl_context=self._client_ssl,
                    peer_addrs=self.identity.get("RaftPeers"), crypter=self.autolock.keys.crypter())
        try:
            m.load(bootstrap)
        except StorageError as exc:
            raise NodeError(f"raft storage: {exc}") from None
        self.manager = m
        await m.start()
        await self._serve_cluster_port(self.identity.get("ListenAddr") or self.config.listen_addr)
        self._manager_tasks = [asyncio.create_task(self._rotation_loop(), name="ca-rotation"),
                               asyncio.create_task(key_rotation_loop(m), name="network-keys"),
                               asyncio.create_task(self._autolock_loop(m), name="autolock")]
        return m

    async def _autolock_loop(self, m: Manager) -> None:
        """Every manager follows the cluster's autolock setting and unlock key on its own disk."""
        while True:
            await asyncio.sleep(0.5)
            try:
                await self.autolock.follow(m)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # e.g. a full disk: the state stays readable; retry later
                log.warning("autolock: re-encrypting this manager's state failed, will retry: %s", exc)
                await asyncio.sleep(5)

    async def _stop_manager_quietly(self) -> None:
        """Daemon exit: stop the manager but keep its Raft state."""
        for t in self._manager_tasks:
            t.cancel()
        self._manager_tasks = []
        await self._close_cluster_port()
        if self.manager:
            await self.manager.stop()

    async def _stop_manager(self) -> None:
        """Demotion: stop the manager and drop its Raft state (it is no longer a member)."""
        await self._stop_manager_quietly()
        self.manager = None
        remove_storage(str(self.raft_dir))
        self.autolock.drop()  # workers are never locked: the TLS key is stored plainly again

    def _on_role(self, role: str, raft_members: list) -> None:
        """The managers want this node to take `role` (a promotion or a demotion)."""
        self._raft_members = set(raft_members)
        if role in ("worker", "manager") and role != self.identity.get("Role"):
            if self._role_task is None or self._role_task.done():
                self._role_task = asyncio.create_task(self._change_role(role))

    async def _change_role(self, role: str) -> None:
        from manager.ca import parse_identity
        async with self._lock:
            try:
                if role == "worker" and self.node_id in self._raft_members:
                    # Leave the Raft membership first (the leader removes us; a leader removes
                    # itself and hands over), keeping the manager certificate Raft needs
                    # meanwhile. The next assignments say when the removal has committed.
                    return
                await certs.renew_remote(self.certs_dir, self.session.current_manager, pw=self.autolock)
                creds = self.load_creds()
                if parse_identity(creds.cert).role != role:
                    return  # the store has not caught up yet; the next assignments retry
                if role == "manager":
                    listen = self.identity.get("ListenAddr") or self.config.listen_addr
                    self.identity.update(Role="manager", ListenAddr=listen,
                                         AdvertiseAddr=self.identity.get("ManagerAddr") or normalize_advertise("", listen),
                                         RaftPeers=self.session.raft_peers)
                    self._write_identity(self.identity)
                    await self._start_manager(bootstrap=False)
                    log.info("promoted: this node is now a manager")
                else:
                    await self._stop_manager()
                    self.identity["Role"] = "worker"
                    self._write_identity(self.identity)
                    log.info("demoted: this node is now a worker")
                await self.session.reconnect()
            except Exception as exc:
                log.warning("changing role to %s failed, will retry: %s", role, exc)

    async def _close_cluster_port(self) -> None:
        if self._cluster_port is None:
            return
        # Sessions are long-lived websockets: end them now (their nodes reconnect at once)
        # rather than letting the server wait for them to finish.
        self._cluster_api.close_all()
        await self._cluster_port.cleanup()
        self._cluster_port = None

    async def _restart_cluster_port(self) -> None:
        await self._close_cluster_port()
        await self._serve_cluster_port(self.identity.get("ListenAddr") or self.config.listen_addr)

    async def _serve_cluster_port(self, listen: str) -> None:
        host, port = split_addr(listen, field="--listen-addr")
        creds = self.load_creds()
        self._listener_creds = creds.cert_pem + creds.ca_pem
        ctx = server_context(creds, creds.ca_certs, require_client_cert=False)
        from manager.controlapi import ControlAPI
        api = ClusterAPI(self.require_manager(), self.load_ca,
                         ControlAPI(self.require_manager, NodeImages(self.images, self.state_dir), self.load_ca),
                         cluster_id=self.identity.get("ClusterID", ""))
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
        """Every node's agent, a manager's too, holds its session with the leader over mutual
        TLS; a follower's cluster port points it to the leader, and it follows leader changes."""
        advertise = self.identity.get("AdvertiseAddr") or ""
        underlay = advertise or self.config.advertise_addr
        self.networks = NodeNetworking(self.node_id, self.runtime, split_addr(underlay)[0] if underlay else "")
        await self.networks.start()
        puller = ImagePuller(self.images, lambda override: node_registry_client(self.state_dir, override))
        self.agent = Agent(self.node_id, self.runtime, self.images, self.networks, puller,
                           userns=self.config.userns_remap)
        self.agent.adopt_existing()
        manager_addr = self.identity.get("ManagerAddr") or (advertise if self.identity.get("Role") == "manager" else "")
        session = RemoteSession(self.identity.get("Managers", []), self._client_ssl, self.describe,
                                split_addr(advertise)[0] if advertise else "", on_ca=self._on_ca_info,
                                on_managers=self._managers_changed, on_role=self._on_role, manager_addr=manager_addr)
        streamer = LogStreamer(self.runtime, session.report)
        requests = NodeRequests(self.runtime, session.report)
        session.on_request = lambda msg: (streamer.handle if msg.get("Type", "").startswith("logs")
                                          else requests.handle)(msg)
        self.session = session
        self._tasks.append(asyncio.create_task(session.run(), name="session"))
        self._tasks.append(asyncio.create_task(self._cert_loop(), name="cert-renewal"))
        self._tasks.append(asyncio.create_task(self.agent.run(session), name="agent"))

    def _managers_changed(self, managers: list[str]) -> None:
        if managers and managers != self.identity.get("Managers"):
            self._write_identity(dict(self.identity, Managers=managers))


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
