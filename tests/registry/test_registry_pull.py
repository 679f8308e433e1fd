"""Pulls from a real docker-registry, into which skopeo pushed images built by hand."""
import asyncio
import json

import pytest

from tests.registry.conftest import PASSWORD, USER
from tests.registry.helpers import (CuttingProxy, ThreadServer, build_image, manifest_entry, multi_arch, run,
                                    self_signed, skopeo, small_tar, start_registry, stop_registry,
                                    write_index)
from worker.images import ImageStore
from worker.images.auth import Credentials
from worker.images.manifests import Platform, host_platform
from worker.images.pull import pull
from worker.images.registry import (DigestMismatchError, DownloadInterrupted, RegistryAuthError, RegistryClient,
                                    RegistryNotFound)


def push_layout(tmp_path, layout, tag, dest, *extra):
    skopeo(tmp_path, "copy", "--dest-tls-verify=false", *extra, f"oci:{layout}:{tag}", f"docker://{dest}")


def blob_names(store):
    return sorted(p.name for p in (store.root / "blobs" / "sha256").iterdir())


async def do_pull(store, ref, creds=None, host=None, **kwargs):
    override = {host: Credentials(*creds)} if creds else None
    messages = []
    async with RegistryClient(override=override) as client:
        image = await pull(store, ref, client, progress=messages.append, **kwargs)
    return image, messages


def test_pull_by_tag_then_by_digest(tmp_path, registry, layers):
    layout = tmp_path / "layout"
    built = build_image(layout, layers)
    write_index(layout, [manifest_entry(built, "1")])
    name = f"{registry.host}/demo/busybox"
    push_layout(tmp_path, layout, "1", f"{name}:1")

    store = ImageStore(tmp_path / "a")
    image, messages = run(do_pull, store, f"{name}:1")
    assert image.id == built.config_digest
    assert image.manifest_digest == built.manifest_digest  # kept byte for byte
    assert image.references == [f"{name}:1"]
    assert image.repo_digests == [f"{name}@{built.manifest_digest}"]
    assert image.diff_ids == built.diff_ids
    statuses = [m["status"] for m in messages]
    assert statuses.count("Pull complete") == 2 and "Downloading" in statuses
    assert messages[-1]["status"] == f"Status: Downloaded newer image for {name}:1"
    assert any(m.get("progressDetail", {}).get("total") == len(built.layers[0]) for m in messages)
    # Pinning: what the manager records is found again, with and without the tag.
    assert store.resolve(f"{name}:1@{built.manifest_digest}").id == image.id
    assert store.resolve(f"{name}@{built.manifest_digest}").id == image.id
    dirs = store.layer_dirs(image)
    assert (dirs[0] / "bin" / "busybox").is_file() and (dirs[1] / "etc" / "motd").read_bytes().startswith(b"hello")

    again, messages = run(do_pull, store, f"{name}:1")
    assert again.id == image.id
    assert [m["status"] for m in messages].count("Already exists") == 2
    assert messages[-1]["status"] == f"Status: Image is up to date for {name}:1"

    other = ImageStore(tmp_path / "b")
    by_digest, _ = run(do_pull, other, f"{name}@{built.manifest_digest}")
    assert by_digest.id == image.id and by_digest.references == []
    assert by_digest.repo_digests == [f"{name}@{built.manifest_digest}"]
    assert other.resolve(f"{name}@{built.manifest_digest}").id == image.id


def test_pull_errors_name_what_is_missing(tmp_path, registry, layers):
    store = ImageStore(tmp_path / "s")
    with pytest.raises(RegistryNotFound, match="not found: manifest demo/nothing:1"):
        run(do_pull, store, f"{registry.host}/demo/nothing:1")
    with pytest.raises(ValueError, match="^reference: "):
        run(do_pull, store, f"{registry.host}/Demo:1")
    assert store.list() == [] and blob_names(store) == []


