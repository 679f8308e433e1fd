"""Cluster objects, mirroring the Docker Engine API's swarm definitions (v1.41).

Field meanings follow `ServiceSpec`, `TaskSpec`, `Task`, `Node` and `Swarm` of the Docker API;
names are snake_case here and PascalCase on the wire (see `api.codec`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

SECOND = 1_000_000_000  # durations are nanoseconds, as in the Docker API


@dataclass
class Version:
    index: int = 0


@dataclass
class Platform:
    architecture: str = ""
    os: str = ""


# --- services -----------------------------------------------------------------------------


@dataclass
class TmpfsOptions:
    size_bytes: int = 0
    mode: int = 0


@dataclass
class Mount:
    type: str = "volume"  # bind | volume | tmpfs
    source: str = ""
    target: str = ""
    read_only: bool = False
    tmpfs_options: Optional[TmpfsOptions] = None


@dataclass
class Ulimit:
    name: str = ""
    soft: int = 0
    hard: int = 0


@dataclass
class HealthConfig:
    test: list[str] = field(default_factory=list)  # ["CMD", ...] | ["CMD-SHELL", "..."] | ["NONE"]
    interval: int = 0  # ns
    timeout: int = 0
    retries: int = 0
    start_period: int = 0


@dataclass
class FileTarget:
    """Where a secret or config appears in the container: a file name (a secret's relative name
    is under /run/secrets, a config's under /) or an absolute path, its owner and mode."""
    name: str = ""
    uid: str = "0"
    gid: str = "0"
    mode: int = 0o444


@dataclass
class SecretReference:
    file: Optional[FileTarget] = None
    secret_id: str = ""
    secret_name: str = ""


@dataclass
class ConfigReference:
    file: Optional[FileTarget] = None
    config_id: str = ""
    config_name: str = ""


@dataclass
class DNSConfig:
    """What the container's /etc/resolv.conf says (Docker's ContainerSpec.DNSConfig)."""
    nameservers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


@dataclass
class PullOptions:
    """Swarmkit's ContainerSpec.PullOptions: the registry credentials the workers pull the image
    with, given at create/update (`--with-registry-auth`, the X-Registry-Auth header) as Docker's
    base64url JSON auth config. Internal: the control API never returns it (manager/pullauth.py
    redacts it); a worker gets it only inside its own tasks' assignments, over mutual TLS."""
    registry_auth: str = ""


@dataclass
class ContainerSpec:
    image: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)  # replaces the image's entrypoint
    args: list[str] = field(default_factory=list)  # replaces the image's cmd
    hostname: str = ""
    env: list[str] = field(default_factory=list)
    dir: str = ""
    user: str = ""
    groups: list[str] = field(default_factory=list)
    tty: bool = False
    open_stdin: bool = False
    read_only: bool = False
    mounts: list[Mount] = field(default_factory=list)
    stop_signal: str = ""
    stop_grace_period: Optional[int] = None  # ns; default 10 s
    init: Optional[bool] = None
    health_check: Optional[HealthConfig] = None
    capability_add: list[str] = field(default_factory=list)
    capability_drop: list[str] = field(default_factory=list)
    ulimits: list[Ulimit] = field(default_factory=list)
    secrets: list[SecretReference] = field(default_factory=list)
    configs: list[ConfigReference] = field(default_factory=list)
    # What the container's kernel view and /etc files get (see api.sysctls, manager.runchecks).
    sysctls: dict[str, str] = field(default_factory=dict)  # namespaced ones only
    hosts: list[str] = field(default_factory=list)  # "IP HOST [ALIAS...]" lines added to /etc/hosts
    dns_config: Optional[DNSConfig] = None
    isolation: str = ""  # "" or "default": Linux has one isolation
    pull_options: Optional[PullOptions] = None


@dataclass
class Limit:
    nano_cpus: int = 0
    memory_bytes: int = 0
    pids: int = 0


@dataclass
class Resources:
    nano_cpus: int = 0
    memory_bytes: int = 0


@dataclass
class ResourceRequirements:
    limits: Optional[Limit] = None
    reservations: Optional[Resources] = None


@dataclass
class RestartPolicy:
    condition: str = "any"  # none | on-failure | any
    delay: Optional[int] = None  # ns; Swarm's default is 5 s
    max_attempts: int = 0  # 0 = unlimited
    window: int = 0  # ns


