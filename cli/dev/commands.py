"""`shoal dev ...`: a local multi-host cluster, one network namespace per node."""
from __future__ import annotations

import functools
import time
from typing import Callable, List, TypeVar

import typer

from cli.client import CLIError
from cli.dev import layout
from cli.dev.cluster import DevCluster, HarnessError, list_clusters, teardown
from cli.dev.netns import NetError
from cli.output import table

app = typer.Typer(help="A local multi-host cluster for development and tests: one network namespace, "
                       "address and shoald per node (needs root).", no_args_is_help=True)

F = TypeVar("F", bound=Callable)

NAME = typer.Option(layout.DEFAULT_CLUSTER, "--name", envvar="SHOAL_DEV_CLUSTER", help="The cluster's name.")
NODE = typer.Argument(..., help="Node name: m1, m2, ... (managers), w1, w2, ... (workers).")


def _errors(fn: F) -> F:
    """Harness errors become the CLI's one-line errors."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (HarnessError, NetError, ValueError) as exc:
            raise CLIError(str(exc)) from None
    return wrapper  # type: ignore[return-value]


def _cluster(name: str) -> DevCluster:
    c = DevCluster(name)
    if not c.exists():
        others = list_clusters()
        hint = f" (existing: {', '.join(others)})" if others else ""
        raise HarnessError(f"--name: no dev cluster {name!r}{hint}; start one with `shoal dev up --name {name}`")
    return c


@app.command("up")
@_errors
def up(managers: int = typer.Option(1, "--managers", "-m", help="Manager nodes (m1 initializes the swarm)."),
       workers: int = typer.Option(2, "--workers", "-w", help="Worker nodes."),
       name: str = NAME,
       init: bool = typer.Option(True, "--init/--no-init", help="Run `shoal swarm init` on m1."),
       join: bool = typer.Option(True, "--join/--no-join", help="Join the other nodes with `shoal swarm join`."),
       log_level: str = typer.Option("info", "--log-level", help="The daemons' log level."),
       keep: bool = typer.Option(False, "--keep-on-failure", help="Leave a failed cluster up to look at it."),
       timeout: float = typer.Option(90.0, "--timeout", help="Seconds for the whole bring-up.")) -> None:
    """Create the namespaces and the bridge, start a shoald per node and form the swarm."""
    c = DevCluster(name)
    existed = c.exists()
    t0 = time.monotonic()
    try:
        joins = c.up(managers, workers, init=init, join=join, log_level=log_level, timeout=timeout)
    except BaseException:
        if not existed and c.exists() and not keep:
            typer.echo(f"shoal dev up failed; removing cluster {name} (--keep-on-failure to keep it)", err=True)
            teardown(name)
        raise
    _print_nodes(c)
    for node, seconds in joins.items():
        typer.echo(f"{node}: shoal swarm join took {seconds:.2f}s")
    typer.echo(f"cluster {name} up in {time.monotonic() - t0:.1f}s; try `shoal dev exec m1 -- shoal node ls`"
               + ("" if name == layout.DEFAULT_CLUSTER else f" with --name {name}"))


@app.command("down")
@_errors
def down(name: str = NAME,
         all_: bool = typer.Option(False, "--all", help="Every dev cluster on this machine.")) -> None:
    """Remove every process, container, mount, cgroup and namespace of the cluster.

    Works from the cluster's state file (or from its names alone) after a crash of the harness
    too; running it twice is fine."""
    names = list_clusters() if all_ else [layout.validate_cluster_name(name)]
    failed = False
    for n in names:
        report = teardown(n)
        typer.echo(f"{n}: {report.summary()}")
        failed |= bool(report.leftovers)
    if failed:
        raise CLIError("shoal dev down: some things could not be removed (see above)")


@app.command("ls")
@_errors
def ls(name: str = NAME) -> None:
    """List the nodes with address, daemon pid and state."""
    _print_nodes(_cluster(name))


def _print_nodes(c: DevCluster) -> None:
    rows = [[s.name, s.role, s.address, str(s.pid or "-"), s.display_state, s.netem or "-"] for s in c.ls()]
    table(["NODE", "ROLE", "ADDRESS", "PID", "STATE", "NETEM"], rows)


@app.command("exec", context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})
@_errors
def exec_(node: str = NODE,
          cmd: List[str] = typer.Argument(..., help="The command (after --)."),
          name: str = NAME) -> None:
    """Run CMD in the node's network namespace, SHOAL_HOST at its daemon.

    Example: shoal dev exec w1 -- shoal node ls (options such as --name go before NODE)."""
    args = list(cmd)
    if args and args[0] == "--":  # click passes the separator through once positionals have begun
        args = args[1:]
    _cluster(name).exec_replace(node, args)


def _verb(fn: Callable[[DevCluster, str], None], done: str) -> Callable:
    @_errors
    def command(node: str = NODE, name: str = NAME) -> None:
        fn(_cluster(name), node)
        typer.echo(f"{node} {done}")
    command.__doc__ = fn.__doc__
    return command


app.command("kill", help="SIGKILL the node's daemon (its containers keep running).")(_verb(DevCluster.kill, "killed"))
app.command("stop", help="SIGTERM the node's daemon and wait for it to exit.")(_verb(DevCluster.stop, "stopped"))
app.command("start", help="Start the node's daemon again on the same state.")(_verb(DevCluster.start, "started"))
app.command("restart", help="Stop, then start the node's daemon.")(_verb(DevCluster.restart, "restarted"))
app.command("cut", help="Take the node off the network (its bridge port goes down).")(_verb(DevCluster.cut, "cut off"))
app.command("heal", help="Put a cut node back on the network.")(_verb(DevCluster.heal, "back on the network"))


@app.command("netem")
@_errors
def netem(node: str = NODE,
          delay: str = typer.Option("", "--delay", help="Added delay on what the node sends, e.g. 50ms."),
          jitter: str = typer.Option("", "--jitter", help="Delay variation, e.g. 10ms (with --delay)."),
          loss: str = typer.Option("", "--loss", help="Packet loss, e.g. 1%."),
          clear: bool = typer.Option(False, "--clear", help="Remove delay and loss."),
          name: str = NAME) -> None:
    """Delay and lose the node's packets (tc netem on its interface)."""
    c = _cluster(name)
    if clear:
        if delay or loss or jitter:
            raise HarnessError("--clear: cannot be combined with --delay, --jitter or --loss")
        c.clear_netem(node)
        typer.echo(f"{node}: netem cleared")
        return
    c.netem(node, delay=delay, loss=loss, jitter=jitter)
    typer.echo(f"{node}: netem {c.record(node).netem}")


@app.command("logs")
@_errors
def logs(node: str = NODE,
         lines: int = typer.Option(50, "--tail", "-n", help="How many of the last lines."),
         name: str = NAME) -> None:
    """Print the end of the node's shoald log."""
    c = _cluster(name)
    c.record(node)
    typer.echo(c.log_tail(node, lines))
