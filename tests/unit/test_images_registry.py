"""Registry client pieces without a real registry: challenges, credentials, platforms,
manifests, transport rules, and the bearer-token flow against a fake shaped like Docker Hub
(challenge on /v2/, a token realm on another server, blobs redirected to a CDN)."""
import asyncio
import base64
import gzip
import hashlib
import io
import json
import stat
import tarfile
import threading

import pytest
from aiohttp import web

from worker.images import ImageStore
from worker.images.auth import CredentialStore, Credentials, parse_challenge, registry_key
from worker.images.manifests import Index, Manifest, Platform, parse_manifest, select_platform
from worker.images.pull import pull
from worker.images.reference import familiar_name, qualified_name, registry_location
from worker.images.registry import (RegistryAuthError, RegistryClient, RegistryConfig, is_loopback,
                                    transport_schemes)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_parse_challenge():
    c = parse_challenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                        'scope="repository:library/busybox:pull,push",error="insufficient_scope"')
    assert c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                        "scope": "repository:library/busybox:pull,push", "error": "insufficient_scope"}
    assert parse_challenge('Basic realm="Registry Realm"').params == {"realm": "Registry Realm"}
    assert parse_challenge('Bearer realm=http://x/t, service=svc').params == {"realm": "http://x/t", "service": "svc"}
    assert parse_challenge('Bearer realm="a\\"b"').params == {"realm": 'a"b'}
    assert parse_challenge("") is None


@pytest.mark.parametrize("name, where", [
    ("busybox", ("docker.io", "library/busybox")),
    ("team/app", ("docker.io", "team/app")),
    ("docker.io/busybox", ("docker.io", "library/busybox")),
    ("index.docker.io/team/app", ("docker.io", "team/app")),
    ("localhost/app", ("localhost", "app")),
    ("127.0.0.1:5000/a/b/c", ("127.0.0.1:5000", "a/b/c")),
    ("registry.example.com/app", ("registry.example.com", "app")),
])
def test_registry_location(name, where):
    assert registry_location(name) == where


def test_familiar_and_qualified_names():
    assert familiar_name("docker.io/library/busybox:1") == "busybox:1"
    assert familiar_name("docker.io/team/app:1") == "team/app:1"
    assert familiar_name("127.0.0.1:5000/app:1") == "127.0.0.1:5000/app:1"
    assert qualified_name("busybox") == "docker.io/library/busybox"
    assert qualified_name("127.0.0.1:5000/app") == "127.0.0.1:5000/app"


def test_registry_key_and_credential_store(tmp_path):
    assert registry_key("https://index.docker.io/v1/") == "docker.io"
    assert registry_key("http://127.0.0.1:5000/v2/") == "127.0.0.1:5000"
    with pytest.raises(ValueError, match="^serveraddress: "):
        registry_key("bad host name")
    store = CredentialStore(tmp_path / "state" / "auth.json")
    assert store.get("127.0.0.1:5000") is None
    store.put("127.0.0.1:5000", Credentials("alice", "pa:ss"))
    store.put("https://index.docker.io/v1/", Credentials("bob", "x"))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.get("http://127.0.0.1:5000") == Credentials("alice", "pa:ss")
    assert store.get("docker.io") == Credentials("bob", "x")
    assert store.remove("docker.io") and store.get("docker.io") is None
    with pytest.raises(ValueError, match="^username: "):
        store.put("x.io", Credentials("a:b", "c"))


def test_transport_needs_tls_except_on_loopback_or_when_configured(tmp_path):
    assert transport_schemes("registry.example.com:5000") == ["https"]
    assert transport_schemes("127.0.0.1:5000") == ["https", "http"]
    assert transport_schemes("localhost:5000") == ["https", "http"]
    assert transport_schemes("reg.lan:5000", frozenset({"reg.lan:5000"})) == ["https", "http"]
    assert is_loopback("[::1]:5000") and not is_loopback("10.1.2.3:5000")
    (tmp_path / "registries.json").write_text(json.dumps({"insecure-registries": ["http://Reg.Lan:5000/"]}))
    assert RegistryConfig.load(tmp_path / "registries.json").insecure == frozenset({"reg.lan:5000"})
    assert RegistryConfig.load(tmp_path / "missing.json").insecure == frozenset()
    (tmp_path / "bad.json").write_text(json.dumps({"insecure-registries": "reg.lan"}))
    with pytest.raises(ValueError, match="^insecure-registries: "):
        RegistryConfig.load(tmp_path / "bad.json")