@dataclass
class PlacementPreference:
    spread: dict[str, str] = field(default_factory=dict)  # {"SpreadDescriptor": "node.labels.zone"}


@dataclass
class Placement:
    constraints: list[str] = field(default_factory=list)
    preferences: list[dict[str, Any]] = field(default_factory=list)
    max_replicas: int = 0
    platforms: list[Platform] = field(default_factory=list)


@dataclass
class NetworkAttachmentConfig:
    target: str = ""  # a network's id or name
    aliases: list[str] = field(default_factory=list)
    driver_opts: dict[str, str] = field(default_factory=dict)


@dataclass
class TaskSpec:
    container_spec: ContainerSpec = field(default_factory=ContainerSpec)
    resources: Optional[ResourceRequirements] = None
    restart_policy: Optional[RestartPolicy] = None
    placement: Optional[Placement] = None
    networks: list[NetworkAttachmentConfig] = field(default_factory=list)
    force_update: int = 0
    log_driver: Optional[Driver] = None  # json-file (default), local or none; see api.logdriver


@dataclass
class ReplicatedService:
    replicas: int = 1


@dataclass
class GlobalService:
    pass


@dataclass
class ReplicatedJob:
    max_concurrent: int = 1
    total_completions: Optional[int] = None  # unset: MaxConcurrent, as in the Docker API


@dataclass
class GlobalJob:
    pass


@dataclass
class ServiceMode:
    replicated: Optional[ReplicatedService] = None
    global_: Optional[GlobalService] = None
    replicated_job: Optional[ReplicatedJob] = None
    global_job: Optional[GlobalJob] = None


@dataclass
class UpdateConfig:
    parallelism: int = 1
    delay: int = 0
    failure_action: str = "pause"
    monitor: int = 5 * SECOND
    max_failure_ratio: float = 0.0
    order: str = "stop-first"


@dataclass
class PortConfig:
    name: str = ""
    protocol: str = "tcp"
    target_port: int = 0
    published_port: int = 0
    publish_mode: str = "ingress"


@dataclass
class EndpointSpec:
    mode: str = "vip"
    ports: list[PortConfig] = field(default_factory=list)


@dataclass
class ServiceSpec:
    name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    task_template: TaskSpec = field(default_factory=TaskSpec)
    mode: ServiceMode = field(default_factory=ServiceMode)
    update_config: Optional[UpdateConfig] = None
    rollback_config: Optional[UpdateConfig] = None
    networks: list[NetworkAttachmentConfig] = field(default_factory=list)
    endpoint_spec: Optional[EndpointSpec] = None


@dataclass
class UpdateStatus:
    state: str = ""
    started_at: str = ""
    completed_at: str = ""
    message: str = ""


@dataclass
class JobStatus:
    job_iteration: Version = field(default_factory=Version)  # bumped by every spec update of a job
    last_execution: str = ""


@dataclass
class Service:
    id: str = ""
    version: Version = field(default_factory=Version)
    created_at: str = ""
    updated_at: str = ""
    spec: ServiceSpec = field(default_factory=ServiceSpec)
    previous_spec: Optional[ServiceSpec] = None
    update_status: Optional[UpdateStatus] = None
    job_status: Optional[JobStatus] = None  # job modes only
    endpoint: Optional[Endpoint] = None  # the allocator's: published ports and virtual IPs


# --- tasks --------------------------------------------------------------------------------

# Task states in order; a task's state only ever moves forward through this list.
TASK_STATES = [
    "new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running",
    "complete", "shutdown", "failed", "rejected", "remove", "orphaned",
]
_STATE_RANK = {s: i for i, s in enumerate(TASK_STATES)}
TERMINAL_STATES = frozenset({"complete", "shutdown", "failed", "rejected", "remove", "orphaned"})


def state_rank(state: str) -> int:
    return _STATE_RANK[state]


def is_terminal(state: str) -> bool:
    return state in TERMINAL_STATES


@dataclass
class ContainerStatus:
    container_id: str = ""
    pid: int = 0
    exit_code: Optional[int] = None


@dataclass
class TaskStatus:
    timestamp: str = ""
    state: str = "new"
    message: str = ""
    err: str = ""
    container_status: Optional[ContainerStatus] = None


