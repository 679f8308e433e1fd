"""The node's image API (daemon/imageapi.py) and the `shoal` commands on top of it, against a
real registry with basic auth."""
import asyncio
import io
import json
import os
import stat
import subprocess
import sys
import tarfile

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from daemon.imageapi import ImageAPI
from manager.controlapi import error_middleware
from tests.registry.conftest import PASSWORD, USER
from tests.registry.helpers import ThreadServer, build_image, manifest_entry, skopeo, write_index
from worker.images import ImageStore


def make_app(store, state_dir, in_use=None):
    app = web.Application(middlewares=[error_middleware], client_max_size=1 << 30)
    app.add_routes(ImageAPI(store, state_dir, in_use=in_use).routes())
    return app


def lines(body: bytes):
    return [json.loads(line) for line in body.splitlines() if line.strip()]


@pytest.fixture
def pushed(tmp_path, basic_registry, layers):
    layout = tmp_path / "layout"
    built = build_image(layout, layers)
    write_index(layout, [manifest_entry(built, "1")])
    name = f"{basic_registry.host}/demo/app"
    skopeo(tmp_path, "copy", "--dest-tls-verify=false", f"--dest-creds={USER}:{PASSWORD}",
           f"oci:{layout}:1", f"docker://{name}:1")
    return name, built


def test_login_pull_inspect_push_save_load_prune(tmp_path, basic_registry, pushed):
    name, built = pushed
    host = basic_registry.host
    state = tmp_path / "state"
    store = ImageStore(state / "images")
    in_use: set[str] = set()

    async def scenario():
        async with TestClient(TestServer(make_app(store, state, lambda: in_use))) as c:
            # Pull before login: refused before any progress, with a real status.
            r = await c.post("/images/create", params={"fromImage": name, "tag": "1"})
            assert r.status == 401 and "unauthorized" in (await r.json())["message"]

            r = await c.post("/auth", json={"username": USER, "password": "wrong", "serveraddress": host})
            assert r.status == 401
            assert not (state / "registry-auth.json").exists()
            r = await c.post("/auth", json={"username": USER, "password": PASSWORD, "serveraddress": host})
            assert r.status == 200 and (await r.json())["Status"] == "Login Succeeded"
            creds = state / "registry-auth.json"
            assert stat.S_IMODE(creds.stat().st_mode) == 0o600 and host in json.loads(creds.read_text())["auths"]

            r = await c.post("/images/create", params={"fromImage": name, "tag": "1"})
            assert r.status == 200
            msgs = lines(await r.read())
            assert msgs[-1] == {"status": f"Status: Downloaded newer image for {name}:1"}
            assert any(m.get("status") == "Downloading" and m["progressDetail"]["total"] for m in msgs)

            r = await c.post("/images/create", params={"fromImage": f"{host}/demo/none", "tag": "1"})
            assert r.status == 404

            r = await c.get(f"/images/{name}:1/json")
            info = await r.json()
            assert info["Id"] == built.config_digest
            assert info["RepoDigests"] == [f"{name}@{built.manifest_digest}"]
            assert info["RootFS"]["Layers"] == built.diff_ids and info["Architecture"] == "amd64"
            r = await c.get(f"/images/{name}@{built.manifest_digest}/json")
            assert (await r.json())["Id"] == built.config_digest
            assert (await c.get("/images/nothing:1/json")).status == 404
            listed = await (await c.get("/images/json")).json()
            assert listed[0]["RepoDigests"] == [f"{name}@{built.manifest_digest}"]

            r = await c.post(f"/images/{name}:1/tag", params={"repo": f"{host}/copy/app", "tag": "2"})
            assert r.status == 201
            r = await c.post(f"/images/{host}/copy/app/push", params={"tag": "2"})
            msgs = lines(await r.read())
            assert msgs[-1]["aux"]["Digest"] == built.manifest_digest
            assert not any("error" in m for m in msgs)

            r = await c.get("/images/get", params=[("names", f"{name}:1")])
            assert r.status == 200
            archive = await r.read()
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                assert json.loads(tar.extractfile("manifest.json").read())[0]["RepoTags"] == [f"{name}:1"]

            # Nothing is dangling; with -a, an image a container uses stays.
            r = await c.post("/images/prune")
            assert await r.json() == {"ImagesDeleted": [], "SpaceReclaimed": 0}
            in_use.add(built.config_digest)
            r = await c.post("/images/prune", params={"filters": json.dumps({"dangling": ["false"]})})
            assert (await r.json())["ImagesDeleted"] == []
            in_use.clear()
            r = await c.post("/images/prune", params={"filters": json.dumps({"dangling": ["false"]})})
            result = await r.json()
            assert {"Deleted": built.config_digest} in result["ImagesDeleted"]
            assert {"Untagged": f"{name}@{built.manifest_digest}"} in result["ImagesDeleted"]
            assert result["SpaceReclaimed"] >= sum(len(l) for l in built.layers)
            assert store.list() == []

            r = await c.post("/images/load", data=archive)
            assert lines(await r.read()) == [{"stream": f"Loaded image: {name}:1\n"}]
            assert store.resolve(f"{name}:1").id == built.config_digest
            r = await c.post("/images/load", data=b"not a tar")
            assert r.status == 400 and "load: " in (await r.json())["message"]

    asyncio.run(scenario())


