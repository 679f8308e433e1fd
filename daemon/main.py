"""`shoald`: the node daemon, in the foreground."""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Optional

import typer

from daemon.node import NodeConfig, NodeDaemon, NodeError, default_hostname
from daemon.remap import RemapError, parse_remap
from daemon.server import make_app, serve_unix

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]})


@app.command()
def shoald(
    state_dir: Path = typer.Option(Path("/var/lib/shoal"), "--state-dir",
                                   help="Directory for all of this node's state: the cluster log, certificates, images and containers."),
    socket_path: Path = typer.Option(Path("/run/shoal/shoal.sock"), "--socket",
                                     help="Unix socket the CLI talks to; created root-only (mode 0600)."),
    hostname: Optional[str] = typer.Option(None, "--hostname", help="Name this node reports to the cluster (default: the host's name)."),
    cgroup_parent: str = typer.Option("shoal", "--cgroup-parent", help="Cgroup under which every container's cgroup is made."),
    listen_addr: str = typer.Option("0.0.0.0:2377", "--listen-addr", help="Address for the cluster port (mutual TLS between nodes)."),
    advertise_addr: str = typer.Option("", "--advertise-addr", help="Address other nodes use to reach this one."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
    runtime: str = typer.Option("shoal", "--runtime", help="Container engine for the OCI bundles: shoal (built in), runc or crun."),
    force_new_cluster: bool = typer.Option(False, "--force-new-cluster",
                                           help="Disaster recovery: restart this manager as a cluster of one from its state, keeping services and tasks."),
    userns_remap: str = typer.Option("", "--userns-remap", metavar="default|USER[:GROUP]|UID:GID:SIZE",
                                     help="Run every container in a user namespace, as dockerd's flag: container root "
                                          "(uid 0) is host uid START, an unprivileged user. 'default' uses the user "
                                          "shoalremap (created, with the first free 65536 ids from 100000 added to "
                                          "/etc/subuid and /etc/subgid, when missing); USER[:GROUP] uses that user's "
                                          "first ranges in /etc/subuid and /etc/subgid; UID:GID:SIZE gives the range "
                                          "outright. Image layers are id-mapped (nothing is copied); binds are left "
                                          "as they are; new named volumes belong to the remapped root. The state "
                                          "dir becomes 0711 (its secrets stay 0700), and every directory above it "
                                          "needs o+x."),
) -> None:
    """Run the Shoal node daemon in the foreground. Every node is a worker; after `shoal swarm
    init` (or joining as a manager) it is a manager too. Containers keep running when the daemon
    stops and are re-adopted when it starts again."""
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        typer.echo(f"shoald: --log-level: unknown level {log_level!r} (debug, info, warning or error)", err=True)
        raise typer.Exit(2)
    if runtime not in ("shoal", "runc", "crun"):
        typer.echo(f"shoald: --runtime: must be shoal, runc or crun, got {runtime!r}", err=True)
        raise typer.Exit(2)
    remap = None
    if userns_remap:
        try:
            remap = parse_remap(userns_remap)
        except RemapError as exc:
            typer.echo(f"shoald: {exc}", err=True)
            raise typer.Exit(2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = NodeConfig(state_dir=state_dir, hostname=hostname or default_hostname(), cgroup_parent=cgroup_parent,
                        listen_addr=listen_addr, advertise_addr=advertise_addr, runtime=runtime,
                        userns_remap=remap)
    try:
        asyncio.run(_serve(config, socket_path, force_new_cluster))
    except PermissionError as exc:
        typer.echo(f"shoald: {exc.filename or ''}: permission denied (shoald must run as root)", err=True)
        raise typer.Exit(1)
    except OSError as exc:
        typer.echo(f"shoald: {exc}", err=True)
        raise typer.Exit(1)


async def _serve(config: NodeConfig, socket_path: Path, force_new_cluster: bool = False) -> None:
    node = NodeDaemon(config)
    try:
        await node.start(force_new_cluster)
    except NodeError as exc:
        raise SystemExit(f"shoald: {exc}")
    runner = await serve_unix(make_app(node), socket_path)
    logging.getLogger("shoal").info("shoald listening on %s (state in %s)", socket_path, config.state_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logging.getLogger("shoal").info("shutting down; containers keep running")
    await runner.cleanup()
    await node.stop()
    try:
        socket_path.unlink()
    except OSError:
        pass


def main() -> None:
    app(prog_name="shoald")


if __name__ == "__main__":
    sys.exit(main())
