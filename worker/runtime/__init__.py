"""Shoal's container runtime: OCI bundles run by a detached per-container shim."""
from .cgroups import CgroupLayout, Resources, detect_layout
from .config import (ContainerConfig, ContainerExistsError, ContainerNotFoundError, ContainerState,
                     ContainerStateError)
from .runtime import ContainerStartError, Runtime

__all__ = ["CgroupLayout", "ContainerConfig", "ContainerExistsError", "ContainerNotFoundError",
           "ContainerStartError", "ContainerState", "ContainerStateError", "Resources", "Runtime",
           "detect_layout"]
