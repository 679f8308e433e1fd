"""A client for the OCI distribution API (Docker Registry HTTP API v2), over aiohttp.

It speaks to one registry host at a time and owns the transport details: https or, for
loopback and configured insecure hosts, plain http; the authentication challenge flow
(anonymous, Basic, and Bearer tokens fetched from the realm the registry names, as Docker
Hub does); redirects (credentials are never sent to another origin); resumable blob
downloads with Range requests; blob uploads, monolithic or chunked. It verifies nothing
about image semantics: `pull` and `push` build on it.
"""
from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import os
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import quote, urljoin, urlsplit

import aiohttp
from yarl import URL

from .auth import Challenge, CredentialStore, Credentials, parse_challenge, registry_key
from .manifests import ACCEPT, Descriptor

HUB_ENDPOINT = "registry-1.docker.io"
MAX_MANIFEST = 4 << 20      # the limit distribution itself puts on manifests
MAX_CONFIG = 8 << 20
_CHUNK = 1 << 16
_REDIRECTS = (301, 302, 303, 307, 308)

ByteProgress = Callable[[int, int], None]   # (bytes done, bytes total)


class RegistryError(Exception):
    """A registry refused or failed a request; the message is one line for the user."""
    status = 502


class RegistryAuthError(RegistryError):
    status = 401


class RegistryNotFound(RegistryError):
    status = 404


class TransportError(RegistryError):
    """The request could not be sent or its answer not read (connection refused, reset)."""


class DigestMismatchError(RegistryError):
    """Content does not match the digest it was asked for: refused, never stored."""
    status = 502


class DownloadInterrupted(RegistryError):
    """The connection broke mid-blob; what arrived is kept and the next attempt resumes."""
    status = 502


@dataclass
class RegistryConfig:
    insecure: frozenset[str] = frozenset()   # host[:port] allowed over plain http or unverified TLS
    certs_dir: Path | None = None            # <certs_dir>/<host[:port]>/ca.crt, as Docker's certs.d
    connect_timeout: float = 15.0
    read_timeout: float = 60.0

    @classmethod
    def load(cls, path: Path) -> "RegistryConfig":
        """Read {"insecure-registries": [...]} (Docker's daemon.json key) if the file exists."""
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            return cls()
        except ValueError as exc:
            raise ValueError(f"registries: {path} is not valid JSON ({exc})") from None
        hosts = data.get("insecure-registries", []) if isinstance(data, dict) else None
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            raise ValueError(f"insecure-registries: must be a list of host[:port] strings in {path}")
        return cls(insecure=frozenset(registry_key(h) for h in hosts))


