import gzip
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from worker.images import ImageInUseError, ImageNotFoundError, ImageStore
from worker.images.blobs import BlobStore
from worker.images.image import DEFAULT_ENV, REF_ANNOTATION
from worker.images.unpack import OPAQUE_XATTR, unpack_layer

ROOT = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (ownership, device nodes, xattrs)")


def entry(name, kind=tarfile.REGTYPE, data=b"", mode=0o644, uid=0, gid=0, linkname="", mtime=1_000_000,
          major=0, minor=0):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, mtime
    info.linkname, info.devmajor, info.devminor = linkname, major, minor
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def make_tar(path: Path, entries, compress=False) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    raw = buf.getvalue()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


ROOTFS = [
    entry("bin", tarfile.DIRTYPE, mode=0o755),
    entry("bin/tool", data=b"#!/bin/sh\necho hi\n", mode=0o4755, uid=1000, gid=1000),
    entry("bin/alias", tarfile.SYMTYPE, linkname="tool"),
    entry("bin/hard", tarfile.LNKTYPE, linkname="bin/tool"),
    entry("etc", tarfile.DIRTYPE, mode=0o755, mtime=123),
    entry("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n"),
    entry("tmp", tarfile.DIRTYPE, mode=0o1777),
]


@pytest.fixture
def store(tmp_path):
    return ImageStore(tmp_path / "images")


@pytest.fixture
def rootfs_tar(tmp_path):
    return make_tar(tmp_path / "rootfs.tar", ROOTFS)


