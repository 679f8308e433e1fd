"""Keeping a node's certificate current: renewal before expiry, and root CA rotation.

Rotation without cross-signing, in two phases so no node ever meets a certificate it cannot
verify:
1. start: a new root signs from now on; both roots are trusted. The managers keep serving
   with their old certificate; every node receives the two-root bundle over its (already
   authenticated) session, saves it, and renews its certificate from the new root.
2. finish, once every other node reports a certificate from the new root: the manager takes
   a new-root certificate itself, trusts only the new root, and restarts its listener; nodes
   (which trust both) reconnect and receive the one-root bundle.
"""
from __future__ import annotations

import base64
import datetime as dt
import random
from pathlib import Path
from typing import Protocol

import aiohttp
import msgpack
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from api.objects import TLSInfo
from manager.ca import NodeCredentials, client_context, make_csr, make_node_key, needs_renewal
from manager.ca import storage as ca_storage
from manager.ca.pem import as_certs, key_pem
from manager.ca.root import ca_digest


class KeyPasswords(Protocol):
    """Where a manager with autolock on keeps its TLS key's passphrases (daemon/autolock.py)."""

    def tls_password(self) -> bytes | None: ...  # to write the key with (None: in the clear)

    def tls_passwords(self) -> tuple[bytes, ...]: ...  # any the key may be under


class _Plain:
    def tls_password(self) -> bytes | None:
        return None

    def tls_passwords(self) -> tuple[bytes, ...]:
        return ()


PLAIN = _Plain()


def load_credentials(certs_dir: Path, pw: KeyPasswords = PLAIN) -> NodeCredentials:
    return ca_storage.load_node_credentials(certs_dir, pw.tls_passwords())


def save_credentials(certs_dir: Path, key, cert, ca_certs, pw: KeyPasswords = PLAIN) -> None:
    # The password is looked up now, at the moment of writing, so a write that waited on the
    # network uses the key current when it lands (a data key rotation may have happened).
    ca_storage.save_node_credentials(certs_dir, key, cert, ca_certs, pw.tls_password())


def issuer_of(cert: x509.Certificate, roots) -> x509.Certificate | None:
    from manager.ca import issued_by
    for root in roots:
        if issued_by(cert, root):
            return root
    return None


def tls_info(creds: NodeCredentials) -> TLSInfo:
    root = issuer_of(creds.cert, creds.ca_certs)
    pub = root.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo) if root else b""
    subject = root.subject.public_bytes() if root else b""
    return TLSInfo(trust_root=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in creds.ca_certs).decode(),
                   cert_issuer_subject=base64.b64encode(subject).decode(),
                   cert_issuer_public_key=base64.b64encode(pub).decode())


def root_tls_info(root: x509.Certificate, trusted_pem: bytes) -> TLSInfo:
    pub = root.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return TLSInfo(trust_root=trusted_pem.decode(), cert_issuer_subject=base64.b64encode(root.subject.public_bytes()).decode(),
                   cert_issuer_public_key=base64.b64encode(pub).decode())


def issued_by_digest(creds: NodeCredentials) -> str:
    root = issuer_of(creds.cert, creds.ca_certs)
    return ca_digest(root) if root else ""


def wants_renewal(creds: NodeCredentials, root_digest: str, now: dt.datetime, jitter: float) -> bool:
    """Renew when the certificate nears expiry, or when it was not issued by the root that
    signs now (a rotation is under way)."""
    return needs_renewal(creds.cert, now, jitter) or (bool(root_digest) and issued_by_digest(creds) != root_digest)


def save_trust_bundle(certs_dir: Path, creds: NodeCredentials, trust_root_pem: str, pw: KeyPasswords = PLAIN) -> bool:
    """Adopt the roots the managers trust now (received over the authenticated session).
    Returns whether anything changed. The node's own certificate must stay verifiable."""
    roots = as_certs(trust_root_pem.encode(), "TrustRoot")
    if {ca_digest(c) for c in roots} == {ca_digest(c) for c in creds.ca_certs}:
        return False
    save_credentials(certs_dir, creds.key, creds.cert, roots, pw)
    return True


async def renew_remote(certs_dir: Path, manager_addr: str, timeout: float = 15, redirects: int = 3,
                       pw: KeyPasswords = PLAIN) -> NodeCredentials:
    """Ask the leader for a new certificate (new key) over mutual TLS with the current one."""
    creds = load_credentials(certs_dir, pw)
    key = make_node_key()
    body = msgpack.packb({"CSR": make_csr(key)})
    ctx = client_context(creds, creds.ca_certs)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
        async with http.post(f"https://{manager_addr}/renew", data=body, ssl=ctx,
                             headers={"Content-Type": "application/msgpack"}) as resp:
            payload = await resp.read()
            if resp.status == 421 and redirects > 0:
                leader = (await resp.json(content_type=None)).get("Leader") or ""
                if leader:
                    return await renew_remote(certs_dir, leader, timeout, redirects - 1, pw)
            if resp.status >= 400:
                raise RuntimeError(f"renewal refused: {payload.decode(errors='replace')[:200]}")
    reply = msgpack.unpackb(payload, raw=False)
    save_credentials(certs_dir, key_pem(key), reply["Certificate"], reply["CACerts"], pw)
    return load_credentials(certs_dir, pw)


def renewal_jitter() -> float:
    return random.random()
