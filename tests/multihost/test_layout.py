"""The harness's pure parts: names, addresses, netem arguments, the state file."""
from __future__ import annotations

from pathlib import Path

import pytest

from cli.dev import layout
from cli.dev.netns import netem_args
from cli.dev.state import ClusterState, NodeRecord


def test_node_names_and_addresses_are_stable_and_distinct():
    names = layout.node_names(3, 4)
    assert names == ["m1", "m2", "m3", "w1", "w2", "w3", "w4"]
    addrs = [layout.node_address(n) for n in names + ["p1"]]
    assert len(set(addrs)) == len(addrs)
    assert layout.node_address("m1") == "10.77.0.11" and layout.node_address("w1") == "10.77.0.101"
    assert layout.node_address("w2") == layout.node_address(layout.node_names(1, 2)[2]), "independent of the mix"


@pytest.mark.parametrize("managers,workers,field", [(0, 1, "--managers"), (90, 0, "--managers"), (1, -1, "--workers"),
                                                   (1, 100, "--workers")])
def test_node_counts_out_of_range_name_the_option(managers, workers, field):
    with pytest.raises(ValueError, match=field):
        layout.node_names(managers, workers)


@pytest.mark.parametrize("bad", ["", "-a", "A", "a_b", "a" * 25, "a/b", "a..b."])
def test_bad_cluster_names_are_refused(bad):
    with pytest.raises(ValueError, match="--name"):
        layout.validate_cluster_name(bad)


def test_a_cluster_claims_only_its_own_namespaces_and_cgroups():
    ns = layout.owned_netns_re("a")
    assert ns.match("shl-a-m1") and ns.match("shl-a-net") and ns.match("shl-a-w12") and ns.match("shl-a-p1")
    assert not ns.match("shl-a-b-m1"), "cluster 'a-b' is not cluster 'a'"
    assert not ns.match("shl-ab-m1") and not ns.match("shl-a-m1x")
    cg = layout.owned_cgroup_re("a")
    assert cg.match(layout.cgroup_parent("a", "w3")) and not cg.match(layout.cgroup_parent("a-b", "w3"))


def test_socket_paths_that_do_not_fit_are_refused():
    with pytest.raises(ValueError, match="--name"):
        layout.node_paths(Path("/tmp/" + "x" * 100), "m1")


def test_netem_arguments():
    assert netem_args(delay="50ms", loss="1%") == ["delay", "50ms", "loss", "1%"]
    assert netem_args(delay="100ms", jitter="10ms") == ["delay", "100ms", "10ms"]
    assert netem_args(loss="0.5") == ["loss", "0.5%"]
    for kwargs, field in (({"delay": "50"}, "--delay"), ({"loss": "150%"}, "--loss"), ({"jitter": "1ms"}, "--jitter"),
                          ({}, "--delay")):
        with pytest.raises(ValueError, match=field):
            netem_args(**kwargs)


def test_state_file_round_trip():
    st = ClusterState(name="c", dir="/tmp/x/c", bridge_netns="shl-c-net",
                      nodes={"m1": NodeRecord(name="m1", role="manager", address="10.77.0.11", netns="shl-c-m1",
                                              pid=42, start_time=7, cut=True, join_seconds=0.5)})
    assert ClusterState.from_json(st.to_json()) == st