def test_import_writes_an_oci_layout(store, rootfs_tar):
    image = store.import_rootfs(rootfs_tar, "app")
    assert image.id.startswith("sha256:") and len(image.id) == 71
    assert image.references == ["app:latest"]
    assert image.config["config"]["Env"] == DEFAULT_ENV
    assert image.config["config"]["Cmd"] is None
    assert image.config["os"] == "linux" and image.config["architecture"]
    assert image.created.endswith("Z")
    assert image.size == rootfs_tar.stat().st_size
    blobs = BlobStore(store.root)
    manifest = blobs.read_json(image.manifest_digest)
    assert manifest["config"]["digest"] == image.id
    assert blobs.exists(manifest["layers"][0]["digest"])
    assert image.diff_ids == [manifest["layers"][0]["digest"]]  # stored uncompressed
    index = json.loads((store.root / "index.json").read_text())
    assert index["manifests"][0]["annotations"][REF_ANNOTATION] == "app:latest"
    assert json.loads((store.root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert not list(store.root.rglob(".tmp-*"))


def test_same_content_same_id_and_tags_accumulate(store, rootfs_tar):
    a = store.import_rootfs(rootfs_tar, "app:1")
    b = store.import_rootfs(rootfs_tar, "app:2")
    # created timestamps differ, so configs (ids) differ; each tag names its own image
    assert a.id != b.id
    images = store.list()
    assert sorted(r for i in images for r in i.references) == ["app:1", "app:2"]
    # retagging moves the tag; the old image stays, untagged
    c = store.import_rootfs(rootfs_tar, "app:1")
    assert store.resolve("app:1").id == c.id
    dangling = [i for i in store.list() if i.id == a.id]
    assert dangling and dangling[0].references == []


def test_gzip_import_has_uncompressed_diff_id(store, tmp_path):
    plain = make_tar(tmp_path / "plain.tar", ROOTFS)
    gz = make_tar(tmp_path / "rootfs.tar.gz", ROOTFS, compress=True)
    a = store.import_rootfs(plain, "plain")
    b = store.import_rootfs(gz, "gz")
    assert a.diff_ids == b.diff_ids


def test_resolve_forms(store, rootfs_tar):
    image = store.import_rootfs(rootfs_tar, "registry.local:5000/team/app:v1")
    hex_id = image.id.split(":")[1]
    for ref in ["registry.local:5000/team/app:v1", image.id, hex_id, hex_id[:12], "sha256:" + hex_id[:12],
                f"registry.local:5000/team/app@{image.manifest_digest}"]:
        assert store.resolve(ref).id == image.id, ref
    assert store.resolve("registry.local:5000/team/app") is None  # :latest was never tagged
    assert store.resolve("other") is None
    assert store.resolve(hex_id[:11]) is None  # too short to be an id prefix: a name
    assert store.resolve("app@sha256:" + "0" * 64) is None
    with pytest.raises(ValueError, match="^reference: "):
        store.resolve("Bad Name")


def test_changes_and_their_validation(store, rootfs_tar):
    image = store.import_rootfs(rootfs_tar, "app", changes={
        "Cmd": ["sh"], "Env": ["FOO=1", "PATH=/bin"], "WorkingDir": "/srv", "Entrypoint": "run me"})
    cfg = image.config["config"]
    assert cfg["Cmd"] == ["sh"] and cfg["WorkingDir"] == "/srv"
    assert cfg["Entrypoint"] == ["/bin/sh", "-c", "run me"]
    assert cfg["Env"] == ["PATH=/bin", "FOO=1"]
    for changes, message in [({"Bogus": 1}, "changes: unknown key 'Bogus'"),
                             ({"Cmd": 5}, "changes.Cmd: must be"),
                             ({"Env": ["NOEQUALS"]}, "changes.Env: must be"),
                             ({"WorkingDir": "rel"}, "changes.WorkingDir: must be an absolute path")]:
        before = sorted(p.name for p in (store.root / "blobs" / "sha256").iterdir())
        with pytest.raises(ValueError, match=message.replace(".", r"\.")):
            store.import_rootfs(rootfs_tar, "bad", changes=changes)
        assert sorted(p.name for p in (store.root / "blobs" / "sha256").iterdir()) == before


@pytest.mark.parametrize("content", [b"", b"hello, I am not a tar archive\n" * 40, b"\x1f\x8bnot gzip at all"])
def test_import_refuses_non_tar_and_stores_nothing(store, tmp_path, content):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match="^import: .*bad.tar is not a (readable )?tar archive"):
        store.import_rootfs(bad, "bad")
    assert list((store.root / "blobs" / "sha256").iterdir()) == []
    assert store.list() == []


def test_import_errors_name_the_field(store, tmp_path, rootfs_tar):
    with pytest.raises(ValueError, match="^import: .*no such file"):
        store.import_rootfs(tmp_path / "missing.tar", "x")
    with pytest.raises(ValueError, match="^reference: "):
        store.import_rootfs(rootfs_tar, "UPPER")
    with pytest.raises(ValueError, match="^reference: cannot import to a digest"):
        store.import_rootfs(rootfs_tar, "x@sha256:" + "a" * 64)


def test_import_refuses_members_escaping_the_root(store, tmp_path):
    evil = make_tar(tmp_path / "evil.tar", [entry("../../etc/evil", data=b"x")])
    with pytest.raises(ValueError, match="escapes the layer root"):
        store.import_rootfs(evil, "evil")


def test_layer_dirs_unpack_once_and_preserve_metadata(store, rootfs_tar):
    image = store.import_rootfs(rootfs_tar, "app")
    [layer] = store.layer_dirs(image)
    assert layer.parent == store.root / "layers" and layer.name == image.diff_ids[0].split(":")[1]
    tool = layer / "bin" / "tool"
    assert tool.read_bytes() == b"#!/bin/sh\necho hi\n"
    assert stat.S_IMODE(tool.stat().st_mode) == 0o4755
    assert os.readlink(layer / "bin" / "alias") == "tool"
    assert (layer / "bin" / "hard").stat().st_ino == tool.stat().st_ino
    assert stat.S_IMODE((layer / "tmp").stat().st_mode) == 0o1777
    assert (layer / "etc").stat().st_mtime == 123
    if IS_ROOT:
        assert (tool.stat().st_uid, tool.stat().st_gid) == (1000, 1000)
    marker = layer / "etc" / "marker"
    marker.write_text("unpacked once")
    assert store.layer_dirs(image) == [layer] and marker.exists()


def test_concurrent_unpack_of_the_same_layer(store, rootfs_tar):
    image = store.import_rootfs(rootfs_tar, "app")
    results, errors = [], []

    def work():
        try:
            results.append(store.layer_dirs(image))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len({tuple(r) for r in results}) == 1
    assert not list((store.root / "layers").glob(".tmp-*"))


def test_unpack_refuses_writing_through_a_symlink(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    blob = make_tar(tmp_path / "l.tar", [
        entry("link", tarfile.SYMTYPE, linkname=str(outside)),
        entry("link/pwned", data=b"x"),
    ])
    with pytest.raises(ValueError, match="goes through symlink"):
        unpack_layer(blob, tmp_path / "layer")
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "layer").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_unpack_checks_the_diff_id(tmp_path):
    blob = make_tar(tmp_path / "l.tar", ROOTFS)
    with pytest.raises(ValueError, match="expected diff id"):
        unpack_layer(blob, tmp_path / "layer", "sha256:" + "0" * 64)
    assert not (tmp_path / "layer").exists()


@needs_root
def test_unpack_turns_whiteouts_into_overlay_whiteouts(tmp_path):
    blob = make_tar(tmp_path / "l.tar", [
        entry("etc", tarfile.DIRTYPE, mode=0o755),
        entry("etc/.wh.passwd"),
        entry("var/cache/.wh..wh..opq"),
        entry("var/cache/new", data=b"n"),
        entry("dev/null", tarfile.CHRTYPE, mode=0o666, major=1, minor=3),
        entry(".wh..wh.plnk/123.456"),  # AUFS hard-link bookkeeping: dropped
    ])
    layer = unpack_layer(blob, tmp_path / "layer")
    wh = (layer / "etc" / "passwd").lstat()
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == os.makedev(0, 0)
    assert os.getxattr(layer / "var" / "cache", OPAQUE_XATTR) == b"y"
    assert (layer / "var" / "cache" / "new").read_bytes() == b"n"
    null = (layer / "dev" / "null").lstat()
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert not (layer / ".wh..wh.plnk").exists()


def test_remove_untags_then_deletes(store, rootfs_tar, tmp_path):
    other = make_tar(tmp_path / "other.tar", [entry("f", data=b"other")])
    image = store.import_rootfs(rootfs_tar, "app:1")
    store.layer_dirs(image)
    blobs = BlobStore(store.root)
    assert store.tag("app:1", "app:2").references == ["app:1", "app:2"]
    keep = store.import_rootfs(other, "keep")

    assert store.remove("app:1") == ["Untagged: app:1"]
    assert store.resolve("app:2").id == image.id
    with pytest.raises(ImageNotFoundError, match="no such image"):
        store.remove("app:1")
    done = store.remove("app:2")
    assert done == ["Untagged: app:2", f"Deleted: {image.id}"]
    assert store.resolve(image.id) is None
    assert not blobs.exists(image.manifest_digest) and not blobs.exists(image.id)
    assert not (store.root / "layers" / image.diff_ids[0].split(":")[1]).exists()
    assert [i.id for i in store.list()] == [keep.id]


def test_remove_by_id_with_several_tags_needs_force(store, rootfs_tar):
    image = store.import_rootfs(rootfs_tar, "app:1")
    store.tag(image.id, "app:2")
    with pytest.raises(ValueError, match="tagged as app:1, app:2"):
        store.remove(image.id)
    assert store.remove(image.id, force=True)[-1] == f"Deleted: {image.id}"
    assert store.list() == []


def test_shared_layer_survives_removal_of_one_image(store, rootfs_tar):
    a = store.import_rootfs(rootfs_tar, "a")
    b = store.import_rootfs(rootfs_tar, "b")
    [layer] = store.layer_dirs(a)
    store.remove("a")
    assert layer.is_dir() and store.layer_dirs(b) == [layer]


@needs_root
def test_remove_refuses_an_image_whose_layer_is_mounted(store, rootfs_tar, tmp_path):
    from worker.runtime import linux
    image = store.import_rootfs(rootfs_tar, "app")
    [layer] = store.layer_dirs(image)
    target = tmp_path / "mnt"
    target.mkdir()
    (tmp_path / "empty").mkdir()
    linux.mount("overlay", target, "overlay", linux.MS_RDONLY, f"lowerdir={layer}:{tmp_path / 'empty'}")
    try:
        with pytest.raises(ImageInUseError, match="in use"):
            store.remove("app")
        assert store.resolve("app").id == image.id  # nothing changed
    finally:
        linux.umount2(target)
    store.remove("app")
    assert store.list() == []


def test_crash_leftovers_are_swept_and_never_seen(tmp_path, rootfs_tar):
    store = ImageStore(tmp_path / "images")
    image = store.import_rootfs(rootfs_tar, "app")
    (store.root / "blobs" / "sha256" / ".tmp-half").write_bytes(b"half a blob")
    (store.root / "layers" / ".tmp-abc-1234").mkdir()
    store = ImageStore(tmp_path / "images")
    assert not list(store.root.rglob(".tmp-*"))
    assert [i.id for i in store.list()] == [image.id]


def test_put_stream_never_leaves_a_partial_blob(tmp_path):
    blobs = BlobStore(tmp_path)

    class Broken(io.BytesIO):
        def read(self, n=-1):
            if self.tell() > 10:
                raise OSError("disk on fire")
            return super().read(min(n, 8) if n and n > 0 else 8)

    with pytest.raises(OSError, match="disk on fire"):
        blobs.put_stream(Broken(b"x" * 100))
    with pytest.raises(ValueError, match="^digest: content has"):
        blobs.put_stream(io.BytesIO(b"data"), expected="sha256:" + "0" * 64)
    assert list(blobs.dir.iterdir()) == []


def test_busybox_script_builds_a_reproducible_rootfs(tmp_path):
    script = ROOT / "scripts" / "make-busybox-image.py"
    out1, out2 = tmp_path / "a.tar", tmp_path / "b.tar"
    for out in (out1, out2):
        proc = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr + "  (needs: apt-get install busybox-static)"
    assert out1.read_bytes() == out2.read_bytes()
    with tarfile.open(out1) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["bin/busybox"].isreg() and members["bin/busybox"].mode == 0o755
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "/bin/busybox"
    assert members["tmp"].mode == 0o1777
    for name in ["etc/passwd", "etc/group", "etc/hostname", "etc/hosts", "etc/resolv.conf", "proc", "sys", "dev"]:
        assert name in members
    with tarfile.open(out1) as tar:
        passwd = tar.extractfile("etc/passwd").read().decode()
    assert passwd.startswith("root:x:0:0:") and "nobody:x:65534:65534:" in passwd


def test_busybox_script_refuses_a_dynamic_binary(tmp_path):
    script = ROOT / "scripts" / "make-busybox-image.py"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "x.tar"), "--busybox", sys.executable],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "not a static binary" in proc.stderr