@dataclass
class Task:
    id: str = ""
    version: Version = field(default_factory=Version)
    created_at: str = ""
    updated_at: str = ""
    name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    spec: TaskSpec = field(default_factory=TaskSpec)
    spec_version: Optional[Version] = None
    service_id: str = ""
    slot: int = 0
    node_id: str = ""
    status: TaskStatus = field(default_factory=TaskStatus)
    desired_state: str = "running"
    job_iteration: Optional[Version] = None  # job modes only: the JobIteration it was created for
    networks_attachments: list[NetworkAttachment] = field(default_factory=list)  # the allocator's


# --- nodes --------------------------------------------------------------------------------


@dataclass
class NodeSpec:
    name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    role: str = "worker"  # worker | manager
    availability: str = "active"  # active | pause | drain


@dataclass
class EngineDescription:
    engine_version: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class TLSInfo:
    trust_root: str = ""  # PEM of the root certificates trusted
    cert_issuer_subject: str = ""  # base64 DER of the issuer's subject
    cert_issuer_public_key: str = ""  # base64 DER of the issuer's public key


@dataclass
class NodeDescription:
    hostname: str = ""
    platform: Platform = field(default_factory=Platform)
    resources: Resources = field(default_factory=Resources)
    engine: EngineDescription = field(default_factory=EngineDescription)
    tls_info: Optional[TLSInfo] = None


@dataclass
class NodeStatus:
    state: str = "unknown"  # unknown | down | ready | disconnected
    message: str = ""
    addr: str = ""


@dataclass
class ManagerStatus:
    leader: bool = False
    reachability: str = "unknown"  # unknown | unreachable | reachable
    addr: str = ""


@dataclass
class Node:
    id: str = ""
    version: Version = field(default_factory=Version)
    created_at: str = ""
    updated_at: str = ""
    spec: NodeSpec = field(default_factory=NodeSpec)
    description: NodeDescription = field(default_factory=NodeDescription)
    status: NodeStatus = field(default_factory=NodeStatus)
    manager_status: Optional[ManagerStatus] = None
    attachments: list[NetworkAttachment] = field(default_factory=list)  # the node's own address on ingress


# --- cluster ------------------------------------------------------------------------------


@dataclass
class OrchestrationConfig:
    task_history_retention_limit: int = 5


@dataclass
class DispatcherConfig:
    # Swarm's default is 5 s; Shoal's 2 s finds a failed node sooner for the cost of a few
    # small messages per second per node.
    heartbeat_period: int = 2 * SECOND


@dataclass
class CAConfig:
    node_cert_expiry: int = 90 * 24 * 3600 * SECOND


@dataclass
class EncryptionConfig:
    # Swarm's autolock: managers' Raft state (and TLS keys) encrypted at rest under a key
    # that is not on their disks; a restarted manager waits for `shoal swarm unlock`.
    auto_lock_managers: bool = False


@dataclass
class SwarmSpec:
    name: str = "default"
    labels: dict[str, str] = field(default_factory=dict)
    orchestration: OrchestrationConfig = field(default_factory=OrchestrationConfig)
    dispatcher: DispatcherConfig = field(default_factory=DispatcherConfig)
    ca_config: CAConfig = field(default_factory=CAConfig)
    encryption_config: EncryptionConfig = field(default_factory=EncryptionConfig)


@dataclass
class JoinTokens:
    worker: str = ""
    manager: str = ""


@dataclass
class EncryptionKey:
    subsystem: str = ""  # "manager": the unlock key of the managers' state at rest
    key: str = ""  # SWMKEY-1-...


@dataclass
class Cluster:
    id: str = ""
    version: Version = field(default_factory=Version)
    created_at: str = ""
    updated_at: str = ""
    spec: SwarmSpec = field(default_factory=SwarmSpec)
    join_tokens: JoinTokens = field(default_factory=JoinTokens)
    root_ca_digest: str = ""  # sha256 of the root that signs now (the one join tokens pin)
    tls_info: TLSInfo = field(default_factory=TLSInfo)  # trust_root: every root trusted now
    root_rotation_in_progress: bool = False
    # 1: workers move to the new root; 2: managers do; then only the new root is trusted.
    root_rotation_phase: int = 0
    # The signing root, replicated so that any manager can sign once it leads. The key never
    # leaves the managers: the control API does not return it.
    root_ca_cert: str = ""
    root_ca_key: str = ""
    # base64 of the 32-byte key that seals secrets in the store; managers only, never served.
    secrets_key: str = ""
    # The unlock key while autolock is on (Swarm's UnlockKeys), replicated so that every
    # manager wraps its data key with the same one. Managers only: the API never returns it
    # except through GET /swarm/unlockkey.
    unlock_keys: list[EncryptionKey] = field(default_factory=list)

    def unlock_key(self) -> str:
        return next((k.key for k in self.unlock_keys if k.subsystem == "manager"), "")