def test_cli_pull_save_load_inspect(tmp_path, basic_registry, pushed):
    name, built = pushed
    state = tmp_path / "state"
    store = ImageStore(state / "images")
    sock = tmp_path / "shoal.sock"
    env = {**os.environ, "SHOAL_HOST": f"unix://{sock}"}

    def shoal(*args, input=None):
        return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True,
                              env=env, input=input, timeout=60)

    with ThreadServer(make_app(store, state), unix=sock):
        out = shoal("login", basic_registry.host, "-u", USER, "--password-stdin", input=PASSWORD + "\n")
        assert out.returncode == 0 and out.stdout.strip() == "Login Succeeded", out.stderr
        out = shoal("image", "pull", f"{name}:1")
        assert out.returncode == 0, out.stderr
        short = built.layers[0] and __import__("hashlib").sha256(built.layers[0]).hexdigest()[:12]
        assert f"{short}: Pull complete" in out.stdout
        assert f"Status: Downloaded newer image for {name}:1" in out.stdout
        out = shoal("image", "pull", f"{basic_registry.host}/demo/none:1")
        assert out.returncode == 1 and "not found" in out.stderr

        out = shoal("image", "ls", "--digests")
        assert built.manifest_digest in out.stdout
        info = json.loads(shoal("image", "inspect", f"{name}:1").stdout)
        assert info[0]["Id"] == built.config_digest

        saved = tmp_path / "saved.tar"
        out = shoal("image", "save", "-o", str(saved), f"{name}:1")
        assert out.returncode == 0, out.stderr
        assert shoal("image", "rm", f"{name}:1").returncode == 0
        out = shoal("image", "load", "-i", str(saved))
        assert out.stdout.strip() == f"Loaded image: {name}:1", out.stderr
        out = shoal("image", "prune", "-a", "-f")
        assert out.returncode == 0 and f"deleted: {built.config_digest}" in out.stdout

        # Through pipes, as `docker save IMAGE | docker load` works.
        saved_out = subprocess.run([sys.executable, "-m", "cli.main", "image", "save", f"{name}:1"],
                                   capture_output=True, env=env, timeout=60)
        assert saved_out.returncode == 1 and b"no such image" in saved_out.stderr
        out = shoal("image", "load", "-i", str(saved))
        piped = subprocess.run([sys.executable, "-m", "cli.main", "image", "save", f"{name}:1"],
                               capture_output=True, env=env, timeout=60)
        assert piped.returncode == 0 and piped.stdout == saved.read_bytes()
        store.remove(f"{name}:1")
        loaded = subprocess.run([sys.executable, "-m", "cli.main", "image", "load"], input=piped.stdout,
                                capture_output=True, env=env, timeout=60)
        assert loaded.stdout.decode().strip() == f"Loaded image: {name}:1"


def test_service_pins_the_pulled_digest(tmp_path, registry, layers):
    """A pulled image is pinned to its registry digest at service create, as Swarm does."""
    from tests.integration.harness import new_daemon, wait_for
    layout = tmp_path / "layout"
    built = build_image(layout, layers)
    write_index(layout, [manifest_entry(built, "1")])
    name = f"{registry.host}/demo/pin"
    skopeo(tmp_path, "copy", "--dest-tls-verify=false", f"oci:{layout}:1", f"docker://{name}:1")
    d = new_daemon("pin")
    try:
        d.start()
        d.cli("swarm", "init")
        d.cli("image", "pull", f"{name}:1")
        d.cli("service", "create", "--name", "pinned", "--detach", f"{name}:1", "sleep", "60")
        (svc,) = d.json("service", "inspect", "pinned")
        image = svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        assert image.startswith(f"{name}:1@sha256:"), image
        wait_for(lambda: any(t["Status"]["State"] == "running" for t in d.api_tasks("pinned")), 30,
                 what="the pinned task runs")
    finally:
        d.cleanup()
