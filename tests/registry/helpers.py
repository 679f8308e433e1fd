"""Test helpers: OCI layouts built by hand, a real `docker-registry` process, skopeo, an
ES256 token server for the registry's token auth, and a proxy that can cut a download."""
from __future__ import annotations

import asyncio
import base64
import ctypes
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import aiohttp
from aiohttp import web

REGISTRY = shutil.which("docker-registry")
SKOPEO = shutil.which("skopeo")
HTPASSWD = shutil.which("htpasswd")
ROOT = Path(__file__).resolve().parents[2]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 946684800, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# -- OCI layouts ----------------------------------------------------------------------------

@dataclass
class Built:
    manifest: bytes
    config: bytes
    layers: list[bytes]            # blobs as stored (gzip)
    diff_ids: list[str]

    @property
    def manifest_digest(self) -> str:
        return digest_of(self.manifest)

    @property
    def config_digest(self) -> str:
        return digest_of(self.config)


def build_image(layout: Path, tars: list[bytes], arch: str = "amd64", cmd: list[str] | None = None) -> Built:
    """Write an image's blobs into an OCI layout dir (index.json is written by write_index)."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    layers = [gzip.compress(t, mtime=0) for t in tars]
    diff_ids = [digest_of(t) for t in tars]
    config = json.dumps({
        "created": "2000-01-01T00:00:00Z", "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": cmd or ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2000-01-01T00:00:00Z", "created_by": "test"} for _ in tars],
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": digest_of(l), "size": len(l)} for l in layers],
    }, sort_keys=True).encode()
    for blob in [config, manifest, *layers]:
        (blobs / digest_of(blob).split(":")[1]).write_bytes(blob)
    return Built(manifest, config, layers, diff_ids)


def write_index(layout: Path, entries: list[dict[str, Any]]) -> None:
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                   "manifests": entries}))


def manifest_entry(built: Built, tag: str | None = None, arch: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": built.manifest_digest, "size": len(built.manifest)}
    if tag:
        entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
    if arch:
        entry["platform"] = {"os": "linux", "architecture": arch}
    return entry


def multi_arch(layout: Path, images: dict[str, Built], tag: str) -> bytes:
    """Nest a list of per-arch manifests under one tag; returns the index blob."""
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                        "manifests": [manifest_entry(b, arch=a) for a, b in images.items()]},
                       sort_keys=True).encode()
    (layout / "blobs" / "sha256" / digest_of(index).split(":")[1]).write_bytes(index)
    write_index(layout, [{"mediaType": OCI_INDEX, "digest": digest_of(index), "size": len(index),
                          "annotations": {"org.opencontainers.image.ref.name": tag}}])
    return index


# -- skopeo -----------------------------------------------------------------------------------

def skopeo(tmp: Path, *args: str) -> str:
    policy = tmp / "policy.json"
    if not policy.exists():
        policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    env = {**os.environ, "HOME": str(tmp), "REGISTRY_AUTH_FILE": str(tmp / "skopeo-auth.json")}
    proc = subprocess.run([SKOPEO, "--policy", str(policy), *args], capture_output=True, text=True,
                          timeout=60, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


# -- a real registry ----------------------------------------------------------------------------

@dataclass
class Registry:
    host: str                   # 127.0.0.1:port
    root: Path
    proc: subprocess.Popen

    def blob_data(self, digest: str) -> Path:
        hex_ = digest.split(":")[1]
        return self.root / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"


def _die_with_parent() -> None:
    # If the test process is killed outright, its registries go with it.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def self_signed(tmp: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate for host, and its key, for a TLS registry."""
    import ipaddress
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "tls.crt", tmp / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def start_registry(tmp: Path, auth: dict[str, Any] | None = None, tls: tuple[Path, Path] | None = None) -> Registry:
    port = free_port()
    root = tmp / f"registry-{port}"
    root.mkdir(parents=True)
    config = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}, "delete": {"enabled": True},
                    "maintenance": {"uploadpurging": {"enabled": False}}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": "shoal-test-secret"},
    }
    if auth:
        config["auth"] = auth
    if tls:
        config["http"]["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    cfg = root / "config.yml"
    cfg.write_text(json.dumps(config))  # YAML is a superset of JSON
    log = open(root / "registry.log", "wb")
    proc = subprocess.Popen([REGISTRY, "serve", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=_die_with_parent)
    log.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"docker-registry exited: {(root / 'registry.log').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return Registry(f"127.0.0.1:{port}", root / "data", proc)
        except OSError:
            time.sleep(0.05)
    stop_registry(Registry(f"127.0.0.1:{port}", root, proc))
    raise AssertionError("docker-registry did not start listening within 10 s")


def stop_registry(reg: Registry) -> None:
    if reg.proc.poll() is None:
        os.killpg(reg.proc.pid, signal.SIGTERM)
        try:
            reg.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(reg.proc.pid, signal.SIGKILL)
            reg.proc.wait(5)


def htpasswd_file(path: Path, user: str, password: str) -> Path:
    out = subprocess.run([HTPASSWD, "-Bbn", user, password], capture_output=True, text=True, check=True).stdout
    path.write_text(out)
    return path


# -- aiohttp servers in a thread (the code under test runs its own event loops) -----------------

class ThreadServer:
    """Serves app on 127.0.0.1 (or on a unix socket) from its own thread and event loop."""

    def __init__(self, app: web.Application, unix: Path | None = None):
        self.app = app
        self.unix = unix
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.port = 0

    def __enter__(self) -> "ThreadServer":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        if self.unix is not None:
            await web.UnixSite(self.runner, str(self.unix)).start()
            return
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def __exit__(self, *exc: Any) -> None:
        assert self.runner is not None
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


# -- a token server for the registry's `auth: token` -------------------------------------------

@dataclass
class TokenIssuer:
    """Issues ES256 JWTs like Docker Hub's auth service; the registry trusts its certificate."""
    tmp: Path
    users: dict[str, str]
    service: str = "shoal-test-registry"
    issuer: str = "shoal-test-issuer"
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shoal test token issuer")])
        now = dt.datetime.now(dt.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.bundle = self.tmp / "token-ca.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self._der = self.cert.public_bytes(serialization.Encoding.DER)

    def _jwt(self, subject: str, access: list[dict[str, Any]]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(self._der).decode()]}
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    async def token(self, request: web.Request) -> web.Response:
        user = None
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if self.users.get(name) != password:
                return web.json_response({"details": "incorrect username or password"}, status=401)
            user = name
        scopes = request.query.getall("scope", [])
        self.requests.append({"user": user, "scopes": scopes, "service": request.query.get("service")})
        if user is None:
            return web.json_response({"details": "authentication required"}, status=401)
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        return web.json_response({"token": self._jwt(user, access), "expires_in": 300})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/token", self.token)
        return app


# -- a proxy in front of the registry that can break one download --------------------------------

@dataclass
class CuttingProxy:
    """Forwards to the registry; the first GET of `cut_path` stops after `cut_after` bytes."""
    upstream: str
    cut_path: str = ""
    cut_after: int = 0
    cuts_left: int = 1
    seen: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with aiohttp.ClientSession(auto_decompress=False) as s:
            async with s.request(request.method, self.upstream + request.path_qs, headers=headers, data=body,
                                 allow_redirects=False) as up:
                data = await up.read()
                out_headers = {k: v for k, v in up.headers.items()
                               if k.lower() not in ("content-length", "transfer-encoding", "connection")}
                self.seen.append({"method": request.method, "path": request.path,
                                  "range": request.headers.get("Range"), "status": up.status, "bytes": len(data)})
                cut = request.method == "GET" and request.path == self.cut_path and self.cuts_left > 0
                resp = web.StreamResponse(status=up.status, headers=out_headers)
                resp.content_length = len(data)
                await resp.prepare(request)
                if cut:
                    self.cuts_left -= 1
                    self.seen[-1]["bytes"] = self.cut_after
                    await resp.write(data[:self.cut_after])
                    await asyncio.sleep(0.05)
                    assert request.transport is not None
                    request.transport.close()  # mid-body: the client sees a short read
                    return resp
                await resp.write(data)
                await resp.write_eof()
                return resp

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


def run(coro_fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run an async function of the code under test with a fresh event loop."""
    return asyncio.run(coro_fn(*args, **kwargs))
