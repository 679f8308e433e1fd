"""`shoal login`: store registry credentials on this node for pulls and pushes."""
from __future__ import annotations

import sys
from typing import Optional

import typer

from cli.client import CLIError
from cli.commands.common import client


def login(ctx: typer.Context,
          server: Optional[str] = typer.Argument(None, help="Registry host[:port] (default: Docker Hub)."),
          username: Optional[str] = typer.Option(None, "--username", "-u", help="Username."),
          password: Optional[str] = typer.Option(None, "--password", "-p",
                                                 help="Password (prefer --password-stdin)."),
          password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin.")) -> None:
    """Log in to a registry: the daemon checks the credentials and keeps them (mode 0600)."""
    if password is not None and password_stdin:
        raise CLIError("--password and --password-stdin are mutually exclusive", 2)
    if password_stdin:
        if username is None:
            raise CLIError("--username: required with --password-stdin", 2)
        password = sys.stdin.read().rstrip("\r\n")
    if username is None:
        username = typer.prompt("Username")
    if password is None:
        password = typer.prompt("Password", hide_input=True)
    if not username:
        raise CLIError("--username: must not be empty", 2)
    result = client(ctx).post("/auth", body={"username": username, "password": password,
                                             "serveraddress": server or "docker.io"})
    typer.echo(result.get("Status", "Login Succeeded"))
