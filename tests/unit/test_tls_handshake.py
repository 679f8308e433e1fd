"""Mutual TLS over real loopback sockets, and CA pinning for joining nodes."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives import serialization

from manager.ca import (
    BootstrapContext,
    BootstrapError,
    ClusterCA,
    Identity,
    JoinTokens,
    NodeCredentials,
    PeerRejected,
    TokenError,
    bootstrap_client_context,
    check_peer,
    client_context,
    is_revoked,
    make_csr,
    make_node_key,
    new_node_id,
    parse_identity,
    parse_token,
    peer_identity,
    server_context,
    sign_csr,
    token_role,
    verify_presented_chain,
)
from manager.ca.errors import CertificateError

TIMEOUT = 10


@dataclass
class Cluster:
    ca: ClusterCA = field(default_factory=ClusterCA.create)
    cluster_id: str = field(default_factory=new_node_id)

    def issue(self, role: str, *, validity: dt.timedelta = dt.timedelta(days=90), now: dt.datetime | None = None) -> NodeCredentials:
        key = make_node_key()
        pem = sign_csr(self.ca, make_csr(key), new_node_id(), role, self.cluster_id, validity, ips=["127.0.0.1"], now=now)
        return NodeCredentials.of(key, pem, self.ca.trusted)


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return Cluster()


@pytest.fixture(scope="module")
def manager(cluster: Cluster) -> NodeCredentials:
    return cluster.issue("manager")


@pytest.fixture(scope="module")
def worker(cluster: Cluster) -> NodeCredentials:
    return cluster.issue("worker")


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def run(coro: Awaitable) -> object:
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


class Server:
    """An asyncio TLS server on 127.0.0.1:<ephemeral> that records what its handler saw."""

    def __init__(self, ctx: ssl.SSLContext, handler: Handler) -> None:
        self.ctx, self.handler = ctx, handler
        self.calls = 0
        self.errors: list[BaseException] = []

    async def __aenter__(self) -> Server:
        async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.calls += 1
            try:
                await self.handler(reader, writer)
            except Exception as exc:  # recorded for the test, and the connection closed
                self.errors.append(exc)
            finally:
                writer.close()

        self.server = await asyncio.start_server(wrapped, "127.0.0.1", 0, ssl=self.ctx)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()


async def identity_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    ssl_object = writer.get_extra_info("ssl_object")
    identity = peer_identity(ssl_object)
    writer.write(f"{identity.role} {identity.node_id} {ssl_object.version()}\n".encode())
    await writer.drain()


async def ask(port: int, ctx: ssl.SSLContext) -> tuple[bytes, Identity | None]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        server_der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.write(b"HELLO\n")
        line = await reader.readline()
        return line, (peer_identity(writer.get_extra_info("ssl_object")) if server_der else None)
    finally:
        writer.close()


async def refused(port: int, ctx: ssl.SSLContext) -> None:
    """Assert the connection fails: at handshake, or (TLS 1.3 client certificates are checked
    after the client's handshake finished) at the first read."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    except (ssl.SSLError, ConnectionError):
        return
    try:
        writer.write(b"hello\n")
        data = await reader.read(100)
    except (ssl.SSLError, ConnectionError):
        return
    finally:
        writer.close()
    assert data == b"", f"server answered {data!r}"


# ---------------------------------------------------------------- contexts


def test_context_settings(cluster: Cluster, manager: NodeCredentials) -> None:
    srv = server_context(manager, cluster.ca.trusted)
    assert srv.verify_mode == ssl.CERT_REQUIRED
    assert srv.minimum_version == ssl.TLSVersion.TLSv1_2
    assert server_context(manager, cluster.ca.trusted, require_client_cert=False).verify_mode == ssl.CERT_OPTIONAL
    cli = client_context(manager, cluster.ca.trust_bundle_pem)
    assert cli.verify_mode == ssl.CERT_REQUIRED and not cli.check_hostname
    assert cli.minimum_version == ssl.TLSVersion.TLSv1_2


def test_trust_store_must_hold_ca_certificates(manager: NodeCredentials) -> None:
    with pytest.raises(CertificateError, match="not a CA certificate"):
        server_context(manager, manager.cert)


# ---------------------------------------------------------------- mutual TLS


def test_server_reads_the_client_role_from_its_certificate(
    cluster: Cluster, manager: NodeCredentials, worker: NodeCredentials
) -> None:
    async def main() -> None:
        async with Server(server_context(manager, cluster.ca.trusted), identity_handler) as srv:
            line, server_identity = await ask(srv.port, client_context(worker, cluster.ca.trusted))
            assert line.decode() == f"worker {worker.identity.node_id} TLSv1.3\n"
            # and the client authenticated the server the same way
            assert server_identity == manager.identity
            assert srv.errors == []

    run(main())


def test_tls12_only_peer_still_connects(cluster: Cluster, manager: NodeCredentials, worker: NodeCredentials) -> None:
    async def main() -> None:
        ctx = client_context(worker, cluster.ca.trusted)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        async with Server(server_context(manager, cluster.ca.trusted), identity_handler) as srv:
            line, _ = await ask(srv.port, ctx)
            assert line.decode().endswith(" TLSv1.2\n")

    run(main())


def test_client_with_a_certificate_from_another_ca_is_refused(cluster: Cluster, manager: NodeCredentials) -> None:
    stranger = Cluster().issue("manager")

    async def main() -> None:
        async with Server(server_context(manager, cluster.ca.trusted), identity_handler) as srv:
            await refused(srv.port, client_context(stranger, [*cluster.ca.trusted, *stranger.ca_certs]))
            assert srv.calls == 0

    run(main())


def test_client_without_certificate_is_refused_when_required(cluster: Cluster, manager: NodeCredentials) -> None:
    async def main() -> None:
        async with Server(server_context(manager, cluster.ca.trusted), identity_handler) as srv:
            await refused(srv.port, client_context(None, cluster.ca.trusted))
            assert srv.calls == 0

    run(main())


def test_client_refuses_a_server_from_another_ca(cluster: Cluster, worker: NodeCredentials) -> None:
    impostor = Cluster().issue("manager")

    async def main() -> None:
        async with Server(server_context(impostor, [*impostor.ca_certs, *cluster.ca.trusted]), identity_handler) as srv:
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncio.open_connection("127.0.0.1", srv.port, ssl=client_context(worker, cluster.ca.trusted))

    run(main())


def test_optional_client_cert_port_verifies_presented_certs_and_flags_anonymous_ones(
    cluster: Cluster, manager: NodeCredentials, worker: NodeCredentials
) -> None:
    stranger = Cluster().issue("worker")

    async def main() -> None:
        ctx = server_context(manager, cluster.ca.trusted, require_client_cert=False)
        async with Server(ctx, identity_handler) as srv:
            line, _ = await ask(srv.port, client_context(worker, cluster.ca.trusted))
            assert line.startswith(b"worker ")
            # anonymous: handshake succeeds, but peer_identity refuses it
            line, _ = await ask(srv.port, client_context(None, cluster.ca.trusted))
            assert line == b""
            assert [str(e) for e in srv.errors] == ["peer certificate: none presented"]
            # a certificate from another CA is still refused at the handshake
            calls = srv.calls
            await refused(srv.port, client_context(stranger, [*cluster.ca.trusted, *stranger.ca_certs]))
            assert srv.calls == calls

    run(main())


def test_rotation_keeps_old_and_new_certificates_talking_until_it_finishes() -> None:
    old = Cluster()
    old_worker = old.issue("worker")
    rotated = Cluster(ca=old.ca.start_rotation(), cluster_id=old.cluster_id)
    new_manager = rotated.issue("manager")

    async def main() -> None:
        bundle = rotated.ca.trusted
        async with Server(server_context(new_manager, bundle), identity_handler) as srv:
            line, server_id = await ask(srv.port, client_context(old_worker, bundle))
            assert line.startswith(b"worker ") and server_id == new_manager.identity
        async with Server(server_context(old_worker, bundle), identity_handler) as srv:
            line, _ = await ask(srv.port, client_context(new_manager, bundle))
            assert line.startswith(b"manager ")
        done = rotated.ca.finish_rotation().trusted
        async with Server(server_context(new_manager, done), identity_handler) as srv:
            await refused(srv.port, client_context(old_worker, bundle))
            assert srv.calls == 0

    run(main())


def test_expired_client_certificate_is_refused(cluster: Cluster, manager: NodeCredentials) -> None:
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)
    expired = cluster.issue("worker", validity=dt.timedelta(hours=1), now=past)

    async def main() -> None:
        async with Server(server_context(manager, cluster.ca.trusted), identity_handler) as srv:
            await refused(srv.port, client_context(expired, cluster.ca.trusted))
            assert srv.calls == 0

    run(main())


