"""`shoal network ...`: swarm-scoped overlay networks, as `docker network` manages them."""
from __future__ import annotations

from typing import List, Optional

import typer

from cli.client import CLIError
from cli.commands.common import client, filters_param, kv_list, remove_each
from cli.output import print_json, table

app = typer.Typer(help="Manage overlay networks.", no_args_is_help=True)


def create_body(name: str, driver: str, subnet: Optional[str], gateway: Optional[str], ip_range: Optional[str],
                attachable: bool, internal: bool, ingress: bool, opts: list[str], labels: list[str]) -> dict:
    """The NetworkCreateRequest for the command line's options (pure, for tests)."""
    if driver != "overlay":
        raise CLIError(f"--driver: only overlay networks are supported, got {driver!r}", 2)
    if (gateway or ip_range) and not subnet:
        raise CLIError("--gateway/--ip-range: need --subnet", 2)
    body: dict = {"Name": name, "Driver": driver, "CheckDuplicate": True, "Options": kv_list(opts, "--opt"),
                  "Labels": kv_list(labels, "--label")}
    if attachable:
        body["Attachable"] = True
    if internal:
        body["Internal"] = True
    if ingress:
        body["Ingress"] = True
    if subnet:
        cfg = {"Subnet": subnet}
        if gateway:
            cfg["Gateway"] = gateway
        if ip_range:
            cfg["IPRange"] = ip_range
        body["IPAM"] = {"Driver": "default", "Config": [cfg]}
    return body


@app.command("create")
def create(ctx: typer.Context, name: str = typer.Argument(..., help="Network name."),
           driver: str = typer.Option("overlay", "--driver", "-d", help="Driver (overlay)."),
           subnet: Optional[str] = typer.Option(None, "--subnet", help="Subnet in CIDR form (default: a /24 from 10.0.0.0/8)."),
           gateway: Optional[str] = typer.Option(None, "--gateway", help="Gateway of the subnet (default: its first address)."),
           ip_range: Optional[str] = typer.Option(None, "--ip-range", help="Allocate task addresses from this sub-range."),
           attachable: bool = typer.Option(False, "--attachable", help="Allow standalone containers to attach."),
           internal: bool = typer.Option(False, "--internal", help="No access to the outside."),
           ingress: bool = typer.Option(False, "--ingress", help="The swarm routing-mesh network."),
           opt: List[str] = typer.Option([], "--opt", "-o", help="Driver option KEY=VALUE (encrypted: IPsec between nodes)."),
           label: List[str] = typer.Option([], "--label", help="Label KEY=VALUE.")) -> None:
    """Create an overlay network."""
    opts = [o if "=" in o else o + "=" for o in opt]   # `--opt encrypted` as Docker takes it
    body = create_body(name, driver, subnet, gateway, ip_range, attachable, internal, ingress, opts, label)
    typer.echo(client(ctx).post("/networks/create", body=body)["Id"])


@app.command("ls")
def ls(ctx: typer.Context, quiet: bool = typer.Option(False, "--quiet", "-q", help="Only display IDs."),
       no_trunc: bool = typer.Option(False, "--no-trunc", help="Do not truncate the output."),
       filter_: List[str] = typer.Option([], "--filter", "-f", help="Filter KEY=VALUE (name, id, label, driver).")) -> None:
    """List networks."""
    nets = client(ctx).get("/networks", params=filters_param(filter_))
    if quiet:
        for n in nets:
            typer.echo(n["Id"] if no_trunc else n["Id"][:12])
        return
    table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
          [[n["Id"] if no_trunc else n["Id"][:12], n["Name"], n["Driver"], n["Scope"]] for n in nets])


@app.command("inspect")
def inspect(ctx: typer.Context, networks: List[str] = typer.Argument(..., help="Network names or ids.")) -> None:
    """Show networks as JSON."""
    c = client(ctx)
    print_json([c.get(f"/networks/{n}") for n in networks])


@app.command("rm")
def rm(ctx: typer.Context, networks: List[str] = typer.Argument(..., help="Network names or ids.")) -> None:
    """Remove networks (refused while a service uses one)."""
    remove_each(client(ctx), "networks", networks)
