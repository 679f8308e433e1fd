"""`shoal image ...`"""
from __future__ import annotations

from pathlib import Path

import typer

from api.units import human_size
from cli.client import CLIError
from cli.commands.common import client
from cli.output import ago, table

app = typer.Typer(help="Manage images on this node.", no_args_is_help=True)


@app.command("import")
def import_(ctx: typer.Context,
            file: Path = typer.Argument(..., help="A tar archive of a root filesystem."),
            reference: str = typer.Argument(..., help="NAME[:TAG] for the new image.")) -> None:
    """Create an image from a root filesystem tarball (like `docker import`)."""
    if not file.is_file():
        raise CLIError(f"FILE: {file} is not a file", 2)
    repo, _, tag = reference.rpartition(":") if ":" in reference.rsplit("/", 1)[-1] else (reference, "", "")
    result = client(ctx).post("/images/import", params={"repo": repo, "tag": tag}, stream_file=file)
    typer.echo(result["ID"])


@app.command("ls")
def ls(ctx: typer.Context, quiet: bool = typer.Option(False, "--quiet", "-q", help="Only display IDs.")) -> None:
    """List images."""
    images = client(ctx).get("/images/json")
    if quiet:
        for img in images:
            typer.echo(img["Id"])
        return
    rows = []
    for img in images:
        refs = img.get("RepoTags") or ["<none>:<none>"]
        for ref in refs:
            repo, _, tag = ref.rpartition(":")
            rows.append([repo, tag, img["Id"].split(":", 1)[-1][:12], ago(img.get("Created", "")), human_size(img.get("Size", 0))])
    table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], rows)


@app.command("rm")
def rm(ctx: typer.Context, images: list[str] = typer.Argument(..., help="Image references or ids.")) -> None:
    """Remove images."""
    c = client(ctx)
    for ref in images:
        c.delete(f"/images/{ref}")
        typer.echo(f"Untagged: {ref}")
