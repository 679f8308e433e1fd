"""`shoal secret ...` and `shoal config ...`: as `docker secret` and `docker config` manage them.

The two share everything but their wording: a secret's data is never shown again after create;
a config's is (inspect --pretty prints it as text)."""
from __future__ import annotations

import base64
import sys
from typing import List

import typer

from cli.client import CLIError
from cli.commands.common import client, filters_param, kv_list, remove_each
from cli.output import ago, print_json, table

MAX_SIZE = 500 * 1024


def read_data(path: str, kind: str) -> bytes:
    """The data from FILE or '-' (stdin), refused before any call when too big or empty."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_SIZE + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(MAX_SIZE + 1)
    except OSError as exc:
        raise CLIError(f"FILE: cannot read {path}: {exc.strerror or exc}", 1) from None
    if len(data) > MAX_SIZE:
        raise CLIError(f"FILE: {kind} data must be at most 500 KiB, {path} is larger", 1)
    if not data:
        raise CLIError(f"FILE: {kind} data must not be empty ({path} is)", 1)
    return data


def make_app(kind: str) -> typer.Typer:
    plural = kind + "s"
    app = typer.Typer(help=f"Manage {plural}.", no_args_is_help=True)

    @app.command("create")
    def create(ctx: typer.Context, name: str = typer.Argument(..., help=f"{kind.capitalize()} name."),
               file: str = typer.Argument(..., help="File with the data, or - for standard input."),
               label: List[str] = typer.Option([], "--label", "-l", help="Label KEY=VALUE.")) -> None:
        body = {"Name": name, "Labels": kv_list(label, "--label"),
                "Data": base64.b64encode(read_data(file, kind)).decode("ascii")}
        typer.echo(client(ctx).post(f"/{plural}/create", body=body)["ID"])
    create.__doc__ = f"Create a {kind} from a file or standard input."

    @app.command("ls")
    def ls(ctx: typer.Context, quiet: bool = typer.Option(False, "--quiet", "-q", help="Only display IDs."),
           filter_: List[str] = typer.Option([], "--filter", "-f", help="Filter KEY=VALUE (id, name, label).")) -> None:
        objs = client(ctx).get(f"/{plural}", params=filters_param(filter_))
        if quiet:
            for o in objs:
                typer.echo(o["ID"])
            return
        table(["ID", "NAME", "CREATED", "UPDATED"],
              [[o["ID"], o["Spec"]["Name"], ago(o.get("CreatedAt", "")), ago(o.get("UpdatedAt", ""))] for o in objs])
    ls.__doc__ = f"List {plural}."

    @app.command("inspect")
    def inspect(ctx: typer.Context, refs: List[str] = typer.Argument(..., help=f"{kind.capitalize()} names or ids."),
                pretty: bool = typer.Option(False, "--pretty", help="Human-readable output.")) -> None:
        c = client(ctx)
        objs = [c.get(f"/{plural}/{r}") for r in refs]
        if not pretty:
            print_json(objs)
            return
        for i, o in enumerate(objs):
            if i:
                typer.echo("")
            spec = o["Spec"]
            typer.echo(f"ID:              {o['ID']}")
            typer.echo(f"Name:            {spec['Name']}")
            if spec.get("Labels"):
                typer.echo("Labels:")
                for k, v in sorted(spec["Labels"].items()):
                    typer.echo(f" - {k}={v}")
            typer.echo(f"Created at:      {o.get('CreatedAt', '')}")
            typer.echo(f"Updated at:      {o.get('UpdatedAt', '')}")
            if kind == "config":
                typer.echo("Data:")
                typer.echo(base64.b64decode(spec.get("Data", "")).decode(errors="replace"))
    inspect.__doc__ = f"Show {plural} ({'never their data' if kind == 'secret' else 'with their data'})."

    @app.command("rm")
    def rm(ctx: typer.Context, refs: List[str] = typer.Argument(..., help=f"{kind.capitalize()} names or ids.")) -> None:
        remove_each(client(ctx), plural, refs)
    rm.__doc__ = f"Remove {plural} (refused while a service uses one)."

    return app


secret_app = make_app("secret")
config_app = make_app("config")
