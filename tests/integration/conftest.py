import os
import shutil
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
