"""`shoal image ...`"""
from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, AsyncIterator, Callable, List, Optional

import aiohttp
import typer

from api.units import human_size
from cli.client import CLIError, Client
from cli.commands.common import client
from cli.output import ago, print_json, table

app = typer.Typer(help="Manage images on this node.", no_args_is_help=True)
_LAYER_ID = re.compile(r"^[a-f0-9]{12}$")


# -- streaming requests (progress lines in, archives out) ---------------------------------

async def _stream(c: Client, method: str, path: str, on_chunk: Callable[[bytes], None], *,
                  params: Any = None, data: Any = None) -> None:
    """A request whose answer is consumed as it arrives; errors become CLIError."""
    if not os.path.exists(c.path):
        raise c._unreachable(FileNotFoundError(c.path))
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=c.path), timeout=timeout) as s:
            async with s.request(method, "http://shoal" + path, params=params, data=data) as resp:
                if resp.status >= 400:
                    text = await resp.text()
                    try:
                        msg = json.loads(text).get("message", text)
                    except (ValueError, AttributeError):
                        msg = text
                    raise CLIError(f"Error response from daemon: {msg}")
                async for chunk in resp.content.iter_chunked(1 << 16):
                    on_chunk(chunk)
    except (aiohttp.ClientConnectionError, FileNotFoundError, ConnectionRefusedError, PermissionError) as exc:
        raise c._unreachable(exc) from None


class JSONLines:
    """Splits a byte stream into JSON messages."""

    def __init__(self, on_message: Callable[[dict[str, Any]], None]):
        self.buf = b""
        self.on_message = on_message

    def __call__(self, chunk: bytes) -> None:
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            if line.strip():
                self.on_message(json.loads(line))


