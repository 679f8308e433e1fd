"""Node certificates: the node's key and CSR, the CA's signature, and reading identity back.

The subject follows SwarmKit: CN = node id, OU = role ("swarm-manager" / "swarm-worker"),
O = cluster id. The CA takes only the public key from a CSR; id, role and cluster are its own
decision, so a worker cannot ask for a manager certificate by writing OU=swarm-manager.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import CertificateError
from .ids import check_id
from .pem import CertLike, CertsLike, KeyLike, as_cert, as_certs, as_key, cert_pem, certs_pem, key_pem
from .root import ClusterCA, RootCA
from .tokens import ROLES, Role

DEFAULT_VALIDITY = dt.timedelta(days=90)
MIN_VALIDITY = dt.timedelta(minutes=1)
MAX_BACKDATE = dt.timedelta(hours=1)

ROLE_TO_OU: dict[str, str] = {"manager": "swarm-manager", "worker": "swarm-worker"}
OU_TO_ROLE: dict[str, Role] = {"swarm-manager": "manager", "swarm-worker": "worker"}

# Renew when less than this fraction of the validity remains: 1/2 with jitter 0, 1/3 with
# jitter 1. Spreading renewals over that window avoids every node renewing at once.
RENEW_AT_MOST = 1 / 2
RENEW_AT_LEAST = 1 / 3

_ACCEPTED_CURVES = (ec.SECP256R1, ec.SECP384R1)


@dataclass(frozen=True)
class Identity:
    node_id: str
    role: Role
    cluster_id: str
    not_after: dt.datetime
    serial: int


def make_node_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key; it never leaves the node that made it."""
    return ec.generate_private_key(ec.SECP256R1())


def make_csr(key: KeyLike) -> bytes:
    """A PEM CSR for `key`. Its subject is a placeholder: the CA decides the real one."""
    k = as_key(key, "node key")
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shoal-node")]))
        .sign(k, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def _load_csr(csr_pem: bytes | str) -> x509.CertificateSigningRequest:
    data = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
    if not isinstance(data, (bytes, bytearray)):
        raise CertificateError(f"csr: expected PEM bytes, got {type(csr_pem).__name__}")
    try:
        if bytes(data).lstrip().startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(bytes(data))
        else:
            csr = x509.load_der_x509_csr(bytes(data))
    except ValueError as exc:
        raise CertificateError(f"csr: not a valid certificate signing request ({exc})") from None
    # Proof that the requester holds the private key for the public key it wants certified.
    if not csr.is_signature_valid:
        raise CertificateError("csr: signature does not verify with the CSR's own public key")
    pub = csr.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey) or not isinstance(pub.curve, _ACCEPTED_CURVES):
        raise CertificateError("csr: public key must be ECDSA P-256 or P-384")
    return csr


def sign_csr(
    ca: RootCA | ClusterCA,
    csr_pem: bytes | str,
    node_id: str,
    role: Role,
    cluster_id: str,
    validity: dt.timedelta = DEFAULT_VALIDITY,
    *,
    ips: Sequence[str] = (),
    now: dt.datetime | None = None,
) -> bytes:
    """Sign the CSR's public key into a node certificate; returns PEM. The CSR's subject and
    extensions are ignored."""
    root = ca.signer if isinstance(ca, ClusterCA) else ca
    signing_key = root.signing_key()
    check_id("node_id", node_id, CertificateError)
    check_id("cluster_id", cluster_id, CertificateError)
    if role not in ROLES:
        raise CertificateError(f"role: must be 'worker' or 'manager', got {role!r}")
    if not isinstance(validity, dt.timedelta) or validity < MIN_VALIDITY:
        raise CertificateError(f"validity: must be a timedelta of at least {MIN_VALIDITY}, got {validity!r}")
    addresses = []
    for ip in ips:
        try:
            addresses.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError:
            raise CertificateError(f"ips: {ip!r} is not an IP address") from None
    csr = _load_csr(csr_pem)

    now = now or dt.datetime.now(dt.timezone.utc)
    # Backdate for clock skew, but never by more than a tenth of a short validity, else a
    # short-lived certificate would look half-spent at issue and renew in a loop.
    backdate = min(MAX_BACKDATE, validity / 10)
    not_after = min(now + validity, root.cert.not_valid_after_utc)
    if not_after <= now:
        raise CertificateError("root CA: expired, it cannot sign certificates")
    issuer_ski = root.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_id),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ROLE_TO_OU[role]),
            x509.NameAttribute(NameOID.COMMON_NAME, node_id),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(root.cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - backdate)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(node_id), *addresses]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False)
        .sign(signing_key, hashes.SHA256())
    )
    return cert_pem(cert)


