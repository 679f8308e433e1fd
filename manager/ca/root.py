"""The cluster root CA: creation, digest, and the trust set held during a root rotation."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .errors import CertificateError
from .pem import CertLike, as_cert, cert_pem, certs_pem

ROOT_CN = "shoal-root-ca"
ROOT_VALIDITY = dt.timedelta(days=20 * 365)
# Backdating absorbs clock skew between the manager that signs and the nodes that verify.
ROOT_BACKDATE = dt.timedelta(hours=1)
DIGEST_HEX_LENGTH = 64  # sha256 -> 32 bytes -> 64 hex characters


def ca_digest(cert: CertLike) -> str:
    """sha256 of the DER encoding of `cert`, as 64 lowercase hex characters (the join token's pin)."""
    der = as_cert(cert).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class RootCA:
    """A root certificate, with its key when this process may sign (managers) or without (workers)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | None = field(default=None, repr=False)

    @property
    def digest(self) -> str:
        return ca_digest(self.cert)

    @property
    def cert_pem(self) -> bytes:
        return cert_pem(self.cert)

    @property
    def can_sign(self) -> bool:
        return self.key is not None

    def signing_key(self) -> ec.EllipticCurvePrivateKey:
        if self.key is None:
            raise CertificateError("root CA: this node holds no CA key, it cannot sign certificates")
        return self.key


def create_root_ca(now: dt.datetime | None = None, validity: dt.timedelta = ROOT_VALIDITY) -> RootCA:
    """A new ECDSA P-256 key and a self-signed CA certificate "shoal-root-ca"."""
    now = now or dt.datetime.now(dt.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ROOT_CN)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - ROOT_BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        # Every root is named "shoal-root-ca"; the key identifiers are what tell the
        # old and new roots apart while both are trusted during a rotation.
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return RootCA(cert=cert, key=key)


def is_ca_cert(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bc.ca


@dataclass(frozen=True)
class ClusterCA:
    """What the managers hold: the root that signs now, and every root a peer may still present.

    Outside a rotation `trusted == (signer.cert,)`. During a rotation the old root stays trusted
    so nodes not yet reissued keep working; `finish_rotation` drops it once every node holds a
    certificate from the new root. No cross-signing: a bundle of both roots is the trust store.
    """

    signer: RootCA
    trusted: tuple[x509.Certificate, ...]

    def __post_init__(self) -> None:
        if not self.trusted:
            raise CertificateError("cluster CA: trusted roots must not be empty")
        if ca_digest(self.signer.cert) not in {ca_digest(c) for c in self.trusted}:
            raise CertificateError("cluster CA: the signing root must be among the trusted roots")

    @classmethod
    def create(cls, now: dt.datetime | None = None) -> ClusterCA:
        root = create_root_ca(now)
        return cls(signer=root, trusted=(root.cert,))

    @classmethod
    def of(cls, root: RootCA) -> ClusterCA:
        return cls(signer=root, trusted=(root.cert,))

    @property
    def digest(self) -> str:
        """Digest of the current signing root: the one new join tokens pin."""
        return self.signer.digest

    @property
    def rotating(self) -> bool:
        return len(self.trusted) > 1

    @property
    def trust_bundle_pem(self) -> bytes:
        return certs_pem(self.trusted)

    def start_rotation(self, new_root: RootCA | None = None, now: dt.datetime | None = None) -> ClusterCA:
        """Sign with `new_root` (a fresh one by default) from now on, and keep trusting the old roots."""
        new_root = new_root or create_root_ca(now)
        if not new_root.can_sign:
            raise CertificateError("cluster CA: the new root must come with its key")
        if not is_ca_cert(new_root.cert):
            raise CertificateError("cluster CA: the new root certificate is not a CA certificate")
        # The new root goes first so that a bundle written to disk leads with the signer.
        older = tuple(c for c in self.trusted if ca_digest(c) != new_root.digest)
        return ClusterCA(signer=new_root, trusted=(new_root.cert,) + older)

    def finish_rotation(self) -> ClusterCA:
        """Trust only the current signing root again."""
        return ClusterCA(signer=self.signer, trusted=(self.signer.cert,))
