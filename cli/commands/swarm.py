"""`shoal swarm ...`"""
from __future__ import annotations

from typing import Optional

import typer

from cli.commands.common import client
from cli.commands import unlock as unlock_cmds
from cli.commands.unlock import AUTOLOCK_HELP, OptionalBoolCommand, parse_autolock, print_unlock_command

app = typer.Typer(help="Manage the swarm.", no_args_is_help=True)


@app.command("init", cls=OptionalBoolCommand)
def init(ctx: typer.Context,
         advertise_addr: str = typer.Option("", "--advertise-addr", help="Address other nodes use to reach this manager (IP[:PORT])."),
         listen_addr: str = typer.Option("", "--listen-addr", help="Address to serve the cluster port on (IP[:PORT])."),
         autolock: Optional[str] = typer.Option(None, "--autolock", metavar="[=true|false]", help=AUTOLOCK_HELP)) -> None:
    """Make this node the first manager of a new swarm."""
    body: dict = {"AdvertiseAddr": advertise_addr, "ListenAddr": listen_addr}
    locked = parse_autolock(autolock)
    if locked:
        body["Spec"] = {"EncryptionConfig": {"AutoLockManagers": True}}
    c = client(ctx)
    node_id = c.post("/swarm/init", body=body)
    typer.echo(f"Swarm initialized: current node ({node_id}) is now a manager.")
    if locked:
        typer.echo("")
        print_unlock_command(c.get("/swarm/unlockkey").get("UnlockKey", ""))


@app.command("inspect")
def inspect(ctx: typer.Context) -> None:
    """Show the swarm's settings as JSON."""
    from cli.output import print_json
    print_json(client(ctx).get("/swarm"))


@app.command("join")
def join(ctx: typer.Context,
         addr: str = typer.Argument(..., help="A manager's address, HOST[:PORT] (port 2377 by default)."),
         token: str = typer.Option(..., "--token", help="The join token (SHLTKN-1-…); it decides the role."),
         advertise_addr: str = typer.Option("", "--advertise-addr", help="Address other nodes use to reach this node."),
         listen_addr: str = typer.Option("", "--listen-addr", help="Address to listen on (managers).")) -> None:
    """Join a swarm as a worker or a manager."""
    client(ctx).post("/swarm/join", body={"RemoteAddrs": [addr], "JoinToken": token,
                                                    "AdvertiseAddr": advertise_addr, "ListenAddr": listen_addr})
    role = client(ctx).get("/info").get("Swarm", {}).get("Role", "worker")
    typer.echo(f"This node joined a swarm as a {role}.")


@app.command("join-token")
def join_token(ctx: typer.Context,
               role: str = typer.Argument(..., help="worker or manager."),
               quiet: bool = typer.Option(False, "--quiet", "-q", help="Only display the token."),
               rotate: bool = typer.Option(False, "--rotate", help="Rotate the token: the old one stops working at once.")) -> None:
    """Print (or rotate) the command that joins a node with this role."""
    from cli.client import CLIError
    if role not in ("worker", "manager"):
        raise CLIError(f"ROLE: must be worker or manager, got {role!r}", 2)
    c = client(ctx)
    swarm = c.get("/swarm")
    if rotate:
        flag = "rotateWorkerToken" if role == "worker" else "rotateManagerToken"
        c.post("/swarm/update", params={"version": str(swarm["Version"]["Index"]), flag: "true"}, body=swarm["Spec"])
        swarm = c.get("/swarm")
        if not quiet:
            typer.echo(f"Successfully rotated {role} join token.\n")
    token = swarm["JoinTokens"]["Worker" if role == "worker" else "Manager"]
    if quiet:
        typer.echo(token)
        return
    node = c.get("/nodes/self")
    addr = (node.get("ManagerStatus") or {}).get("Addr", "")
    typer.echo(f"To add a {role} to this swarm, run the following command:\n\n    shoal swarm join --token {token} {addr}\n")