def test_manifest_list_picks_the_platform(tmp_path, registry, layers):
    layout = tmp_path / "layout"
    amd = build_image(layout, layers, arch="amd64")
    arm = build_image(layout, [small_tar({"arch": b"arm64\n"})], arch="arm64")
    index = multi_arch(layout, {"amd64": amd, "arm64": arm}, "multi")
    name = f"{registry.host}/demo/multi"
    push_layout(tmp_path, layout, "multi", f"{name}:v1", "--all")
    index_digest = "sha256:" + __import__("hashlib").sha256(index).hexdigest()

    store = ImageStore(tmp_path / "s")
    image, _ = run(do_pull, store, f"{name}:v1", platform=Platform.parse("linux/amd64"))
    assert image.id == amd.config_digest and image.config["architecture"] == "amd64"
    assert image.repo_digests == [f"{name}@{index_digest}"]  # the list's digest, as Docker records it
    assert store.resolve(f"{name}:v1@{index_digest}").id == image.id
    if host_platform().architecture == "amd64":
        assert run(do_pull, ImageStore(tmp_path / "h"), f"{name}:v1")[0].id == amd.config_digest

    arm_store = ImageStore(tmp_path / "arm")
    arm_image, _ = run(do_pull, arm_store, f"{name}@{index_digest}", platform=Platform.parse("linux/arm64"))
    assert arm_image.id == arm.config_digest and arm_image.config["architecture"] == "arm64"
    with pytest.raises(ValueError, match=r"platform: no manifest for linux/s390x .*linux/amd64, linux/arm64"):
        run(do_pull, ImageStore(tmp_path / "z"), f"{name}:v1", platform=Platform.parse("linux/s390x"))


def test_basic_auth(tmp_path, basic_registry, layers):
    layout = tmp_path / "layout"
    built = build_image(layout, layers[1:])
    write_index(layout, [manifest_entry(built, "1")])
    host = basic_registry.host
    push_layout(tmp_path, layout, "1", f"{host}/private/app:1", f"--dest-creds={USER}:{PASSWORD}")

    store = ImageStore(tmp_path / "s")
    with pytest.raises(RegistryAuthError, match="unauthorized"):
        run(do_pull, store, f"{host}/private/app:1")
    with pytest.raises(RegistryAuthError, match="unauthorized"):
        run(do_pull, store, f"{host}/private/app:1", creds=(USER, "wrong"), host=host)
    assert store.list() == [] and blob_names(store) == []
    image, _ = run(do_pull, store, f"{host}/private/app:1", creds=(USER, PASSWORD), host=host)
    assert image.id == built.config_digest


def test_token_auth(tmp_path, token_registry, layers):
    registry, issuer = token_registry
    layout = tmp_path / "layout"
    built = build_image(layout, layers[1:])
    write_index(layout, [manifest_entry(built, "1")])
    host = registry.host
    push_layout(tmp_path, layout, "1", f"{host}/team/app:1", f"--dest-creds={USER}:{PASSWORD}")

    store = ImageStore(tmp_path / "s")
    with pytest.raises(RegistryAuthError, match="authentication required"):
        run(do_pull, store, f"{host}/team/app:1")
    with pytest.raises(RegistryAuthError, match="incorrect username or password"):
        run(do_pull, store, f"{host}/team/app:1", creds=(USER, "wrong"), host=host)
    assert store.list() == [] and blob_names(store) == []
    issuer.requests.clear()
    image, _ = run(do_pull, store, f"{host}/team/app:1", creds=(USER, PASSWORD), host=host)
    assert image.id == built.config_digest
    # One token for the whole pull, scoped to pulling this repository.
    assert [r["scopes"] for r in issuer.requests] == [["repository:team/app:pull"]]
    assert issuer.requests[0]["service"] == issuer.service