def test_platforms():
    assert Platform.parse("linux/arm64/v8") == Platform("linux", "arm64", "v8")
    assert Platform.parse("x86_64") == Platform("linux", "amd64")
    with pytest.raises(ValueError, match="^platform: "):
        Platform.parse("linux//")
    entries = [{"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": "sha256:" + c * 64,
                "size": 1, "platform": p} for c, p in [
        ("a", {"os": "linux", "architecture": "arm", "variant": "v6"}),
        ("b", {"os": "linux", "architecture": "arm", "variant": "v7"}),
        ("c", {"os": "linux", "architecture": "arm64", "variant": "v8"}),
        ("d", {"os": "linux", "architecture": "amd64"}),
        ("e", {"os": "unknown", "architecture": "unknown"})]]
    index = parse_manifest(json.dumps({"schemaVersion": 2, "mediaType":
                                       "application/vnd.docker.distribution.manifest.list.v2+json",
                                       "manifests": entries}).encode())
    assert isinstance(index, Index)
    assert select_platform(index, Platform.parse("linux/amd64")).digest == "sha256:" + "d" * 64
    assert select_platform(index, Platform.parse("linux/arm64")).digest == "sha256:" + "c" * 64
    assert select_platform(index, Platform.parse("linux/arm")).digest == "sha256:" + "b" * 64  # v7 by default
    assert select_platform(index, Platform.parse("linux/arm/v6")).digest == "sha256:" + "a" * 64
    with pytest.raises(ValueError, match=r"no manifest for linux/ppc64le .*available: linux/amd64, linux/arm/v6"):
        select_platform(index, Platform.parse("linux/ppc64le"))


@pytest.mark.parametrize("doc, error", [
    ({"schemaVersion": 1, "name": "x", "fsLayers": []}, "schema 1 manifests are not supported"),
    ({"schemaVersion": 3}, "manifest.schemaVersion: must be 2"),
    ({"schemaVersion": 2, "mediaType": "text/plain"}, "manifest.mediaType: unsupported"),
    ({"schemaVersion": 2, "config": {"digest": "sha256:abc", "size": 1}, "layers": []}, "manifest.config.digest"),
    ({"schemaVersion": 2, "config": {"digest": "sha256:" + "a" * 64, "size": -1}, "layers": []},
     "manifest.config.size"),
    ({"schemaVersion": 2, "config": {"digest": "sha256:" + "a" * 64, "size": 1}, "layers": {}},
     "manifest.layers: must be a list"),
])
def test_manifest_errors_name_the_field(doc, error):
    with pytest.raises(ValueError, match=error):
        parse_manifest(json.dumps(doc).encode())


def test_manifest_without_media_type_is_told_apart_by_shape():
    man = parse_manifest(json.dumps({"schemaVersion": 2, "config": {"digest": "sha256:" + "a" * 64, "size": 2},
                                     "layers": [{"digest": "sha256:" + "b" * 64, "size": 3}]}).encode())
    assert isinstance(man, Manifest) and [d.size for d in man.blobs()] == [2, 3]
    assert isinstance(parse_manifest(b'{"schemaVersion": 2, "manifests": []}'), Index)


# -- a fake Docker Hub --------------------------------------------------------------------------

class FakeHub:
    """/v2/ answers with a Bearer challenge; tokens come from a separate realm; blobs are
    redirected to a CDN on another origin (which must not see the registry's token)."""

    def __init__(self):
        layer_tar = io.BytesIO()
        with tarfile.open(fileobj=layer_tar, mode="w") as tar:
            info = tarfile.TarInfo("hello")
            info.size = 3
            tar.addfile(info, io.BytesIO(b"hi\n"))
        self.layer = gzip.compress(layer_tar.getvalue(), mtime=0)
        self.config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                                  "rootfs": {"type": "layers", "diff_ids": [sha(layer_tar.getvalue())]}}).encode()
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": sha(self.config),
                       "size": len(self.config)},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": sha(self.layer),
                        "size": len(self.layer)}]}).encode()
        self.blobs = {sha(self.layer): self.layer, sha(self.config): self.config}
        self.token_requests: list[dict] = []
        self.cdn_auth: list[str | None] = []
        self.realm = self.cdn = ""

    def challenge(self, scope: str = "") -> dict:
        value = f'Bearer realm="{self.realm}",service="registry.docker.io"'
        if scope:
            value += f',scope="{scope}"'
        return {"WWW-Authenticate": value}

    def authorized(self, request, repo: str) -> bool:
        return request.headers.get("Authorization") == f"Bearer token-for-repository:{repo}:pull"

    async def v2(self, request):
        return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                                 status=401, headers=self.challenge())

    async def get_manifest(self, request):
        repo = request.match_info["repo"]
        if not self.authorized(request, repo):
            return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                                     status=401, headers=self.challenge(f"repository:{repo}:pull"))
        return web.Response(body=self.manifest, headers={
            "Content-Type": "application/vnd.docker.distribution.manifest.v2+json",
            "Docker-Content-Digest": sha(self.manifest)})

    async def blob(self, request):
        if not self.authorized(request, request.match_info["repo"]):
            return web.Response(status=401, headers=self.challenge())
        digest = request.match_info["digest"]
        if digest == sha(self.config):
            return web.Response(body=self.config)
        raise web.HTTPTemporaryRedirect(f"{self.cdn}/cdn/{digest}?sig=abc")

    async def token(self, request):
        auth = request.headers.get("Authorization")
        user = base64.b64decode(auth[6:]).decode() if auth else None
        self.token_requests.append({"scope": request.query.get("scope"), "service": request.query.get("service"),
                                    "user": user})
        scope = request.query.get("scope", "")
        if scope.startswith("repository:private/") and user != "bob:good":
            return web.json_response({"details": "incorrect username or password"}, status=401)
        return web.json_response({"token": f"token-for-{scope}", "access_token": "ignored"})

    async def cdn_blob(self, request):
        self.cdn_auth.append(request.headers.get("Authorization"))
        return web.Response(body=self.blobs[request.match_info["digest"]])


