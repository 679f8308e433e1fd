"""Autolock in the CLI: `shoal swarm unlock`, `shoal swarm unlock-key`, and the `--autolock`
option of `swarm init` / `swarm update` (registered in cli/commands/swarm.py)."""
from __future__ import annotations

import sys
from typing import Optional

import click
import typer
from typer.core import TyperCommand

from cli.client import CLIError
from cli.commands.common import client

AUTOLOCK_HELP = ("Encrypt the managers' state at rest with a key that is shown once; a restarted manager "
                 "waits for `shoal swarm unlock`. --autolock alone means true.")
_BOOL_WORDS = {"true": True, "1": True, "false": False, "0": False}


class OptionalBoolCommand(TyperCommand):
    """Lets `--autolock` stand alone (meaning true) as in docker, besides `--autolock=false`
    and `--autolock false`; click options take a value or are flags, not both."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out = []
        for i, arg in enumerate(args):
            following = args[i + 1].lower() if i + 1 < len(args) else ""
            if arg == "--autolock" and following not in _BOOL_WORDS:
                arg = "--autolock=true"
            out.append(arg)
        return super().parse_args(ctx, out)


def parse_autolock(value: Optional[str]) -> Optional[bool]:
    if value is None:
        return None
    try:
        return _BOOL_WORDS[value.strip().lower()]
    except KeyError:
        raise CLIError(f"--autolock: must be true or false, got {value!r}", 2) from None


def print_unlock_command(key: str) -> None:
    """Docker's wording: the key is shown once, here."""
    if not key:
        return
    typer.echo("To unlock a swarm manager after it restarts, run the `shoal swarm unlock`\n"
               f"command and provide the following key:\n\n    {key}\n\n"
               "Please remember to store this key in a password manager, since without it you\n"
               "will not be able to restart the manager.")


def _read_key() -> str:
    """From the terminal without echo, or one line of stdin when it is not a terminal (scripts)."""
    if sys.stdin.isatty():
        import getpass
        return getpass.getpass("Please enter unlock key: ")
    return sys.stdin.readline()


def unlock(ctx: typer.Context) -> None:
    """Unlock a manager that restarted with autolock on (reads the key from the terminal or stdin)."""
    c = client(ctx)
    state = c.get("/info").get("Swarm", {}).get("LocalNodeState", "")
    if state == "inactive":
        raise CLIError("Error: This node is not part of a swarm")
    if state != "locked":
        raise CLIError("Error: swarm is not locked")
    key = _read_key().strip()
    if not key:
        raise CLIError("unlock key: empty (paste the SWMKEY-1-… key `swarm init --autolock` or "
                       "`swarm unlock-key` showed)", 2)
    c.post("/swarm/unlock", body={"UnlockKey": key})


def unlock_key(ctx: typer.Context,
               quiet: bool = typer.Option(False, "--quiet", "-q", help="Only display the key."),
               rotate: bool = typer.Option(False, "--rotate", help="Rotate the key: once every manager applied it, "
                                                                    "the old one no longer unlocks them.")) -> None:
    """Show (or rotate) the key that unlocks a restarted manager."""
    c = client(ctx)
    if rotate:
        swarm = c.get("/swarm")
        if not swarm.get("Spec", {}).get("EncryptionConfig", {}).get("AutoLockManagers"):
            raise CLIError("cannot rotate because autolock is not turned on (shoal swarm update --autolock=true)")
        c.post("/swarm/update", params={"version": str(swarm["Version"]["Index"]), "rotateManagerUnlockKey": "true"},
               body=swarm["Spec"])
        if not quiet:
            typer.echo("Successfully rotated manager unlock key.\n")
    key = c.get("/swarm/unlockkey").get("UnlockKey", "")
    if not key:
        raise CLIError("no unlock key is set: autolock is off (shoal swarm update --autolock=true)")
    if quiet:
        typer.echo(key)
        return
    print_unlock_command(key)