def is_loopback(host: str) -> bool:
    bracketed = re.match(r"^\[(.+)\](?::[0-9]+)?$", host)
    name = bracketed.group(1) if bracketed else host.split(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def transport_schemes(host: str, insecure: frozenset[str] = frozenset()) -> list[str]:
    """TLS always comes first; plain http only for loopback (as Docker allows) and hosts the
    node's configuration marks insecure."""
    return ["https", "http"] if (host in insecure or is_loopback(host)) else ["https"]


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _error_detail(text: str) -> str:
    try:
        errors = json.loads(text).get("errors") or []
        parts = [f"{e.get('code', '').lower()}: {e.get('message', '')}".strip(": ") for e in errors]
        if parts:
            return "; ".join(parts)
    except (ValueError, AttributeError):
        pass
    return " ".join(text.split())[:200]


def scope_for(repository: str, push: bool = False) -> str:
    return f"repository:{repository}:{'pull,push' if push else 'pull'}"


@dataclass
class _HostState:
    base: str
    challenge: Challenge | None = None
    tokens: dict[str, str] = field(default_factory=dict)


class RegistryClient:
    def __init__(self, credentials: CredentialStore | None = None, config: RegistryConfig | None = None,
                 override: Mapping[str, Credentials] | None = None):
        self.credentials = credentials
        self.config = config or RegistryConfig()
        self.override = {registry_key(k): v for k, v in (override or {}).items()}
        self._session: aiohttp.ClientSession | None = None
        self._hosts: dict[str, _HostState] = {}
        self._host_locks: dict[str, asyncio.Lock] = {}

    async def __aenter__(self) -> "RegistryClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.config.connect_timeout,
                                            sock_read=self.config.read_timeout)
            self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False,
                                                  headers={"User-Agent": "shoal/0.1"})
        return self._session

    def _creds(self, host: str) -> Credentials | None:
        if host in self.override:
            return self.override[host]
        return self.credentials.get(host) if self.credentials else None

    def _ssl(self, host: str) -> ssl.SSLContext | bool:
        if host in self.config.insecure or is_loopback(host):
            return False  # Docker's insecure registries: TLS if offered, unverified
        if self.config.certs_dir is not None:
            ca = self.config.certs_dir / host / "ca.crt"
            if ca.is_file():
                return ssl.create_default_context(cafile=str(ca))
        return True

    # -- transport and authentication ---------------------------------------------------

    async def _state(self, host: str) -> _HostState:
        """Find how to reach host (https first, http only where allowed) and its challenge."""
        if host in self._hosts:
            return self._hosts[host]
        lock = self._host_locks.setdefault(host, asyncio.Lock())
        async with lock:
            if host in self._hosts:
                return self._hosts[host]
            endpoint = HUB_ENDPOINT if host == "docker.io" else host
            schemes = transport_schemes(host, self.config.insecure)
            last: Exception | None = None
            for scheme in schemes:
                base = f"{scheme}://{endpoint}"
                try:
                    async with self._http().get(base + "/v2/", ssl=self._ssl(host) if scheme == "https" else True,
                                                allow_redirects=False) as resp:
                        await resp.read()
                        challenge = parse_challenge(resp.headers.get("WWW-Authenticate", "")) \
                            if resp.status == 401 else None
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                    last = exc
                    continue
                state = _HostState(base, challenge)
                self._hosts[host] = state
                return state
            hint = "" if len(schemes) > 1 else \
                " (a registry without TLS must be listed in insecure-registries)"
            raise RegistryError(f"registry: cannot reach {host}: {last or 'no route'}{hint}")

    async def _fetch_token(self, host: str, state: _HostState, scope: str) -> str:
        challenge = state.challenge
        assert challenge is not None
        realm = challenge.params.get("realm")
        if not realm:
            raise RegistryAuthError(f"registry: {host} asked for a bearer token but named no realm")
        params = {k: v for k, v in (("service", challenge.params.get("service", "")), ("scope", scope)) if v}
        creds = self._creds(host)
        headers = {"Authorization": creds.basic()} if creds else {}
        realm_host = urlsplit(realm).netloc
        try:
            async with self._http().get(realm, params=params, headers=headers,
                                        ssl=self._ssl(realm_host) if realm.startswith("https") else True) as resp:
                text = await resp.text()
                if resp.status in (401, 403):
                    reason = "incorrect username or password" if creds else "authentication required"
                    raise RegistryAuthError(f"unauthorized: {host}: {reason} ({_error_detail(text)})")
                if resp.status != 200:
                    raise RegistryError(f"registry: token server {realm} answered HTTP {resp.status}: "
                                        f"{_error_detail(text)}")
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise RegistryError(f"registry: cannot reach token server {realm}: {exc}") from None
        try:
            body = json.loads(text)
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryAuthError(f"registry: token server {realm} returned no token")
        state.tokens[scope] = token
        return token

    async def _authorization(self, host: str, state: _HostState, scope: str) -> str | None:
        challenge = state.challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            creds = self._creds(host)
            return creds.basic() if creds else None
        if challenge.scheme == "bearer":
            token = state.tokens.get(scope) or await self._fetch_token(host, state, scope)
            return "Bearer " + token
        raise RegistryAuthError(f"registry: {host} wants unsupported authentication {challenge.scheme!r}")

    async def _send(self, method: str, host: str, path: str, scope: str, *,
                    headers: Mapping[str, str] | None = None,
                    data: bytes | Callable[[], Any] | None = None) -> aiohttp.ClientResponse:
        """One request with authentication; a 401 refreshes the challenge and retries once.
        The caller owns (and must release) the response."""
        state = await self._state(host)
        url = path if "://" in path else state.base + path
        for attempt in (0, 1):
            hdrs = dict(headers or {})
            auth = await self._authorization(host, state, scope)
            if auth:
                hdrs["Authorization"] = auth
            payload = data() if callable(data) else data
            resp = await self._follow(method, url, hdrs, payload, host)
            if resp.status == 401 and attempt == 0:
                challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
                if challenge is not None and (auth is None or challenge.scheme == "bearer"):
                    resp.release()
                    state.challenge = challenge
                    state.tokens.pop(scope, None)
                    continue
            return resp
        raise AssertionError("unreachable")

    async def _follow(self, method: str, url: str, headers: dict[str, str], payload: Any,
                      host: str) -> aiohttp.ClientResponse:
        origin = _origin(url)
        for _ in range(6):
            target = URL(url, encoded=True)
            try:
                resp = await self._http().request(method, target, headers=headers, data=payload,
                                                  allow_redirects=False,
                                                  ssl=self._ssl(urlsplit(url).netloc)
                                                  if url.startswith("https") else True)
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                raise TransportError(f"registry: {method} {urlsplit(url).path} on {host} failed: "
                                     f"{exc or type(exc).__name__}") from None
            if resp.status not in _REDIRECTS or method not in ("GET", "HEAD"):
                return resp
            location = resp.headers.get("Location", "")
            resp.release()
            if not location:
                raise RegistryError(f"registry: {host} redirected without a Location")
            url = urljoin(url, location)
            if _origin(url) != origin:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        raise RegistryError(f"registry: too many redirects from {host}")

    @staticmethod
    async def _fail(resp: aiohttp.ClientResponse, what: str) -> RegistryError:
        text = (await resp.content.read(1 << 16)).decode("utf-8", "replace")
        resp.release()
        detail = _error_detail(text) or f"HTTP {resp.status}"
        if resp.status in (401, 403):
            return RegistryAuthError(f"unauthorized: {what}: {detail}")
        if resp.status == 404:
            return RegistryNotFound(f"not found: {what}: {detail}")
        return RegistryError(f"registry: {what}: HTTP {resp.status}: {detail}")

    # -- the API ------------------------------------------------------------------------

    async def login(self, host: str) -> None:
        """Check this client's credentials for host: GET /v2/ with them, as `docker login` does."""
        if self._creds(host) is None:
            raise RegistryAuthError(f"unauthorized: {host}: no credentials")
        resp = await self._send("GET", host, "/v2/", "")
        if resp.status != 200:
            raise await self._fail(resp, f"login to {host}")
        resp.release()

    async def get_manifest(self, host: str, repository: str, ref: str) -> tuple[bytes, str, str | None]:
        """(body, content type, Docker-Content-Digest header if any) of a tag or digest."""
        resp = await self._send("GET", host, f"/v2/{repository}/manifests/{ref}", scope_for(repository),
                                headers={"Accept": ACCEPT})
        if resp.status != 200:
            raise await self._fail(resp, f"manifest {repository}:{ref} on {host}")
        try:
            body = await resp.content.read(MAX_MANIFEST + 1)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise RegistryError(f"registry: reading manifest {repository}:{ref}: {exc}") from None
        finally:
            resp.release()
        if len(body) > MAX_MANIFEST:
            raise RegistryError(f"manifest: {repository}:{ref} is larger than {MAX_MANIFEST} bytes")
        return body, resp.headers.get("Content-Type", ""), resp.headers.get("Docker-Content-Digest")

    async def manifest_digest(self, host: str, repository: str, ref: str) -> str:
        """The digest a tag points to now (the manifest list's for a multi-platform image), as
        `docker service create` records it: HEAD first (cheap, and not counted by registries
        that rate-limit pulls); a GET, hashed here, when HEAD gives no Docker-Content-Digest,
        and so that a refusal carries the registry's own error text."""
        resp = await self._send("HEAD", host, f"/v2/{repository}/manifests/{ref}", scope_for(repository),
                                headers={"Accept": ACCEPT})
        announced = resp.headers.get("Docker-Content-Digest", "") if resp.status == 200 else ""
        resp.release()
        if re.match(r"^sha256:[a-f0-9]{64}$", announced):
            return announced
        body, _, announced = await self.get_manifest(host, repository, ref)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if announced and announced != digest:
            raise DigestMismatchError(f"manifest: {repository}:{ref} announced {announced} but its content "
                                      f"has {digest}; refused")
        return digest

    async def get_blob(self, host: str, repository: str, desc: Descriptor, limit: int = MAX_CONFIG) -> bytes:
        """A small blob (a config) in memory, checked against its descriptor."""
        if desc.size > limit:
            raise RegistryError(f"blob: {desc.digest} is {desc.size} bytes, more than the {limit} allowed")
        resp = await self._send("GET", host, f"/v2/{repository}/blobs/{desc.digest}", scope_for(repository))
        if resp.status != 200:
            raise await self._fail(resp, f"blob {desc.digest} of {repository}")
        try:
            body = await resp.content.read(desc.size + 1)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise RegistryError(f"registry: reading blob {desc.digest}: {exc}") from None
        finally:
            resp.release()
        actual = "sha256:" + hashlib.sha256(body).hexdigest()
        if len(body) != desc.size or actual != desc.digest:
            raise DigestMismatchError(f"blob: {repository} served {len(body)} bytes with digest {actual} "
                                      f"for {desc.digest} ({desc.size} bytes); refused")
        return body

    async def download_blob(self, host: str, repository: str, desc: Descriptor, partial: Path,
                            on_bytes: ByteProgress | None = None, retries: int = 3) -> None:
        """Fetch a blob into `partial`, resuming from whatever it already holds; on return the
        file is complete and matches desc.digest. A mismatch deletes the file and raises."""
        partial.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(retries + 1):
            have = partial.stat().st_size if partial.exists() else 0
            if have > desc.size:
                os.truncate(partial, 0)
                have = 0
            if have == desc.size:
                break
            try:
                await self._fetch_range(host, repository, desc, partial, have, on_bytes)
                break
            except (DownloadInterrupted, TransportError):
                if attempt == retries:
                    raise
                await asyncio.sleep(min(0.2 * 2 ** attempt, 2.0))
        actual = await asyncio.to_thread(_file_digest, partial)
        if actual != desc.digest:
            partial.unlink(missing_ok=True)
            raise DigestMismatchError(f"blob: {repository} served content with digest {actual} for "
                                      f"{desc.digest}; refused")

    async def _fetch_range(self, host: str, repository: str, desc: Descriptor, partial: Path, have: int,
                           on_bytes: ByteProgress | None) -> None:
        headers = {"Range": f"bytes={have}-"} if have else {}
        resp = await self._send("GET", host, f"/v2/{repository}/blobs/{desc.digest}", scope_for(repository),
                                headers=headers)
        try:
            if resp.status == 206:
                start = resp.headers.get("Content-Range", "").removeprefix("bytes ").split("-", 1)[0]
                if start != str(have):  # not the range asked for: start over rather than guess
                    have = 0
            elif resp.status == 200:
                have = 0  # the server ignored Range: the body is the whole blob
            elif resp.status == 416:
                return  # nothing left to send; the digest check decides
            else:
                raise await self._fail(resp, f"blob {desc.digest} of {repository}")
            mode = "ab" if have else "wb"
            with open(partial, mode) as out:
                if not have:
                    out.truncate(0)
                done = have
                if on_bytes:
                    on_bytes(done, desc.size)
                try:
                    async for chunk in resp.content.iter_chunked(_CHUNK):
                        done += len(chunk)
                        if done > desc.size:
                            out.close()
                            partial.unlink(missing_ok=True)
                            raise DigestMismatchError(f"blob: {repository} sent more than the {desc.size} "
                                                      f"bytes of {desc.digest}; refused")
                        out.write(chunk)
                        if on_bytes:
                            on_bytes(done, desc.size)
                except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, asyncio.TimeoutError,
                        ConnectionError) as exc:
                    raise DownloadInterrupted(f"blob: download of {desc.digest} broke after {done} of "
                                              f"{desc.size} bytes ({exc or type(exc).__name__}); "
                                              f"pull again to resume") from None
            if done < desc.size:
                raise DownloadInterrupted(f"blob: download of {desc.digest} ended after {done} of "
                                          f"{desc.size} bytes; pull again to resume")
        finally:
            resp.release()

    async def blob_exists(self, host: str, repository: str, digest: str) -> bool:
        resp = await self._send("HEAD", host, f"/v2/{repository}/blobs/{digest}", scope_for(repository, True))
        if resp.status == 200:
            resp.release()
            return True
        if resp.status == 404:
            resp.release()
            return False
        raise await self._fail(resp, f"blob {digest} of {repository}")

    async def upload_blob(self, host: str, repository: str, digest: str, path: Path, size: int,
                          chunk_size: int | None = None, on_bytes: ByteProgress | None = None) -> None:
        """POST an upload, then PUT it whole or PATCH it in chunks and close it with PUT."""
        scope = scope_for(repository, True)
        resp = await self._send("POST", host, f"/v2/{repository}/blobs/uploads/", scope,
                                headers={"Content-Length": "0"})
        if resp.status != 202:
            raise await self._fail(resp, f"start of upload to {repository}")
        location = self._location(resp, host)
        if chunk_size and size > chunk_size:
            offset = 0
            with open(path, "rb") as f:
                while offset < size:
                    chunk = f.read(chunk_size)
                    end = offset + len(chunk) - 1
                    resp = await self._send("PATCH", host, location, scope, data=chunk, headers={
                        "Content-Type": "application/octet-stream", "Content-Range": f"{offset}-{end}",
                        "Content-Length": str(len(chunk))})
                    if resp.status != 202:
                        raise await self._fail(resp, f"chunk {offset}-{end} of {digest} to {repository}")
                    location = self._location(resp, host)
                    offset = end + 1
                    if on_bytes:
                        on_bytes(offset, size)
            body: Any = b""
            headers = {"Content-Length": "0"}
        else:
            def body() -> Any:
                return _file_sender(path, size, on_bytes)
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        sep = "&" if "?" in location else "?"
        resp = await self._send("PUT", host, f"{location}{sep}digest={quote(digest)}", scope,
                                headers=headers, data=body)
        if resp.status != 201:
            raise await self._fail(resp, f"upload of {digest} to {repository}")
        resp.release()

    def _location(self, resp: aiohttp.ClientResponse, host: str) -> str:
        location = resp.headers.get("Location")
        resp.release()
        if not location:
            raise RegistryError(f"registry: {host} accepted an upload but gave no Location")
        return urljoin(str(resp.url), location)

    async def put_manifest(self, host: str, repository: str, ref: str, data: bytes, media_type: str) -> str:
        resp = await self._send("PUT", host, f"/v2/{repository}/manifests/{ref}", scope_for(repository, True),
                                headers={"Content-Type": media_type}, data=data)
        if resp.status not in (200, 201):
            raise await self._fail(resp, f"manifest {repository}:{ref}")
        resp.release()
        expected = "sha256:" + hashlib.sha256(data).hexdigest()
        served = resp.headers.get("Docker-Content-Digest")
        if served and served != expected:
            raise DigestMismatchError(f"manifest: {host} recorded {served} for a manifest whose digest is {expected}")
        return expected


def _file_digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


async def _file_sender(path: Path, size: int, on_bytes: ByteProgress | None):
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            done += len(chunk)
            if on_bytes:
                on_bytes(done, size)
            yield chunk