# ---------------------------------------------------------------- authorization


def test_check_peer(cluster: Cluster, worker: NodeCredentials) -> None:
    identity = worker.identity
    assert check_peer(identity, cluster_id=cluster.cluster_id, roles=("worker", "manager")) == identity
    with pytest.raises(PeerRejected, match=r"^peer certificate: role worker may not use this endpoint \(allowed: manager\)$"):
        check_peer(identity, cluster_id=cluster.cluster_id, roles=("manager",))
    with pytest.raises(PeerRejected, match="was removed from the cluster"):
        check_peer(identity, cluster_id=cluster.cluster_id, roles=("worker",), removed_node_ids={identity.node_id})
    with pytest.raises(PeerRejected, match=f"belongs to cluster {cluster.cluster_id}, not"):
        check_peer(identity, cluster_id=new_node_id(), roles=("worker",))


def test_is_revoked(worker: NodeCredentials) -> None:
    assert is_revoked(worker.identity, {worker.identity.node_id})
    assert not is_revoked(worker.identity, set())
    assert not is_revoked(worker.identity, [new_node_id()])


# ---------------------------------------------------------------- joining


def test_bootstrap_context_is_unverified_and_remembers_the_digest(cluster: Cluster) -> None:
    ctx = bootstrap_client_context(cluster.ca.digest)
    assert isinstance(ctx, BootstrapContext) and isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    assert ctx.expected_ca_digest == cluster.ca.digest
    with pytest.raises(TokenError, match="^join token: CA digest must be 64 lowercase hex"):
        bootstrap_client_context("abc")


