"""docker-archive and OCI layout archives, built by hand the way `docker save` (before and
after Docker 25) writes them."""
import gzip
import io
import json
import tarfile

import pytest

from worker.images import ImageStore
from worker.images.archive import load, save
from worker.images.blobs import sha256_digest


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_tar(path, entries):
    """entries: name -> bytes, or ("symlink", target)."""
    with tarfile.open(path, "w") as tar:
        for name, value in entries.items():
            info = tarfile.TarInfo(name)
            if isinstance(value, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, value[1]
                tar.addfile(info)
            else:
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value))
    return path


LAYERS = [layer_tar({"bin/sh": b"#!shell\n"}), layer_tar({"etc/motd": b"hi\n"})]
CONFIG = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                     "created": "2020-01-01T00:00:00Z",
                     "rootfs": {"type": "layers", "diff_ids": [sha256_digest(l) for l in LAYERS]}}).encode()
CONFIG_ID = sha256_digest(CONFIG)


def legacy_docker_archive(path, repo_tags, layers=LAYERS):
    """Docker < 25: <id>/layer.tar per layer (a repeated layer as a symlink), <id>.json config."""
    entries = {f"{CONFIG_ID[7:]}.json": CONFIG, "l1/layer.tar": layers[0], "l1/VERSION": b"1.0",
               "l2/layer.tar": layers[1], "l3/layer.tar": ("symlink", "../l1/layer.tar")}
    entries["manifest.json"] = json.dumps([{"Config": f"{CONFIG_ID[7:]}.json", "RepoTags": repo_tags,
                                            "Layers": ["l1/layer.tar", "l2/layer.tar"]}]).encode()
    entries["repositories"] = b"{}"
    return write_tar(path, entries)


@pytest.fixture
def store(tmp_path):
    return ImageStore(tmp_path / "images")


def test_load_a_legacy_docker_archive(store, tmp_path):
    archive = legacy_docker_archive(tmp_path / "a.tar", ["busybox:latest", "docker.io/library/busybox:1"])
    [image] = load(store, archive)
    assert image.id == CONFIG_ID
    assert image.references == ["busybox:1", "busybox:latest"]
    assert image.diff_ids == [sha256_digest(l) for l in LAYERS]
    low, high = store.layer_dirs(image)
    assert (low / "bin" / "sh").read_bytes() == b"#!shell\n" and (high / "etc" / "motd").read_bytes() == b"hi\n"
    assert list(store.downloads_dir.iterdir()) == []


def test_load_gzip_layers_and_a_compressed_archive(store, tmp_path):
    gz = [gzip.compress(l, mtime=0) for l in LAYERS]
    plain = legacy_docker_archive(tmp_path / "a.tar", ["app:gz"], layers=gz)
    compressed = tmp_path / "a.tar.gz"
    compressed.write_bytes(gzip.compress(plain.read_bytes()))
    [image] = load(store, compressed)
    assert image.id == CONFIG_ID and image.size == sum(len(g) for g in gz)


def test_a_layer_that_does_not_match_its_diff_id_stores_nothing(store, tmp_path):
    archive = legacy_docker_archive(tmp_path / "a.tar", ["app:1"], layers=[LAYERS[0], layer_tar({"x": b"y"})])
    with pytest.raises(ValueError, match="^load: layer 'l2/layer.tar' has diff id .*, the config says"):
        load(store, archive)
    assert store.list() == [] and store.blobs.digests() == [] and list(store.downloads_dir.iterdir()) == []


@pytest.mark.parametrize("entries, error", [
    ({"x": b"y"}, "has neither manifest.json"),
    ({"manifest.json": b"{"}, "manifest.json is not valid JSON"),
    ({"manifest.json": b"[{}]"}, r"manifest.json\[0\]: needs Config and Layers"),
    ({"manifest.json": json.dumps([{"Config": "c.json", "Layers": []}]).encode(), "c.json": CONFIG},
     "0 layers but the config lists 2"),
    ({"manifest.json": json.dumps([{"Config": "c.json", "Layers": [], "RepoTags": ["Bad:x"]}]).encode(),
      "c.json": b'{"rootfs": {"diff_ids": []}}'}, r"RepoTags: reference"),
    ({"manifest.json": json.dumps([{"Config": "../c.json", "Layers": []}]).encode()}, "escapes the layer root"),
])
def test_bad_archives_are_refused_with_a_reason(store, tmp_path, entries, error):
    with pytest.raises(ValueError, match=error):
        load(store, write_tar(tmp_path / "bad.tar", entries))
    assert store.list() == []


def test_not_a_tar(store, tmp_path):
    (tmp_path / "x.tar").write_bytes(b"hello" * 200)
    with pytest.raises(ValueError, match="^load: .* is not a tar archive"):
        load(store, tmp_path / "x.tar")


def test_save_then_load_keeps_identity(store, tmp_path):
    [image] = load(store, legacy_docker_archive(tmp_path / "a.tar", ["app:1", "app:2"]))
    out = tmp_path / "saved.tar"
    with open(out, "wb") as f:
        save(store, ["app:1", image.id], f)
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
        manifest = json.loads(tar.extractfile("manifest.json").read())
        index = json.loads(tar.extractfile("index.json").read())
    assert {"oci-layout", "index.json", "manifest.json", f"blobs/sha256/{image.id[7:]}"} <= names
    assert manifest == [{"Config": f"blobs/sha256/{image.id[7:]}", "RepoTags": ["app:1"],
                         "Layers": [f"blobs/sha256/{d[7:]}" for d in image.diff_ids]}]
    assert index["manifests"][0]["annotations"] == {"io.containerd.image.name": "docker.io/library/app:1",
                                                    "org.opencontainers.image.ref.name": "1"}
    fresh = ImageStore(tmp_path / "fresh")
    [again] = load(fresh, out)
    assert (again.id, again.manifest_digest, again.references) == (image.id, image.manifest_digest, ["app:1"])
    with pytest.raises(ValueError, match="^names: no such image 'nope'"):
        save(store, ["nope"], io.BytesIO())


def test_oci_layout_names(store, tmp_path):
    """index.json entries: a containerd name wins; a bare ref.name is only a tag, so the image
    loads untagged."""
    blobs = {}

    def blob(data):
        blobs[f"blobs/sha256/{sha256_digest(data)[7:]}"] = data
        return {"digest": sha256_digest(data), "size": len(data)}

    config, layer = blob(CONFIG), [blob(l) for l in LAYERS]
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **l} for l in layer]}
                          ).encode()
    m = blob(manifest)
    entries = [{"mediaType": "application/vnd.oci.image.manifest.v1+json", **m, "annotations": a} for a in (
        {"org.opencontainers.image.ref.name": "latest"},
        {"io.containerd.image.name": "docker.io/team/app:2", "org.opencontainers.image.ref.name": "2"},
        {"org.opencontainers.image.ref.name": "reg.local/app:3"})]
    archive = write_tar(tmp_path / "oci.tar", {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
                                               "index.json": json.dumps({"schemaVersion": 2, "manifests": entries}).encode(),
                                               **blobs})
    images = load(store, archive)
    assert [i.manifest_digest for i in images] == [sha256_digest(manifest)] * 3
    assert store.list()[0].references == ["reg.local/app:3", "team/app:2"]
