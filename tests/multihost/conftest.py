"""Fixtures for multi-host tests: real clusters through the same code as `shoal dev up`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

from cli.dev.cluster import REPO, DevCluster, supports_join
from tests.multihost.helpers import unique_name


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="multi-host tests need root (network namespaces, cgroups, mounts)")
        for item in items:
            if "multihost" in str(item.fspath) and not item.fspath.basename == "test_layout.py":
                item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)  # the cluster fixture prints daemon logs when a test failed


def _failed(request) -> bool:
    return any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False) for w in ("setup", "call"))


@pytest.fixture
def cluster(request) -> Iterator[Callable[..., DevCluster]]:
    """cluster(managers=1, workers=2, init=True, join=True) -> a running DevCluster, formed
    with the real swarm commands; every cluster made is torn down afterwards, whatever happened."""
    made: list[DevCluster] = []

    def make(managers: int = 1, workers: int = 2, *, init: bool = True, join: bool = True,
             timeout: float = 60.0) -> DevCluster:
        c = DevCluster(unique_name())
        made.append(c)
        c.up(managers, workers, init=init, join=join, timeout=timeout)
        return c

    try:
        yield make
    finally:
        leftovers: list[str] = []
        for c in made:
            try:
                if _failed(request) and c.exists():
                    for rec in c.state().nodes.values():
                        if rec.role != "probe":
                            sys.stderr.write(f"--- {c.name}/{rec.name} shoald log (tail) ---\n"
                                             f"{c.log_tail(rec.name, 40)}\n")
            finally:
                leftovers += c.down().leftovers  # every cluster, even if an earlier one failed to go
        assert not leftovers, f"the harness left things behind: {leftovers}"


@pytest.fixture
def join_available() -> None:
    """Skips a test that needs a joined cluster while `shoal swarm join` does not exist yet."""
    if not supports_join():
        pytest.skip("`shoal swarm join` is not available yet (`shoal swarm join --help` fails)")


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("image") / "busybox.tar"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make-busybox-image.py"), str(out)], check=True,
                   capture_output=True)
    return out
