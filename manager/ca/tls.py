"""Mutual-TLS contexts, the peer identity they authenticate, and CA pinning for joining nodes.

Every Shoal connection is mutual TLS with ECDSA certificates from the cluster CA. Contexts allow
TLS 1.2 as a floor and negotiate TLS 1.3 whenever both ends have it (OpenSSL always prefers
the highest common version; between two Shoal nodes that is 1.3). Hostname checking is off:
a node is named by the CN/OU/O of its certificate, checked with `peer_identity`/`check_peer`
after the handshake, not by DNS.

Revocation is by node id, not by CRL: the transport calls `check_peer` (or `is_revoked`) with the
ids of removed nodes after each handshake, because the set changes faster than certificates.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import ssl
import tempfile
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

from cryptography import x509

from .certs import Identity, NodeCredentials, issued_by, parse_identity
from .errors import BootstrapError, CertificateError, PeerRejected, TokenError
from .pem import CertLike, CertsLike, as_cert, as_certs, certs_pem
from .root import DIGEST_HEX_LENGTH, ca_digest, is_ca_cert
from .tokens import Role

# Used only if TLS 1.2 is negotiated; TLS 1.3 suites are all AEAD with forward secrecy.
_TLS12_CIPHERS = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256"
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2

_DIGEST_RE = re.compile(rf"[0-9a-f]{{{DIGEST_HEX_LENGTH}}}")


def _harden(ctx: ssl.SSLContext) -> None:
    ctx.minimum_version = MINIMUM_VERSION
    ctx.set_ciphers(_TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION


def _trust(ctx: ssl.SSLContext, ca_certs: CertsLike) -> None:
    roots = as_certs(ca_certs, "CA certificates")
    for root in roots:
        if not is_ca_cert(root):
            raise CertificateError("CA certificates: one of the given certificates is not a CA certificate")
    ctx.load_verify_locations(cadata=certs_pem(roots).decode())
    # Reject certificates that only loose parsers accept; ours are always strict-clean.
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT


def _load_credentials(ctx: ssl.SSLContext, creds: NodeCredentials) -> None:
    """Load key + certificate without writing the key to disk: `load_cert_chain` only takes
    paths, so hand it an anonymous in-memory file."""
    data = creds.key_pem + creds.cert_pem
    try:
        fd = os.memfd_create("shoal-node-credentials", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        with tempfile.TemporaryDirectory(prefix="shoal-tls-") as tmp:
            path = Path(tmp) / "node.pem"
            path.touch(mode=0o600)
            path.write_bytes(data)
            ctx.load_cert_chain(str(path))
        return
    try:
        os.write(fd, data)
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def server_context(
    node_creds: NodeCredentials, ca_certs: CertsLike, *, require_client_cert: bool = True
) -> ssl.SSLContext:
    """A server context that presents the node certificate and verifies client certificates
    against `ca_certs` (the whole trust bundle during a rotation).

    `require_client_cert=False` (CERT_OPTIONAL) is for the one port that must also serve joining
    nodes, which have no certificate yet: a certificate that is presented is still verified, and
    every route except "fetch root CA" and "join with token" must then call `peer_identity`,
    which refuses a connection without a certificate.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx)
    _load_credentials(ctx, node_creds)
    _trust(ctx, ca_certs)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_context(node_creds: NodeCredentials | None, ca_certs: CertsLike) -> ssl.SSLContext:
    """A client context that verifies the server against `ca_certs` and presents the node
    certificate. With `node_creds=None` it presents none: that is the joining node's second
    connection, made once the root is pinned, to send its token and CSR."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx)
    ctx.check_hostname = False  # identity is the certificate subject, checked by the caller
    ctx.verify_mode = ssl.CERT_REQUIRED
    _trust(ctx, ca_certs)
    if node_creds is not None:
        _load_credentials(ctx, node_creds)
    return ctx


class BootstrapContext(ssl.SSLContext):
    """An unverified client context remembering which CA digest the join token pins."""

    expected_ca_digest: str


def bootstrap_client_context(expected_ca_digest: str) -> BootstrapContext:
    """The first connection of a joining node: no verification at handshake time (it has no
    roots yet). Before sending anything but the request for the root certificate, the caller
    must pass the server's certificate and that root to `verify_presented_chain`."""
    if not isinstance(expected_ca_digest, str) or not _DIGEST_RE.fullmatch(expected_ca_digest):
        raise TokenError(f"join token: CA digest must be {DIGEST_HEX_LENGTH} lowercase hex characters")
    ctx = BootstrapContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.expected_ca_digest = expected_ca_digest
    return ctx