def test_verify_presented_chain_accepts_the_pinned_manager(cluster: Cluster, manager: NodeCredentials) -> None:
    der = manager.cert.public_bytes(serialization.Encoding.DER)
    root = cluster.ca.signer.cert
    assert verify_presented_chain(der, cluster.ca.digest, cluster.ca.trust_bundle_pem) == root
    # chain form, leaf first with the root included: no separate fetch needed
    assert verify_presented_chain([der, root], cluster.ca.digest) == root


def test_verify_presented_chain_rejects_wrong_digest(cluster: Cluster, manager: NodeCredentials) -> None:
    other = ClusterCA.create()
    with pytest.raises(BootstrapError, match=r"does not match the join token's \(.*\); wrong cluster, or a man in the middle"):
        verify_presented_chain(manager.cert, other.digest, cluster.ca.trusted)


def test_verify_presented_chain_rejects_leaf_not_signed_by_pinned_root(cluster: Cluster) -> None:
    # A man in the middle can serve the real root (it is public), but not a leaf it signed.
    impostor = Cluster().issue("manager")
    with pytest.raises(BootstrapError, match="^server certificate: not signed by the root CA the join token pins"):
        verify_presented_chain(impostor.cert, cluster.ca.digest, cluster.ca.trusted)


def test_verify_presented_chain_rejects_workers_and_expired_leaves(cluster: Cluster, worker: NodeCredentials) -> None:
    with pytest.raises(BootstrapError, match="is a worker, only managers accept joins"):
        verify_presented_chain(worker.cert, cluster.ca.digest, cluster.ca.trusted)
    later = worker.cert.not_valid_after_utc + dt.timedelta(seconds=1)
    with pytest.raises(BootstrapError, match="^server certificate: not valid now"):
        verify_presented_chain(worker.cert, cluster.ca.digest, cluster.ca.trusted, now=later)


def test_verify_presented_chain_needs_a_root_and_a_valid_digest(cluster: Cluster, manager: NodeCredentials) -> None:
    with pytest.raises(BootstrapError, match="no root certificate to check"):
        verify_presented_chain(manager.cert, cluster.ca.digest)
    with pytest.raises(TokenError, match="^join token: CA digest"):
        verify_presented_chain(manager.cert, "XYZ", cluster.ca.trusted)


