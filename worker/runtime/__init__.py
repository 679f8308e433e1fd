"""Shoal's container runtime: OCI bundles, a node supervisor that forks one shim per container,
and Shoal's own init (or runc / crun) to create them."""
from .cgroups import CgroupLayout, Resources, detect_layout
from .config import (ContainerConfig, ContainerExistsError, ContainerNotFoundError, ContainerState,
                     ContainerStateError, Mount, UserNamespace)
from .runtime import ContainerStartError, ExecProcess, ExecResult, Runtime

__all__ = ["CgroupLayout", "ContainerConfig", "ContainerExistsError", "ContainerNotFoundError",
           "ContainerStartError", "ContainerState", "ContainerStateError", "ExecProcess", "ExecResult", "Mount",
           "Resources", "Runtime", "UserNamespace", "detect_layout"]
