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


def filters_param(items: list[str]) -> dict[str, str] | None:
    """Docker's repeated `--filter KEY=VALUE` as the API's `filters` query parameter (None: no filter)."""
    import json
    from cli.client import CLIError
    filters: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CLIError(f"--filter: {item!r} must be KEY=VALUE", 2)
        filters.setdefault(key, []).append(value)
    return {"filters": json.dumps(filters)} if filters else None


def remove_each(c: Client, kind: str, refs: list[str]) -> None:
    """DELETE /<kind>/<ref> for each ref, as docker does: echo what went, report what did not
    (one line each), carry on, and exit non-zero if any failed."""
    from cli.client import CLIError
    failed = False
    for ref in refs:
        try:
            c.delete(f"/{kind}/{ref}")
            typer.echo(ref)
        except CLIError as exc:
            typer.echo(str(exc), err=True)
            failed = True
    if failed:
        raise typer.Exit(1)