def _one(cert: x509.Certificate, oid: x509.ObjectIdentifier, label: str) -> str:
    attrs = cert.subject.get_attributes_for_oid(oid)
    if len(attrs) != 1:
        raise CertificateError(f"certificate subject: expected exactly one {label}, found {len(attrs)}")
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode()


def parse_identity(cert: CertLike) -> Identity:
    """Node id, role, cluster id, expiry and serial from a node certificate's subject."""
    c = as_cert(cert, "node certificate")
    ou = _one(c, NameOID.ORGANIZATIONAL_UNIT_NAME, "OU (role)")
    role = OU_TO_ROLE.get(ou)
    if role is None:
        raise CertificateError(f"certificate subject: OU {ou!r} is not a Shoal role (swarm-manager, swarm-worker)")
    node_id = check_id("certificate subject CN (node id)", _one(c, NameOID.COMMON_NAME, "CN (node id)"), CertificateError)
    cluster_id = check_id(
        "certificate subject O (cluster id)", _one(c, NameOID.ORGANIZATION_NAME, "O (cluster id)"), CertificateError
    )
    return Identity(node_id=node_id, role=role, cluster_id=cluster_id, not_after=c.not_valid_after_utc, serial=c.serial_number)


def needs_renewal(cert: CertLike, now: dt.datetime, jitter: float = 0.0) -> bool:
    """True once less than 1/2 (jitter 0) .. 1/3 (jitter 1) of the validity period remains.

    The caller draws `jitter` once per certificate (e.g. random.random()) so this stays pure.
    """
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter: must be within [0, 1], got {jitter!r}")
    if now.tzinfo is None:
        raise ValueError("now: must be timezone-aware")
    c = as_cert(cert, "node certificate")
    start, end = c.not_valid_before_utc, c.not_valid_after_utc
    fraction = RENEW_AT_MOST - jitter * (RENEW_AT_MOST - RENEW_AT_LEAST)
    return end - now < (end - start) * fraction


def issued_by(cert: CertLike, ca_cert: CertLike) -> bool:
    """Whether `ca_cert`'s key signed `cert` (e.g. to find nodes still on the old root after a rotation)."""
    c, ca = as_cert(cert), as_cert(ca_cert, "CA certificate")
    if c.issuer != ca.subject:
        return False
    try:
        c.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _same_key(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt)


@dataclass(frozen=True)
class NodeCredentials:
    """A node's key, its certificate, and the roots it trusts."""

    key: ec.EllipticCurvePrivateKey = field(repr=False)
    cert: x509.Certificate
    ca_certs: tuple[x509.Certificate, ...]

    def __post_init__(self) -> None:
        if not _same_key(self.key, self.cert):
            raise CertificateError("node credentials: the private key does not match the certificate")
        if not self.ca_certs:
            raise CertificateError("node credentials: no CA certificate")

    @classmethod
    def of(cls, key: KeyLike, cert: CertLike, ca_certs: CertsLike) -> NodeCredentials:
        return cls(key=as_key(key, "node key"), cert=as_cert(cert, "node certificate"), ca_certs=as_certs(ca_certs))

    @property
    def identity(self) -> Identity:
        return parse_identity(self.cert)

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)

    @property
    def cert_pem(self) -> bytes:
        return cert_pem(self.cert)

    @property
    def ca_pem(self) -> bytes:
        return certs_pem(self.ca_certs)
