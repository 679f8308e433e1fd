"""Where a secret's or config's file appears in a container (shared by managers and workers)."""
from __future__ import annotations

import posixpath


def target_path(kind: str, name: str) -> str:
    """An absolute name is used as it is; a relative one is under /run/secrets for a secret
    and under / for a config, as Docker places them."""
    if name.startswith("/"):
        return posixpath.normpath(name)
    return posixpath.join("/run/secrets" if kind == "secret" else "/", name)