def progress_bar(current: int, total: int, width: int = 40) -> str:
    if not total:
        return human_size(current)
    filled = min(width, width * current // total)
    arrow = ">" if filled < width else ""
    return f"[{'=' * filled}{arrow}{' ' * (width - filled - len(arrow))}] {human_size(current)}/{human_size(total)}"


class ProgressDisplay:
    """Docker's pull/push display: one line per layer, rewritten in place on a terminal; on
    a pipe, one line per change of status."""

    def __init__(self, tty: bool | None = None):
        self.tty = sys.stdout.isatty() if tty is None else tty
        self.order: list[str] = []
        self.lines: dict[str, str] = {}
        self.last_status: dict[str, str] = {}
        self.drawn = 0
        self.error: str | None = None
        self.aux: dict[str, Any] = {}

    def __call__(self, msg: dict[str, Any]) -> None:
        if "error" in msg:
            self.error = msg.get("errorDetail", {}).get("message") or msg["error"]
            return
        if "aux" in msg:
            self.aux = msg["aux"]
            return
        status, ident = msg.get("status", ""), msg.get("id")
        if not ident or not _LAYER_ID.match(ident):
            self._plain(f"{ident}: {status}" if ident else status)
            return
        detail = msg.get("progressDetail") or {}
        line = f"{ident}: {status}"
        if detail.get("total"):
            line += " " + progress_bar(detail.get("current", 0), detail["total"])
        if ident not in self.lines:
            self.order.append(ident)
        self.lines[ident] = line
        if self.tty:
            self._redraw()
        elif self.last_status.get(ident) != status:
            self.last_status[ident] = status
            typer.echo(f"{ident}: {status}")

    def _plain(self, text: str) -> None:
        if self.tty:
            self.drawn = 0  # the layer block above stays as it is
            self.order, self.lines = [], {}
        typer.echo(text)

    def _redraw(self) -> None:
        out = sys.stdout
        if self.drawn:
            out.write(f"\x1b[{self.drawn}A")
        for ident in self.order:
            out.write("\x1b[2K" + self.lines[ident] + "\n")
        self.drawn = len(self.order)
        out.flush()


def _follow(ctx: typer.Context, method: str, path: str, params: Any) -> ProgressDisplay:
    display = ProgressDisplay()
    asyncio.run(_stream(client(ctx), method, path, JSONLines(display), params=params))
    if display.error:
        raise CLIError(display.error)
    return display


def _split_tag(reference: str) -> tuple[str, str]:
    """("name", "tag") of NAME[:TAG]; a registry port is not a tag."""
    if "@" in reference:
        name, _, digest = reference.partition("@")
        return name, digest
    last = reference.rsplit("/", 1)[-1]
    if ":" in last:
        name, _, tag = reference.rpartition(":")
        return name, tag
    return reference, ""


# -- commands ------------------------------------------------------------------------------

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
def ls(ctx: typer.Context, quiet: bool = typer.Option(False, "--quiet", "-q", help="Only display IDs."),
       digests: bool = typer.Option(False, "--digests", help="Show registry digests.")) -> None:
    """List images."""
    images = client(ctx).get("/images/json")
    if quiet:
        for img in images:
            typer.echo(img["Id"])
        return
    rows = []
    for img in images:
        refs = img.get("RepoTags") or ["<none>:<none>"]
        by_repo = {d.split("@", 1)[0]: d.split("@", 1)[1] for d in img.get("RepoDigests") or []}
        for ref in refs:
            repo, _, tag = ref.rpartition(":")
            row = [repo, tag]
            if digests:
                row.append(by_repo.get(repo, "<none>"))
            rows.append(row + [img["Id"].split(":", 1)[-1][:12], ago(img.get("Created", "")),
                               human_size(img.get("Size", 0))])
    table(["REPOSITORY", "TAG", *(["DIGEST"] if digests else []), "IMAGE ID", "CREATED", "SIZE"], rows)


@app.command("rm")
def rm(ctx: typer.Context, images: List[str] = typer.Argument(..., help="Image references or ids.")) -> None:
    """Remove images."""
    c = client(ctx)
    for ref in images:
        c.delete(f"/images/{ref}")
        typer.echo(f"Untagged: {ref}")


@app.command("pull")
def pull(ctx: typer.Context,
         reference: str = typer.Argument(..., help="NAME[:TAG|@DIGEST] to pull from its registry."),
         platform: Optional[str] = typer.Option(None, "--platform", help="os/arch[/variant] to pick from "
                                                "a multi-platform image (default: this node's).")) -> None:
    """Pull an image from a registry, showing per-layer progress."""
    name, tag = _split_tag(reference)
    params = {"fromImage": name, **({"tag": tag} if tag else {}), **({"platform": platform} if platform else {})}
    _follow(ctx, "POST", "/images/create", params)
    typer.echo(reference if (tag or "@" in reference) else f"{reference}:latest")


@app.command("push")
def push(ctx: typer.Context, reference: str = typer.Argument(..., help="NAME[:TAG] to push.")) -> None:
    """Push an image to the registry its name points at."""
    name, tag = _split_tag(reference)
    if "@" in reference:
        raise CLIError("NAME: cannot push a digest reference; push a tag", 2)
    _follow(ctx, "POST", f"/images/{name}/push", {"tag": tag} if tag else {})


@app.command("tag")
def tag(ctx: typer.Context, source: str = typer.Argument(..., help="Image to tag (name or id)."),
        target: str = typer.Argument(..., help="New NAME[:TAG].")) -> None:
    """Give an image another name, e.g. a registry's, before pushing it."""
    repo, tag_ = _split_tag(target)
    client(ctx).post(f"/images/{source}/tag", params={"repo": repo, **({"tag": tag_} if tag_ else {})})


@app.command("inspect")
def inspect(ctx: typer.Context, images: List[str] = typer.Argument(..., help="Image references or ids.")) -> None:
    """Show images in detail, as JSON."""
    c = client(ctx)
    print_json([c.get(f"/images/{ref}/json") for ref in images])


@app.command("save")
def save(ctx: typer.Context, images: List[str] = typer.Argument(..., help="Images to put in the archive."),
         output: Optional[Path] = typer.Option(None, "--output", "-o",
                                               help="Write to this file (default: standard output).")) -> None:
    """Save images to a tar archive (docker-archive and OCI layout in one)."""
    if output is None and sys.stdout.isatty():
        raise CLIError("--output: refusing to write an archive to a terminal; give -o FILE or redirect", 2)
    tmp = output.with_name(output.name + ".part") if output else None
    sink = open(tmp, "wb") if tmp else sys.stdout.buffer
    try:
        asyncio.run(_stream(client(ctx), "GET", "/images/get", sink.write,
                            params=[("names", name) for name in images]))
        sink.flush()
    except BaseException:
        if tmp:
            sink.close()
            tmp.unlink(missing_ok=True)
        raise
    if tmp and output:
        sink.close()
        os.replace(tmp, output)


@app.command("load")
def load(ctx: typer.Context,
         input: Optional[Path] = typer.Option(None, "--input", "-i",
                                              help="Read from this tar file (default: standard input).")) -> None:
    """Load images from a `docker save` or OCI layout tar archive."""
    if input is not None and not input.is_file():
        raise CLIError(f"--input: {input} is not a file", 2)
    if input is None and sys.stdin.isatty():
        raise CLIError("--input: give -i FILE or pipe an archive to standard input", 2)
    source = open(input, "rb") if input is not None else sys.stdin.buffer

    async def chunks() -> AsyncIterator[bytes]:
        while chunk := source.read(1 << 20):
            yield chunk

    lines = JSONLines(lambda msg: typer.echo(msg.get("stream", "").rstrip("\n")))
    try:
        asyncio.run(_stream(client(ctx), "POST", "/images/load", lines, data=chunks()))
    finally:
        if input is not None:
            source.close()
    lines(b"\n")


@app.command("prune")
def prune(ctx: typer.Context,
          all_: bool = typer.Option(False, "--all", "-a", help="Remove every unused image, not just untagged ones."),
          force: bool = typer.Option(False, "--force", "-f", help="Do not ask for confirmation.")) -> None:
    """Remove images no container uses (untagged ones only, unless --all)."""
    if not force:
        what = "all images without at least one container associated to them" if all_ else "all dangling images"
        if not typer.confirm(f"WARNING! This will remove {what}.\nAre you sure you want to continue?"):
            raise typer.Exit(1)
    params = {"filters": json.dumps({"dangling": ["false"]})} if all_ else {}
    result = client(ctx).post("/images/prune", params=params)
    deleted = result.get("ImagesDeleted") or []
    if deleted:
        typer.echo("Deleted Images:")
        for item in deleted:
            for key, value in item.items():
                typer.echo(f"{key.lower()}: {value}")
        typer.echo("")
    typer.echo(f"Total reclaimed space: {human_size(result.get('SpaceReclaimed', 0))}")
