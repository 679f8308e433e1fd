"""Reading and writing CA and node credentials under a state directory.

Each private key is stored in the same file as its certificate (`root.pem`, `node.pem`,
mode 0600) so that a crash can never leave a new key next to an old certificate: every file is
replaced atomically (temp file, fsync, rename, fsync of the directory). Trust bundles
(`trusted.crt`, `ca.crt`) are public and written 0644, before the node file, so that during a
root rotation a crash between the two writes leaves a bundle that still trusts both roots.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from .certs import NodeCredentials, _same_key, issued_by
from .errors import CertificateError
from .pem import CertLike, CertsLike, KeyLike, as_cert, as_certs, as_key, cert_pem, certs_pem, key_pem
from .root import ClusterCA, RootCA

ROOT_FILE = "root.pem"  # signing root certificate (+ its key on managers)
TRUSTED_FILE = "trusted.crt"  # every root peers may present
NODE_FILE = "node.pem"  # node key + node certificate
NODE_CA_FILE = "ca.crt"  # roots this node trusts

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.S)


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` with `data` so that readers see the old or the new content, never a mix."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # exact mode: not narrowed by the umask, nor left from a stale temp file
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _ensure_dir(directory: Path) -> Path:
    d = Path(directory)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    return d


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CertificateError(f"{what}: {path} does not exist") from None
    except OSError as exc:
        raise CertificateError(f"{what}: cannot read {path} ({exc.strerror})") from None


def _split_key_and_certs(
    data: bytes, path: Path, passwords: Sequence[bytes] = ()
) -> tuple[ec.EllipticCurvePrivateKey | None, tuple[x509.Certificate, ...]]:
    """The private key (if any) and the certificates of a PEM file holding both."""
    key: ec.EllipticCurvePrivateKey | None = None
    certs: list[x509.Certificate] = []
    for block in _PEM_BLOCK.finditer(data):
        label = block.group(1)
        if label == b"CERTIFICATE":
            certs.append(as_cert(block.group(0), str(path)))
        elif label.endswith(b"PRIVATE KEY"):
            if key is not None:
                raise CertificateError(f"{path}: more than one private key in file")
            key = as_key(block.group(0), f"{path} private key", passwords)
    if not certs:
        raise CertificateError(f"{path}: no certificate in file")
    return key, tuple(certs)


def save_ca(directory: str | os.PathLike[str], ca: RootCA | ClusterCA) -> None:
    """Write the signing root (with its key, if held) and the trusted roots."""
    d = _ensure_dir(Path(directory))
    cluster = ca if isinstance(ca, ClusterCA) else ClusterCA.of(ca)
    signer = cluster.signer
    root_data = cert_pem(signer.cert) + (key_pem(signer.key) if signer.key is not None else b"")
    write_atomic(d / TRUSTED_FILE, cluster.trust_bundle_pem, 0o644)
    write_atomic(d / ROOT_FILE, root_data, 0o600)


def load_ca(directory: str | os.PathLike[str]) -> ClusterCA:
    """The CA saved by `save_ca`; `.signer.key` is None where no key was saved."""
    d = Path(directory)
    key, certs = _split_key_and_certs(_read(d / ROOT_FILE, "root CA"), d / ROOT_FILE)
    cert = certs[0]
    if key is not None and not _same_key(key, cert):
        raise CertificateError(f"root CA: the key in {d / ROOT_FILE} does not match its certificate")
    trusted_path = d / TRUSTED_FILE
    trusted = as_certs(_read(trusted_path, "trusted roots"), str(trusted_path)) if trusted_path.exists() else (cert,)
    return ClusterCA(signer=RootCA(cert=cert, key=key), trusted=trusted)


def save_node_credentials(
    directory: str | os.PathLike[str], key: KeyLike, cert: CertLike, ca_cert: CertsLike,
    password: bytes | None = None,
) -> None:
    """Write the node's key and certificate (one 0600 file) and the roots it trusts; the key
    is encrypted with `password` when given (a manager with autolock on)."""
    creds = NodeCredentials.of(key, cert, ca_cert)
    if not any(issued_by(creds.cert, ca) for ca in creds.ca_certs):
        raise CertificateError("node credentials: the certificate was not issued by any of the given CA certificates")
    d = _ensure_dir(Path(directory))
    write_atomic(d / NODE_CA_FILE, certs_pem(creds.ca_certs), 0o644)
    write_atomic(d / NODE_FILE, key_pem(creds.key, password) + creds.cert_pem, 0o600)


def load_node_credentials(directory: str | os.PathLike[str], passwords: Sequence[bytes] = ()) -> NodeCredentials:
    """The node's credentials; an encrypted key opens with one of `passwords`."""
    d = Path(directory)
    key, certs = _split_key_and_certs(_read(d / NODE_FILE, "node credentials"), d / NODE_FILE, passwords)
    if key is None:
        raise CertificateError(f"node credentials: no private key in {d / NODE_FILE}")
    ca_certs = as_certs(_read(d / NODE_CA_FILE, "node CA"), str(d / NODE_CA_FILE))
    creds = NodeCredentials.of(key, certs[0], ca_certs)
    if not any(issued_by(creds.cert, ca) for ca in ca_certs):
        raise CertificateError(f"node credentials: the certificate in {d / NODE_FILE} was not issued by a root in {d / NODE_CA_FILE}")
    return creds