@app.command("leave")
def leave(ctx: typer.Context, force: bool = typer.Option(False, "--force", "-f", help="Leave even as the last manager (erases the swarm's state).")) -> None:
    """Leave the swarm: this node's tasks are stopped and removed."""
    client(ctx).post("/swarm/leave", params={"force": "true" if force else "false"})
    typer.echo("Node left the swarm.")


@app.command("update", cls=OptionalBoolCommand)
def update(ctx: typer.Context,
           cert_expiry: str = typer.Option(None, "--cert-expiry", help="Validity period for node certificates (e.g. 2160h)."),
           task_history_limit: int = typer.Option(None, "--task-history-limit", help="Task history retention limit per slot."),
           dispatcher_heartbeat: str = typer.Option(None, "--dispatcher-heartbeat", help="Heartbeat period of worker sessions (e.g. 2s)."),
           autolock: Optional[str] = typer.Option(None, "--autolock", metavar="[=true|false]", help=AUTOLOCK_HELP)) -> None:
    """Update the swarm's settings."""
    from api.units import parse_duration
    from cli.client import CLIError
    locked = parse_autolock(autolock)
    c = client(ctx)
    swarm = c.get("/swarm")
    spec = swarm["Spec"]
    try:
        if cert_expiry is not None:
            spec.setdefault("CAConfig", {})["NodeCertExpiry"] = parse_duration(cert_expiry, "--cert-expiry")
        if dispatcher_heartbeat is not None:
            spec.setdefault("Dispatcher", {})["HeartbeatPeriod"] = parse_duration(dispatcher_heartbeat, "--dispatcher-heartbeat")
    except ValueError as exc:
        raise CLIError(str(exc), 2) from None
    if task_history_limit is not None:
        if task_history_limit < 0:
            raise CLIError("--task-history-limit: must not be negative", 2)
        spec.setdefault("Orchestration", {})["TaskHistoryRetentionLimit"] = task_history_limit
    was_locked = bool(spec.get("EncryptionConfig", {}).get("AutoLockManagers"))
    if locked is not None:
        spec.setdefault("EncryptionConfig", {})["AutoLockManagers"] = locked
    c.post("/swarm/update", params={"version": str(swarm["Version"]["Index"])}, body=spec)
    typer.echo("Swarm updated.")
    if locked and not was_locked:  # as docker: the new key is shown once, when autolock turns on
        typer.echo("")
        print_unlock_command(c.get("/swarm/unlockkey").get("UnlockKey", ""))


@app.command("ca")
def ca(ctx: typer.Context,
       rotate: bool = typer.Option(False, "--rotate", help="Replace the root CA and reissue every node's certificate."),
       detach: bool = typer.Option(False, "--detach", "-d", help="Do not wait for the rotation to finish."),
       quiet: bool = typer.Option(False, "--quiet", "-q", help="Suppress progress output.")) -> None:
    """Print the root CA certificate(s), or rotate the root CA."""
    import time
    c = client(ctx)
    if rotate:
        c.post("/swarm/ca/rotate")
        while not detach:
            swarm = c.get("/swarm")
            want = swarm.get("TLSInfo", {}).get("CertIssuerPublicKey", "")
            nodes = c.get("/nodes")
            done = sum(1 for n in nodes if (n.get("Description", {}).get("TLSInfo") or {}).get("CertIssuerPublicKey") == want)
            if not quiet:
                typer.echo(f"rotated TLS certificates: {done}/{len(nodes)} nodes")
            if not swarm.get("RootRotationInProgress"):
                if not quiet:
                    typer.echo("rotated CA certificates: done")
                break
            time.sleep(1)
    swarm = c.get("/swarm")
    typer.echo(swarm.get("TLSInfo", {}).get("TrustRoot", "").strip())


app.command("unlock")(unlock_cmds.unlock)
app.command("unlock-key")(unlock_cmds.unlock_key)