# --- networks -----------------------------------------------------------------------------


@dataclass
class IPAMConfig:
    subnet: str = ""
    ip_range: str = ""
    gateway: str = ""
    auxiliary_addresses: dict[str, str] = field(default_factory=dict)


@dataclass
class IPAM:
    driver: str = ""  # "" or "default": the cluster's own allocator
    config: list[IPAMConfig] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)


@dataclass
class NetworkSpec:
    """Docker's NetworkCreateRequest, as the user gave it."""
    name: str = ""
    driver: str = "overlay"
    scope: str = ""
    internal: bool = False
    attachable: bool = False
    ingress: bool = False
    enable_ipv6: bool = field(default=False, metadata={"wire": "EnableIPv6"})
    ipam: Optional[IPAM] = None
    options: dict[str, str] = field(default_factory=dict)  # "encrypted": IPsec between nodes
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Driver:
    name: str = ""
    options: dict[str, str] = field(default_factory=dict)


@dataclass
class Network:
    """A swarm-scoped overlay network. DriverState (the VXLAN id) and IPAMOptions (subnet and
    gateway in use) are the allocator's, set once on the leader and kept for the network's life."""
    id: str = ""
    version: Version = field(default_factory=Version)
    created_at: str = ""
    updated_at: str = ""
    spec: NetworkSpec = field(default_factory=NetworkSpec)
    driver_state: Optional[Driver] = None
    ipam_options: Optional[IPAM] = None


@dataclass
class NetworkAttachment:
    """A task's (or a node's) place on a network: the network as allocated, and its addresses
    there (a.b.c.d/n)."""
    network: Network = field(default_factory=Network)
    addresses: list[str] = field(default_factory=list)


@dataclass
class EndpointVirtualIP:
    network_id: str = ""
    addr: str = ""  # a.b.c.d/n


@dataclass
class Endpoint:
    """A service's endpoint as allocated: the spec it was allocated for, the published ports
    (a port the user left unset gets one from 30000-32767) and a virtual IP per network."""
    spec: Optional[EndpointSpec] = None
    ports: list[PortConfig] = field(default_factory=list)
    virtual_ips: list[EndpointVirtualIP] = field(default_factory=list)


@dataclass
class NetworkKey:
    """A data-plane encryption key (Docker's EncryptionKey among NetworkBootstrapKeys)."""
    key_id: int = 0  # 1..255: the top byte of the ESP SPI
    key: str = ""  # base64 of 16 random bytes
    created_at: str = ""


@dataclass
class NetworkKeys:
    """The keys of encrypted overlay networks, the leader's: the first encrypts, every one
    decrypts. The API never serves them; a node gets them only while it has an encrypted network."""
    id: str = ""
    version: Version = field(default_factory=Version)
    created_at: str = ""
    updated_at: str = ""
    keys: list[NetworkKey] = field(default_factory=list)
    step_at: str = ""  # when the last rotation step was taken


# --- secrets and configs -------------------------------------------------------------------


@dataclass
class SecretSpec:
    name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    data: str = ""  # base64; accepted on create, never stored in the clear nor returned
    driver: Optional[Driver] = None
    templating: Optional[Driver] = None


@dataclass
class Secret:
    id: str = ""
    version: Version = field(default_factory=Version)
    created_at: str = ""
    updated_at: str = ""
    spec: SecretSpec = field(default_factory=SecretSpec)
    # The data sealed with the cluster's secrets key (manager/secretbox.py): what the log,
    # snapshots and every manager's store hold. The API never returns it.
    sealed: str = ""


@dataclass
class ConfigSpec:
    name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    data: str = ""  # base64
    templating: Optional[Driver] = None


@dataclass
class Config:
    id: str = ""
    version: Version = field(default_factory=Version)
    created_at: str = ""
    updated_at: str = ""
    spec: ConfigSpec = field(default_factory=ConfigSpec)


# The tables of the replicated store, by kind.
KINDS: dict[str, type] = {
    "cluster": Cluster,
    "node": Node,
    "service": Service,
    "task": Task,
    "network": Network,
    "networkkeys": NetworkKeys,
    "secret": Secret,
    "config": Config,
}
