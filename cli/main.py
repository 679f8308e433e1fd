"""`shoal`: the command line."""
from __future__ import annotations

import sys
from typing import Optional

import click
import typer

from cli.client import CLIError, Client
from cli.commands import image, login, tasks, network, node, secret, service, stack, swarm
from cli import dev

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Shoal: a multi-host container orchestrator in the spirit of Docker Swarm mode.")


@app.callback()
def _global(ctx: typer.Context,
            host: Optional[str] = typer.Option(None, "--host", "-H", help="Daemon socket (default: $SHOAL_HOST or unix:///run/shoal/shoal.sock).")) -> None:
    ctx.obj = Client(host) if host is not None else None


app.add_typer(swarm.app, name="swarm")
app.add_typer(node.app, name="node")
app.add_typer(service.app, name="service")
app.add_typer(image.app, name="image")
app.command("login")(login.login)
app.command("exec", context_settings={"allow_interspersed_args": False})(tasks.exec_)
app.command("stats")(tasks.stats)
app.add_typer(stack.app, name="stack")
app.add_typer(network.app, name="network")
app.add_typer(secret.secret_app, name="secret")
app.add_typer(secret.config_app, name="config")
app.add_typer(dev.app, name="dev")


def main() -> None:
    try:
        rv = app(prog_name="shoal", standalone_mode=False)
    except CLIError as exc:
        typer.echo(str(exc), err=True)
        sys.exit(exc.code)
    except click.exceptions.Abort:
        typer.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # never a traceback for the user
        typer.echo(f"shoal: unexpected error: {exc}", err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
