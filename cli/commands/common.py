"""Helpers shared by the command groups."""
from __future__ import annotations

import typer

from cli.client import Client


def client(ctx: typer.Context) -> Client:
    root = ctx.find_root()
    return root.obj if isinstance(root.obj, Client) else Client()


def kv_list(items: list[str] | None, field: str) -> dict[str, str]:
    from cli.client import CLIError
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not key:
            raise CLIError(f"{field}: {item!r} must be KEY=VALUE", 2)
        out[key] = value
    return out
