"""The local multi-host harness: `shoal dev ...` and the multi-host test fixtures.

cluster.DevCluster is the one API both use; layout (names, addresses), state (the state
file), netns (ip/tc) and procs (processes, cgroups, mounts) are its parts."""
from cli.dev.commands import app

__all__ = ["app"]