class JoinService:
    """What a manager's cluster port does for joining nodes, reduced to a line protocol:
    `ROOT` returns the trust bundle, `JOIN <token> <csr-hex>` returns a signed certificate."""

    def __init__(self, cluster: Cluster, tokens: JoinTokens) -> None:
        self.cluster, self.tokens = cluster, tokens
        self.issued: list[Identity] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        words = (await reader.readline()).decode().split()
        if words == ["ROOT"]:
            writer.write(self.cluster.ca.trust_bundle_pem)
        elif words and words[0] == "JOIN":
            try:
                role = token_role(words[1], self.tokens)
            except TokenError as exc:
                writer.write(f"ERROR {exc}\n".encode())
            else:
                pem = sign_csr(self.cluster.ca, bytes.fromhex(words[2]), new_node_id(), role, self.cluster.cluster_id)
                self.issued.append(parse_identity(pem))
                writer.write(pem)
        else:
            # everything else needs an authenticated peer
            identity = peer_identity(writer.get_extra_info("ssl_object"))
            writer.write(f"hello {identity.role}\n".encode())
        await writer.drain()


async def join(port: int, token: str) -> tuple[bytes, object]:
    """The joining node's side, as documented in manager/ca/__init__.py."""
    pin = parse_token(token)
    # 1-2: unverified connection, take the server's certificate, fetch the roots, pin.
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=bootstrap_client_context(pin.ca_digest))
    try:
        server_der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.write(b"ROOT\n")
        roots = await reader.read()
    finally:
        writer.close()
    pinned = verify_presented_chain(server_der, pin.ca_digest, roots)
    # 3: verified connection against the pinned root; only now the token and CSR leave the node.
    key = make_node_key()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(None, pinned))
    try:
        writer.write(f"JOIN {token} {make_csr(key).hex()}\n".encode())
        answer = await reader.read()
    finally:
        writer.close()
    return answer, (key, pinned)


def test_join_end_to_end_token_decides_role_and_new_cert_works(cluster: Cluster, manager: NodeCredentials) -> None:
    tokens = JoinTokens.generate(cluster.ca.signer.cert)
    service = JoinService(cluster, tokens)

    async def main() -> None:
        ctx = server_context(manager, cluster.ca.trusted, require_client_cert=False)
        async with Server(ctx, service) as srv:
            for role in ("worker", "manager"):
                pem, (key, pinned) = await join(srv.port, tokens.for_role(role))
                creds = NodeCredentials.of(key, pem, pinned)
                assert creds.identity.role == role
                assert creds.identity.cluster_id == cluster.cluster_id
                # the fresh certificate now opens authenticated routes
                line, _ = await ask(srv.port, client_context(creds, pinned))
                assert line == f"hello {role}\n".encode()
            assert [i.role for i in service.issued] == ["worker", "manager"]

    run(main())


def test_join_with_rotated_or_malformed_token_is_refused_with_a_clear_message(
    cluster: Cluster, manager: NodeCredentials
) -> None:
    tokens = JoinTokens.generate(cluster.ca.signer.cert)
    rotated = tokens.rotate("worker", cluster.ca.signer.cert)
    service = JoinService(cluster, rotated)

    async def main() -> None:
        ctx = server_context(manager, cluster.ca.trusted, require_client_cert=False)
        async with Server(ctx, service) as srv:
            answer, _ = await join(srv.port, tokens.worker)
            assert answer == b"ERROR join token: secret is not valid for this cluster (wrong token, or it was rotated)\n"
            assert service.issued == []
        with pytest.raises(TokenError, match="^join token: expected 4 parts"):
            await join(srv.port, "SHLTKN-1-garbage")

    run(main())


def test_join_against_a_man_in_the_middle_is_refused_before_sending_the_token(cluster: Cluster) -> None:
    tokens = JoinTokens.generate(cluster.ca.signer.cert)
    mitm = Cluster()
    mitm_service = JoinService(mitm, JoinTokens.generate(mitm.ca.signer.cert))
    mitm_manager = mitm.issue("manager")

    async def main() -> None:
        ctx = server_context(mitm_manager, mitm.ca.trusted, require_client_cert=False)
        async with Server(ctx, mitm_service) as srv:
            with pytest.raises(BootstrapError, match="does not match the join token's"):
                await join(srv.port, tokens.worker)
            # It only ever saw the ROOT request: the token and CSR never reached it.
            assert srv.calls == 1 and mitm_service.issued == []
        # A smarter MITM serves the real (public) root, but cannot sign its leaf with it.
        mitm.ca = cluster.ca
        async with Server(ctx, mitm_service) as srv:
            with pytest.raises(BootstrapError, match="not signed by the root CA the join token pins"):
                await join(srv.port, tokens.worker)
            assert srv.calls == 1 and mitm_service.issued == []

    run(main())
