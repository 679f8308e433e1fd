"""Shoal's own push, and docker-archive / OCI archive load and save, checked with skopeo."""
import io
import json
import tarfile

import pytest

from tests.registry.conftest import PASSWORD, USER
from tests.registry.helpers import build_image, manifest_entry, run, skopeo, write_index
from worker.images import ImageStore
from worker.images.archive import load, save
from worker.images.auth import Credentials
from worker.images.pull import pull
from worker.images.push import push
from worker.images.registry import RegistryAuthError, RegistryClient


async def do_push(store, ref, creds=None, host=None, chunk_size=None):
    override = {host: Credentials(*creds)} if creds else None
    messages = []
    async with RegistryClient(override=override) as client:
        result = await push(store, ref, client, progress=messages.append, chunk_size=chunk_size)
    return result, messages


async def do_pull(store, ref, creds=None, host=None):
    override = {host: Credentials(*creds)} if creds else None
    async with RegistryClient(override=override) as client:
        return await pull(store, ref, client)


def test_push_then_pull_elsewhere(tmp_path, registry, busybox_tar):
    rootfs = tmp_path / "rootfs.tar"
    rootfs.write_bytes(busybox_tar)
    store = ImageStore(tmp_path / "a")
    name = f"{registry.host}/shoal/busybox"
    image = store.import_rootfs(rootfs, f"{name}:1", changes={"Cmd": ["sh"]})

    (pushed, digest, size), messages = run(do_push, store, f"{name}:1")
    assert digest == image.manifest_digest and size == len(store.manifest_bytes(image))
    assert pushed.repo_digests == [f"{name}@{digest}"]
    assert messages[-1]["aux"] == {"Tag": "1", "Digest": digest, "Size": size}
    assert [m.get("status") for m in messages].count("Pushed") == 2  # config and layer
    # What the registry now holds is the stored image, as another client sees it.
    seen = json.loads(skopeo(tmp_path, "inspect", "--tls-verify=false", "--raw", f"docker://{name}:1"))
    assert seen["config"]["digest"] == image.id
    assert json.loads(skopeo(tmp_path, "inspect", "--tls-verify=false", f"docker://{name}:1"))["Digest"] == digest

    other = ImageStore(tmp_path / "b")
    pulled = run(do_pull, other, f"{name}:1")
    assert (pulled.id, pulled.manifest_digest) == (image.id, image.manifest_digest)

    # A second push finds every blob there already.
    _, messages = run(do_push, store, f"{name}:1")
    assert [m.get("status") for m in messages].count("Layer already exists") == 2


def test_chunked_push_with_basic_auth(tmp_path, basic_registry, busybox_tar):
    rootfs = tmp_path / "rootfs.tar"
    rootfs.write_bytes(busybox_tar)
    host = basic_registry.host
    store = ImageStore(tmp_path / "a")
    image = store.import_rootfs(rootfs, f"{host}/chunks/bb:2")
    with pytest.raises(RegistryAuthError, match="unauthorized"):
        run(do_push, store, f"{host}/chunks/bb:2", creds=(USER, "wrong"), host=host)
    (_, digest, _), _ = run(do_push, store, f"{host}/chunks/bb:2", creds=(USER, PASSWORD), host=host,
                            chunk_size=256 * 1024)
    assert digest == image.manifest_digest
    pulled = run(do_pull, ImageStore(tmp_path / "b"), f"{host}/chunks/bb:2", creds=(USER, PASSWORD), host=host)
    assert pulled.id == image.id


def test_docker_archive_from_skopeo_loads_as_the_same_image(tmp_path, layers):
    layout = tmp_path / "layout"
    built = build_image(layout, layers)
    write_index(layout, [manifest_entry(built, "1")])
    archive = tmp_path / "docker.tar"
    skopeo(tmp_path, "copy", f"oci:{layout}:1", f"docker-archive:{archive}:demo/app:1")
    seen = json.loads(skopeo(tmp_path, "inspect", f"docker-archive:{archive}"))

    store = ImageStore(tmp_path / "s")
    [image] = load(store, archive)
    assert image.id == built.config_digest
    assert image.references == ["demo/app:1"]
    assert image.diff_ids == built.diff_ids == seen["Layers"]
    assert [d.name for d in store.layer_dirs(image)] == [d.split(":")[1] for d in built.diff_ids]

    # Save it again: skopeo reads the result both as a docker-archive and as an OCI archive.
    saved = tmp_path / "saved.tar"
    with open(saved, "wb") as f:
        save(store, ["demo/app:1"], f)
    as_docker = json.loads(skopeo(tmp_path, "inspect", "--config", f"docker-archive:{saved}"))
    assert as_docker["rootfs"]["diff_ids"] == built.diff_ids and as_docker["architecture"] == "amd64"
    assert json.loads(skopeo(tmp_path, "inspect", f"docker-archive:{saved}"))["Layers"] == built.diff_ids
    as_oci = json.loads(skopeo(tmp_path, "inspect", "--raw", f"oci-archive:{saved}:1"))
    assert as_oci["config"]["digest"] == image.id

    fresh = ImageStore(tmp_path / "fresh")
    [again] = load(fresh, saved)
    assert (again.id, again.manifest_digest, again.references) == (image.id, image.manifest_digest, image.references)


def test_oci_archive_loads_byte_for_byte(tmp_path, layers):
    layout = tmp_path / "layout"
    built = build_image(layout, layers)
    write_index(layout, [manifest_entry(built, "1")])
    archive = tmp_path / "oci.tar"
    skopeo(tmp_path, "copy", f"oci:{layout}:1", f"oci-archive:{archive}:registry.local/demo/app:1")
    store = ImageStore(tmp_path / "s")
    [image] = load(store, archive)
    assert (image.id, image.manifest_digest) == (built.config_digest, built.manifest_digest)
    assert image.references == ["registry.local/demo/app:1"]


def test_a_bad_archive_stores_nothing(tmp_path, layers):
    layout = tmp_path / "layout"
    built = build_image(layout, layers)
    write_index(layout, [manifest_entry(built, "1")])
    archive = tmp_path / "docker.tar"
    skopeo(tmp_path, "copy", f"oci:{layout}:1", f"docker-archive:{archive}:demo/app:1")
    # Swap the top layer for other bytes: its diff id no longer matches the config.
    bad = tmp_path / "bad.tar"
    with tarfile.open(archive) as src, tarfile.open(bad, "w") as dst:
        manifest = json.loads(src.extractfile("manifest.json").read())
        top = manifest[0]["Layers"][-1]
        for member in src.getmembers():
            data = src.extractfile(member) if member.isfile() else None
            if member.name == top:
                member.size = len(layers[0])
                data = io.BytesIO(layers[0])
            dst.addfile(member, data)
    store = ImageStore(tmp_path / "s")
    with pytest.raises(ValueError, match="diff id"):
        load(store, bad)
    assert store.list() == []
    assert list((store.root / "blobs" / "sha256").iterdir()) == []
    assert list(store.downloads_dir.iterdir()) == []
