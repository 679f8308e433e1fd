"""The store's side of pulls: images added from verified blobs, repo digests for pinning,
and prune."""
import gzip
import io
import json
import tarfile

import pytest

from worker.images import ImageStore
from worker.images.blobs import sha256_digest

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def layer_tar(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def staged_image(store: ImageStore, content: bytes, created: str = "2020-01-01T00:00:00Z"):
    """(manifest bytes, config bytes, staged files) as a pull leaves them before add_image."""
    tar = layer_tar("f", content)
    layer = gzip.compress(tar, mtime=0)
    config = json.dumps({"created": created, "architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [sha256_digest(tar)]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                           "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                                      "digest": sha256_digest(config), "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                                       "digest": sha256_digest(layer), "size": len(layer)}]}, indent=3).encode()
    partial = store.partial_path(sha256_digest(layer))
    partial.write_bytes(layer)
    return manifest, config, {sha256_digest(layer): partial}


@pytest.fixture
def store(tmp_path):
    return ImageStore(tmp_path / "images")


def test_added_image_keeps_its_manifest_bytes_and_repo_digest(store):
    manifest, config, staged = staged_image(store, b"one")
    digest = sha256_digest(manifest)
    image = store.add_image(manifest, config, staged, ["reg.local:5000/app:1"], f"reg.local:5000/app@{digest}")
    assert image.manifest_digest == digest and store.manifest_bytes(image) == manifest
    assert image.repo_digests == [f"reg.local:5000/app@{digest}"]
    assert not any(store.downloads_dir.iterdir())  # staged files moved into the store
    index = json.loads((store.root / "index.json").read_text())
    assert index["manifests"][0]["mediaType"] == DOCKER_MANIFEST
    # A new store object reads the same thing back from index.json.
    again = ImageStore(store.root).resolve("reg.local:5000/app:1")
    assert again.repo_digests == image.repo_digests
    (layer_dir,) = store.layer_dirs(image)
    assert (layer_dir / "f").read_bytes() == b"one"


def test_pinned_references_resolve(store):
    manifest, config, staged = staged_image(store, b"one")
    list_digest = "sha256:" + "f" * 64  # pulled through a manifest list: the repo digest is the list's
    image = store.add_image(manifest, config, staged, ["app:1"], f"app@{list_digest}")
    for ref in [f"app:1@{list_digest}", f"app@{list_digest}", f"app:other@{list_digest}",
                f"app@{image.manifest_digest}", "app:1"]:
        assert store.resolve(ref).id == image.id, ref
    assert store.resolve(f"other@{list_digest}") is None  # a repo digest belongs to its name
    assert store.resolve("app@sha256:" + "0" * 64) is None


def test_moving_a_tag_leaves_the_old_image_dangling_and_prune_takes_it(store):
    old_m, old_c, old_s = staged_image(store, b"old", "2020-01-01T00:00:00Z")
    old = store.add_image(old_m, old_c, old_s, ["app:latest"], f"app@{sha256_digest(old_m)}")
    new_m, new_c, new_s = staged_image(store, b"new", "2021-01-01T00:00:00Z")
    new = store.add_image(new_m, new_c, new_s, ["app:latest"], f"app@{sha256_digest(new_m)}")
    old = store.resolve(old.id)
    assert old.references == [] and old.repo_digests == [f"app@{old.manifest_digest}"]
    assert store.resolve("app:latest").id == new.id

    assert store.prune(in_use={old.id}).deleted == []  # used by a container: kept
    result = store.prune()
    assert result.deleted == [f"Untagged: app@{old.manifest_digest}", f"Deleted: {old.id}"]
    assert result.space_reclaimed >= len(old_m) + len(old_c)
    assert [i.id for i in store.list()] == [new.id]
    assert store.prune().deleted == []  # tagged images stay without all_images
    result = store.prune(all_images=True)
    assert result.deleted == ["Untagged: app:latest", f"Untagged: app@{new.manifest_digest}", f"Deleted: {new.id}"]
    assert store.list() == [] and store.blobs.digests() == []


def test_prune_sweeps_stale_partial_downloads(store):
    import os
    fresh = store.downloads_dir / ("a" * 64)
    stale = store.downloads_dir / ("b" * 64)
    fresh.write_bytes(b"x" * 10)
    stale.write_bytes(b"y" * 20)
    os.utime(stale, (0, 0))
    assert store.prune().space_reclaimed == 20
    assert fresh.exists() and not stale.exists()


def test_add_image_refuses_what_it_cannot_back(store):
    manifest, config, staged = staged_image(store, b"one")
    with pytest.raises(ValueError, match="^image: layer .* is neither stored nor staged"):
        store.add_image(manifest, config, {})
    with pytest.raises(ValueError, match="^config: content has"):
        store.add_image(manifest, config + b" ", staged)
    with pytest.raises(ValueError, match="^repo_digest: "):
        store.add_image(manifest, config, staged, repo_digest="app:1")
    with pytest.raises(ValueError, match="an image index is not an image"):
        store.add_image(b'{"schemaVersion": 2, "manifests": []}')
    assert store.list() == [] and store.blobs.digests() == []


def test_push_records_a_repo_digest(store):
    manifest, config, staged = staged_image(store, b"one")
    image = store.add_image(manifest, config, staged, ["app:1"])
    assert image.repo_digests == []
    image = store.add_repo_digest(image, f"reg.local/app@{image.manifest_digest}")
    assert store.resolve(f"reg.local/app:1@{image.manifest_digest}").id == image.id
    with pytest.raises(ValueError, match="^repo_digest: "):
        store.add_repo_digest(image, "reg.local/app:1")
    assert store.remove("app:1") == ["Untagged: app:1", f"Untagged: reg.local/app@{image.manifest_digest}",
                                     f"Deleted: {image.id}"]


def test_in_use_ids_come_from_container_bundles(tmp_path, store):
    from daemon.imageapi import container_image_ids
    used_m, used_c, used_s = staged_image(store, b"used")
    used = store.add_image(used_m, used_c, used_s, ["used:1"])
    free_m, free_c, free_s = staged_image(store, b"free")
    store.add_image(free_m, free_c, free_s, ["free:1"])
    bundle = tmp_path / "containers" / ("a" * 64)
    bundle.mkdir(parents=True)
    lowers = [str(p) for p in store.layer_paths(used)] + [str(tmp_path / "extra")]
    (bundle / "shoal.json").write_text(json.dumps({"layers": lowers}))
    (tmp_path / "containers" / ("b" * 64)).mkdir()  # a bundle being created: no shoal.json yet
    assert container_image_ids(store, tmp_path / "containers") == {used.id}
    assert container_image_ids(store, tmp_path / "nowhere") == set()
