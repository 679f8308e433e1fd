"""What a supplementary group of a container's process may be (ContainerSpec.Groups, compose
`group_add`, `--group`): a group name, looked up in the image's /etc/group on the node, or a
numeric gid, which need not be named there (as Docker's --group-add). Pure: the CLI and the
managers check with it, so that a typo is refused before any task is made; whether a name exists
is only known on the node, which rejects the task naming it (worker/runtime/spec.py).
"""
from __future__ import annotations

import re

# The characters of a group name that shadow-utils allows (':' or ',' would break /etc/group).
_NAME = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")
MAX_GID = 2**31 - 1  # the kernel takes up to 2**32 - 2, runc only this far


def check_group(value: str) -> None:
    """ValueError saying why value is neither a group name nor a gid."""
    if not isinstance(value, str) or not value:
        raise ValueError("must be a group name or a numeric gid, got an empty value")
    if value.isascii() and value.isdigit():
        if int(value) > MAX_GID:
            raise ValueError(f"gid {value} is out of range (0-{MAX_GID})")
        return
    if len(value) > 256 or not _NAME.match(value):
        raise ValueError(f"{value!r} is not a group name or a numeric gid")
