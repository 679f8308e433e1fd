"""Saving and loading CA and node credentials: modes, atomicity, mismatches."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from manager.ca import (
    CertificateError,
    ClusterCA,
    RootCA,
    ca_digest,
    load_ca,
    load_node_credentials,
    make_csr,
    make_node_key,
    new_node_id,
    save_ca,
    save_node_credentials,
    sign_csr,
)
from manager.ca import storage


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def cluster() -> ClusterCA:
    return ClusterCA.create()


@pytest.fixture()
def node(cluster):
    key = make_node_key()
    cert = sign_csr(cluster, make_csr(key), new_node_id(), "worker", new_node_id())
    return key, cert


def test_ca_round_trip_with_key_and_modes(tmp_path: Path, cluster) -> None:
    d = tmp_path / "state" / "ca"
    save_ca(d, cluster)
    assert _mode(d) == 0o700
    assert _mode(d / "root.pem") == 0o600
    assert _mode(d / "trusted.crt") == 0o644
    loaded = load_ca(d)
    assert loaded.digest == cluster.digest
    assert loaded.signer.can_sign
    assert loaded.trusted == cluster.trusted
    # The loaded key really is the CA's key: what it signs verifies under the saved root.
    cert = sign_csr(loaded, make_csr(make_node_key()), new_node_id(), "worker", new_node_id())
    assert storage.issued_by(cert, cluster.signer.cert)


def test_keyless_root_round_trip(tmp_path: Path, cluster) -> None:
    save_ca(tmp_path, RootCA(cert=cluster.signer.cert))
    loaded = load_ca(tmp_path)
    assert not loaded.signer.can_sign
    assert loaded.digest == cluster.digest
    assert b"PRIVATE KEY" not in (tmp_path / "root.pem").read_bytes()


def test_rotation_trust_bundle_survives_a_restart(tmp_path: Path, cluster) -> None:
    rotating = cluster.start_rotation()
    save_ca(tmp_path, rotating)
    loaded = load_ca(tmp_path)
    assert loaded.rotating
    assert [ca_digest(c) for c in loaded.trusted] == [rotating.digest, cluster.digest]


def test_load_ca_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match=f"^root CA: {tmp_path}/root.pem does not exist$"):
        load_ca(tmp_path)


def test_load_ca_refuses_a_key_of_another_root(tmp_path: Path, cluster) -> None:
    other = ClusterCA.create()
    (tmp_path / "root.pem").write_bytes(cluster.signer.cert_pem + storage.key_pem(other.signer.key))
    with pytest.raises(CertificateError, match="does not match its certificate"):
        load_ca(tmp_path)


def test_node_credentials_round_trip_and_modes(tmp_path: Path, cluster, node) -> None:
    key, cert = node
    d = tmp_path / "node"
    save_node_credentials(d, key, cert, cluster.trust_bundle_pem)
    assert _mode(d) == 0o700
    assert _mode(d / "node.pem") == 0o600
    assert _mode(d / "ca.crt") == 0o644
    creds = load_node_credentials(d)
    assert creds.cert_pem == cert
    assert creds.key_pem == storage.key_pem(key)
    assert creds.ca_certs == cluster.trusted
    assert [p.name for p in d.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_modes_are_exact_whatever_the_umask(tmp_path: Path, cluster, node) -> None:
    for umask in (0o000, 0o077):
        old = os.umask(umask)
        try:
            save_node_credentials(tmp_path / str(umask), *node, cluster.signer.cert)
        finally:
            os.umask(old)
        assert _mode(tmp_path / str(umask) / "node.pem") == 0o600
        assert _mode(tmp_path / str(umask) / "ca.crt") == 0o644


def test_a_stale_temp_file_does_not_leak_its_mode(tmp_path: Path) -> None:
    stale = tmp_path / f".key.tmp.{os.getpid()}"
    stale.write_bytes(b"left over by a crash")
    stale.chmod(0o666)
    storage.write_atomic(tmp_path / "key", b"secret", 0o600)
    assert _mode(tmp_path / "key") == 0o600
    assert (tmp_path / "key").read_bytes() == b"secret"
    assert not stale.exists()


def test_save_refuses_a_certificate_from_another_ca(tmp_path: Path, node) -> None:
    with pytest.raises(CertificateError, match="not issued by any of the given CA certificates"):
        save_node_credentials(tmp_path, *node, ClusterCA.create().signer.cert)
    assert not (tmp_path / "node.pem").exists()


def test_save_refuses_a_mismatched_key(tmp_path: Path, cluster, node) -> None:
    with pytest.raises(CertificateError, match="private key does not match"):
        save_node_credentials(tmp_path, make_node_key(), node[1], cluster.signer.cert)


def test_load_refuses_credentials_not_issued_by_the_stored_roots(tmp_path: Path, cluster, node) -> None:
    save_node_credentials(tmp_path, *node, cluster.signer.cert)
    (tmp_path / "ca.crt").write_bytes(ClusterCA.create().signer.cert_pem)
    with pytest.raises(CertificateError, match="was not issued by a root in"):
        load_node_credentials(tmp_path)


def test_load_names_missing_node_files(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match=f"^node credentials: {tmp_path}/node.pem does not exist$"):
        load_node_credentials(tmp_path)


def test_load_refuses_a_node_file_without_key(tmp_path: Path, cluster, node) -> None:
    save_node_credentials(tmp_path, *node, cluster.signer.cert)
    (tmp_path / "node.pem").write_bytes(node[1])
    with pytest.raises(CertificateError, match="no private key in"):
        load_node_credentials(tmp_path)


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "f"
    storage.write_atomic(target, b"old", 0o600)

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(storage.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        storage.write_atomic(target, b"new", 0o600)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_renewal_replaces_credentials_in_place(tmp_path: Path, cluster, node) -> None:
    save_node_credentials(tmp_path, *node, cluster.signer.cert)
    key2 = make_node_key()
    identity = load_node_credentials(tmp_path).identity
    cert2 = sign_csr(cluster, make_csr(key2), identity.node_id, "manager", identity.cluster_id)
    save_node_credentials(tmp_path, key2, cert2, cluster.signer.cert)
    creds = load_node_credentials(tmp_path)
    assert creds.identity.role == "manager" and creds.cert_pem == cert2