@pytest.fixture
def hub():
    fake = FakeHub()
    registry = web.Application()
    registry.router.add_get("/v2/", fake.v2)
    registry.router.add_get("/v2/{repo:.+}/manifests/{ref}", fake.get_manifest)
    registry.router.add_get("/v2/{repo:.+}/blobs/{digest}", fake.blob)
    auth = web.Application()
    auth.router.add_get("/token", fake.token)
    cdn = web.Application()
    cdn.router.add_get("/cdn/{digest}", fake.cdn_blob)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runners = []

    async def start(app):
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return runner.addresses[0][1]

    try:
        ports = [asyncio.run_coroutine_threadsafe(start(a), loop).result(5) for a in (registry, auth, cdn)]
        fake.realm, fake.cdn = f"http://127.0.0.1:{ports[1]}/token", f"http://localhost:{ports[2]}"
        fake.host = f"127.0.0.1:{ports[0]}"
        yield fake
    finally:
        for runner in runners:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


async def _pull(store, ref, override=None):
    async with RegistryClient(override=override) as client:
        return await pull(store, ref, client)


def test_bearer_flow_like_docker_hub(tmp_path, hub):
    store = ImageStore(tmp_path / "s")
    image = asyncio.run(_pull(store, f"{hub.host}/library/busybox:1"))
    assert image.id == sha(hub.config) and image.manifest_digest == sha(hub.manifest)
    assert image.repo_digests == [f"{hub.host}/library/busybox@{sha(hub.manifest)}"]
    # Anonymous token for the repository, asked once, with the service the challenge named.
    assert hub.token_requests == [{"scope": "repository:library/busybox:pull", "service": "registry.docker.io",
                                   "user": None}]
    # The CDN got the blob request without the registry's token.
    assert hub.cdn_auth == [None]
    assert (store.layer_dirs(image)[0] / "hello").read_bytes() == b"hi\n"


def test_bearer_flow_with_credentials(tmp_path, hub):
    store = ImageStore(tmp_path / "s")
    with pytest.raises(RegistryAuthError, match="incorrect username or password"):
        asyncio.run(_pull(store, f"{hub.host}/private/app:1", {hub.host: Credentials("bob", "bad")}))
    assert store.list() == []
    image = asyncio.run(_pull(store, f"{hub.host}/private/app:1", {hub.host: Credentials("bob", "good")}))
    assert image.references == [f"{hub.host}/private/app:1"]
    assert hub.token_requests[-1]["user"] == "bob:good"


def test_tls_verification_uses_the_node_certs_dir(tmp_path):
    import ssl
    from tests.registry.helpers import self_signed
    certs = tmp_path / "certs.d" / "reg.example:5000"
    certs.mkdir(parents=True)
    cert, _ = self_signed(tmp_path)
    (certs / "ca.crt").write_bytes(cert.read_bytes())
    client = RegistryClient(config=RegistryConfig(certs_dir=tmp_path / "certs.d"))
    ctx = client._ssl("reg.example:5000")
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED
    assert client._ssl("other.example") is True        # the system's trust store
    assert client._ssl("127.0.0.1:5000") is False      # loopback: TLS if offered, unverified
