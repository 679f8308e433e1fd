"""Fixtures for the overlay data-plane tests: a small fabric of "nodes" (network namespaces
on one bridge, itself in a namespace of its own), a NodeNetworks per node, and "containers"
(processes in a fresh network namespace each). Everything is removed afterwards, whatever
happened; nothing is ever created in the host's own namespace."""
from __future__ import annotations

import os
import shutil

import pytest

from tests.overlay.fabric import Fabric, host_leftovers

NEEDS = ("ip", "bridge", "nft", "nsenter", "unshare")


def pytest_collection_modifyitems(config, items):
    missing = [t for t in NEEDS if shutil.which(t) is None]
    reason = ("overlay tests need root" if os.geteuid() != 0 else
              f"overlay tests need {', '.join(missing)} (scripts/install-deps.sh)" if missing else None)
    if reason:
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if "tests/overlay/" in str(item.fspath) and item.get_closest_marker("root"):
                item.add_marker(skip)


@pytest.fixture
def fabric(tmp_path):
    """fabric(n) -> a Fabric of n nodes with NodeNetworks ready; torn down at the end."""
    made: list[Fabric] = []

    def make(n: int = 2, **node_kwargs) -> Fabric:
        f = Fabric(n, tmp_path, **node_kwargs)
        made.append(f)
        f.up()
        return f

    try:
        yield make
    finally:
        errors = []
        for f in made:
            try:
                f.down()
            except Exception as exc:  # keep tearing down the others
                errors.append(exc)
        left = [x for f in made for x in host_leftovers(f.tag)]
        assert not left, f"left on the host: {left}"
        if errors:
            raise errors[0]
