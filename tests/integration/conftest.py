import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.harness import REPO, new_daemon


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="integration tests need root (namespaces, cgroups, overlayfs)")
        for item in items:
            if "integration" in str(item.fspath):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("image") / "busybox.tar"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make-busybox-image.py"), str(out)], check=True)
    return out


@pytest.fixture
def daemon():
    d = new_daemon()
    try:
        d.start()
        yield d
    finally:
        d.cleanup()


@pytest.fixture
def daemons(busybox_tar):
    """A factory of named daemons on this host, each with the busybox image; all cleaned up."""
    made = []
    try:
        def add(name):
            d = new_daemon(name)
            made.append(d)
            d.start()
            d.cli("image", "import", str(busybox_tar), "busybox:latest")
            return d
        yield add
    finally:
        for d in made:
            d.cleanup()