@pytest.mark.parametrize("what", ["layer", "config"])
def test_corrupted_blob_is_refused_and_nothing_stored(tmp_path, registry, layers, what):
    layout = tmp_path / "layout"
    built = build_image(layout, layers)
    write_index(layout, [manifest_entry(built, "1")])
    name = f"{registry.host}/demo/bad"
    push_layout(tmp_path, layout, "1", f"{name}:1")
    target = built.layers[1] if what == "layer" else built.config
    data = registry.blob_data("sha256:" + __import__("hashlib").sha256(target).hexdigest())
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size, one byte flipped
    data.write_bytes(bytes(raw))

    store = ImageStore(tmp_path / "s")
    with pytest.raises(DigestMismatchError, match="refused"):
        run(do_pull, store, f"{name}:1")
    assert store.list() == [] and blob_names(store) == []
    leftovers = sorted(p.name for p in store.downloads_dir.iterdir())
    assert not any(built.layers[1] == (store.downloads_dir / n).read_bytes() for n in leftovers)
    assert raw not in [(store.downloads_dir / n).read_bytes() for n in leftovers]


def test_interrupted_download_resumes_with_a_range_request(tmp_path, registry, layers):
    layout = tmp_path / "layout"
    built = build_image(layout, layers[:1])
    write_index(layout, [manifest_entry(built, "1")])
    push_layout(tmp_path, layout, "1", f"{registry.host}/demo/big:1")
    layer = built.layers[0]
    layer_digest = "sha256:" + __import__("hashlib").sha256(layer).hexdigest()
    proxy = CuttingProxy(f"http://{registry.host}", f"/v2/demo/big/blobs/{layer_digest}", len(layer) // 3)
    with ThreadServer(proxy.app()) as server:
        name = f"127.0.0.1:{server.port}/demo/big"
        store = ImageStore(tmp_path / "s")
        # No retries: the pull fails, keeps what arrived, and stores no image.
        with pytest.raises(DownloadInterrupted, match="pull again to resume"):
            run(do_pull, store, f"{name}:1", retries=0)
        assert store.list() == [] and blob_names(store) == []
        assert store.partial_path(layer_digest).stat().st_size == len(layer) // 3
        proxy.seen.clear()
        image, _ = run(do_pull, store, f"{name}:1", retries=0)
        assert image.id == built.config_digest
        gets = [s for s in proxy.seen if s["path"].endswith(layer_digest)]
        assert gets == [{"method": "GET", "path": f"/v2/demo/big/blobs/{layer_digest}",
                         "range": f"bytes={len(layer) // 3}-", "status": 206,
                         "bytes": len(layer) - len(layer) // 3}]
        assert not store.partial_path(layer_digest).exists()

        # With retries, one pull rides over the cut on its own.
        proxy.cuts_left, proxy.seen[:] = 1, []
        again = ImageStore(tmp_path / "t")
        image, _ = run(do_pull, again, f"{name}:1")
        assert image.id == built.config_digest
        ranges = [s["range"] for s in proxy.seen if s["path"].endswith(layer_digest)]
        assert ranges == [None, f"bytes={len(layer) // 3}-"]


def test_concurrent_pulls_of_one_image_share_downloads(tmp_path, registry, layers):
    layout = tmp_path / "layout"
    built = build_image(layout, layers)
    write_index(layout, [manifest_entry(built, "1")])
    name = f"{registry.host}/demo/shared"
    push_layout(tmp_path, layout, "1", f"{name}:1")
    store = ImageStore(tmp_path / "s")

    async def several():
        return await asyncio.gather(*[do_pull(store, f"{name}:1") for _ in range(3)])

    results = asyncio.run(several())
    assert {image.id for image, _ in results} == {built.config_digest}
    assert [i.id for i in store.list()] == [built.config_digest]
    assert list(store.downloads_dir.iterdir()) == []
    assert json.loads((store.root / "index.json").read_text())["manifests"][0]["digest"] == built.manifest_digest


def test_tls_comes_first(tmp_path, layers):
    """A registry that only speaks TLS: the client tries https first (unverified, as for any
    loopback registry) and never needs plain http."""
    reg = start_registry(tmp_path, tls=self_signed(tmp_path))
    try:
        layout = tmp_path / "layout"
        built = build_image(layout, layers[1:])
        write_index(layout, [manifest_entry(built, "1")])
        push_layout(tmp_path, layout, "1", f"{reg.host}/demo/tls:1")
        image, _ = run(do_pull, ImageStore(tmp_path / "s"), f"{reg.host}/demo/tls:1")
        assert image.id == built.config_digest
    finally:
        stop_registry(reg)
