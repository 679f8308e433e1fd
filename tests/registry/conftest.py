import subprocess
import sys

import pytest

from tests.registry.helpers import (HTPASSWD, REGISTRY, ROOT, SKOPEO, TokenIssuer, ThreadServer, htpasswd_file,
                                    small_tar, start_registry, stop_registry)

MISSING = [name for name, path in (("docker-registry", REGISTRY), ("skopeo", SKOPEO)) if path is None]


@pytest.fixture(autouse=True)
def _needs_registry_tools():
    if MISSING:
        pytest.skip(f"needs {' and '.join(MISSING)} (apt-get install docker-registry skopeo; "
                    f"scripts/install-deps.sh does it)")

USER, PASSWORD = "alice", "s3cret-pass"


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory):
    """The busybox root filesystem tar of scripts/make-busybox-image.py (one real layer)."""
    out = tmp_path_factory.mktemp("busybox") / "rootfs.tar"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "make-busybox-image.py"), str(out)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"busybox rootfs: {proc.stderr.strip()}")
    return out.read_bytes()


@pytest.fixture
def layers(busybox_tar):
    """Two layers: busybox, and a small one on top."""
    return [busybox_tar, small_tar({"etc/motd": b"hello from shoal\n"})]


@pytest.fixture
def registry(tmp_path):
    reg = start_registry(tmp_path)
    try:
        yield reg
    finally:
        stop_registry(reg)


@pytest.fixture
def basic_registry(tmp_path):
    if HTPASSWD is None:
        pytest.skip("needs htpasswd (apt-get install apache2-utils)")
    path = htpasswd_file(tmp_path / "htpasswd", USER, PASSWORD)
    reg = start_registry(tmp_path, {"htpasswd": {"realm": "shoal-test", "path": str(path)}})
    try:
        yield reg
    finally:
        stop_registry(reg)


@pytest.fixture
def token_registry(tmp_path):
    """A registry with token auth, and the token server it sends clients to."""
    issuer = TokenIssuer(tmp_path, {USER: PASSWORD})
    with ThreadServer(issuer.app()) as server:
        reg = start_registry(tmp_path, {"token": {"realm": f"{server.url}/token", "service": issuer.service,
                                                  "issuer": issuer.issuer, "rootcertbundle": str(issuer.bundle)}})
        try:
            yield reg, issuer
        finally:
            stop_registry(reg)