def _presented_list(presented: CertLike | Sequence[CertLike]) -> list[x509.Certificate]:
    if isinstance(presented, (x509.Certificate, bytes, bytearray, str)):
        return [as_cert(presented, "server certificate")]
    certs = [as_cert(c, "server certificate chain") for c in presented]
    if not certs:
        raise BootstrapError("server certificate: the server presented no certificate")
    return certs


def verify_presented_chain(
    presented: CertLike | Sequence[CertLike],
    expected_ca_digest: str,
    ca_certs: CertsLike | None = None,
    *,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """Pin the cluster root for a joining node; return it, or raise BootstrapError.

    `presented` is the server's certificate (DER from `getpeercert(binary_form=True)`), or its
    chain, leaf first. `ca_certs` are candidate roots fetched over the same unverified
    connection. The root whose sha256 equals the token's digest must be a CA and must have
    signed the server's certificate, which must be a current manager certificate. The TLS
    handshake already proved the server holds that certificate's key, so a man in the middle
    can pass only with a manager key of this very cluster.
    """
    if not isinstance(expected_ca_digest, str) or not _DIGEST_RE.fullmatch(expected_ca_digest):
        raise TokenError(f"join token: CA digest must be {DIGEST_HEX_LENGTH} lowercase hex characters")
    chain = _presented_list(presented)
    leaf = chain[0]
    candidates = chain[1:] + (list(as_certs(ca_certs, "root CA from server")) if ca_certs is not None else [])
    if not candidates:
        raise BootstrapError("cluster CA: no root certificate to check against the join token's digest")
    pinned = next((c for c in candidates if ca_digest(c) == expected_ca_digest), None)
    if pinned is None:
        seen = ", ".join(sorted({ca_digest(c)[:12] for c in candidates}))
        raise BootstrapError(
            f"cluster CA: the server's root CA (sha256 {seen}...) does not match the join token's "
            f"({expected_ca_digest[:12]}...); wrong cluster, or a man in the middle"
        )
    if not is_ca_cert(pinned):
        raise BootstrapError("cluster CA: the pinned certificate is not a CA certificate")
    if not issued_by(leaf, pinned):
        raise BootstrapError(
            "server certificate: not signed by the root CA the join token pins; refusing (man in the middle?)"
        )
    now = now or dt.datetime.now(dt.timezone.utc)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise BootstrapError(
            f"server certificate: not valid now (valid {leaf.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ} "
            f"to {leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ})"
        )
    try:
        identity = parse_identity(leaf)
    except CertificateError as exc:
        raise BootstrapError(f"server certificate: {exc}") from None
    if identity.role != "manager":
        raise BootstrapError(f"server certificate: node {identity.node_id} is a {identity.role}, only managers accept joins")
    return pinned


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> Identity:
    """The identity in the peer's verified certificate; PeerRejected if it presented none."""
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise PeerRejected("peer certificate: none presented")
    try:
        return parse_identity(der)
    except CertificateError as exc:
        raise PeerRejected(f"peer {exc}") from None


def is_revoked(identity: Identity, removed_node_ids: Collection[str]) -> bool:
    return identity.node_id in removed_node_ids


def check_peer(
    identity: Identity,
    *,
    cluster_id: str,
    roles: Iterable[Role],
    removed_node_ids: Collection[str] = (),
) -> Identity:
    """Authorize an authenticated peer for one endpoint; returns it or raises PeerRejected."""
    if identity.cluster_id != cluster_id:
        raise PeerRejected(f"peer certificate: belongs to cluster {identity.cluster_id}, not {cluster_id}")
    if is_revoked(identity, removed_node_ids):
        raise PeerRejected(f"peer certificate: node {identity.node_id} was removed from the cluster")
    allowed = tuple(roles)
    if identity.role not in allowed:
        raise PeerRejected(
            f"peer certificate: role {identity.role} may not use this endpoint (allowed: {', '.join(allowed)})"
        )
    return identity
