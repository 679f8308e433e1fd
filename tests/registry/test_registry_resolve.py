"""Resolving a tag to its registry digest, as a manager does at service create/update
(daemon/serviceimages.py NodeImages.registry_digest), against a real docker-registry: the list
digest of a multi-platform image, a node's stored login for token auth, and one-line reasons."""
from __future__ import annotations

import hashlib

import pytest

from daemon.serviceimages import NodeImages
from tests.registry.conftest import PASSWORD, USER
from tests.registry.helpers import build_image, manifest_entry, multi_arch, run, skopeo, small_tar, write_index
from worker.images import ImageStore
from worker.images.auth import Credentials, encode_auth_config
from worker.images.nodeclient import node_credentials


def node(tmp_path) -> NodeImages:
    return NodeImages(ImageStore(tmp_path / "state" / "images"), tmp_path / "state")


def test_a_tag_resolves_to_the_digest_docker_records(tmp_path, registry, layers):
    layout = tmp_path / "layout"
    amd = build_image(layout, layers, arch="amd64")
    arm = build_image(layout, [small_tar({"arch": b"arm64\n"})], arch="arm64")
    index = multi_arch(layout, {"amd64": amd, "arm64": arm}, "multi")
    name = f"{registry.host}/demo/multi"
    skopeo(tmp_path, "copy", "--dest-tls-verify=false", "--all", f"oci:{layout}:multi", f"docker://{name}:v1")
    images = node(tmp_path)
    assert run(images.registry_digest, f"{name}:v1", "") == "sha256:" + hashlib.sha256(index).hexdigest()

    single = tmp_path / "single"
    built = build_image(single, layers[1:])
    write_index(single, [manifest_entry(built, "latest")])
    skopeo(tmp_path, "copy", "--dest-tls-verify=false", f"oci:{single}:latest", f"docker://{registry.host}/one:latest")
    assert run(images.registry_digest, f"{registry.host}/one", "") == built.manifest_digest  # the implied tag

    with pytest.raises(LookupError, match=r"^not found: manifest demo/multi:v2 on "):
        run(images.registry_digest, f"{name}:v2", "")
    with pytest.raises(LookupError, match=r"^registry: cannot reach 127.0.0.1:1"):
        run(images.registry_digest, "127.0.0.1:1/demo/app:1", "")


def test_token_auth_with_the_nodes_login_or_the_requests(tmp_path, token_registry, layers):
    registry, issuer = token_registry
    layout = tmp_path / "layout"
    built = build_image(layout, layers[1:])
    write_index(layout, [manifest_entry(built, "1")])
    name = f"{registry.host}/team/app"
    skopeo(tmp_path, "copy", "--dest-tls-verify=false", f"--dest-creds={USER}:{PASSWORD}",
           f"oci:{layout}:1", f"docker://{name}:1")
    images = node(tmp_path)
    with pytest.raises(LookupError, match="^unauthorized: "):
        run(images.registry_digest, f"{name}:1", "")
    given = encode_auth_config(registry.host, Credentials(USER, PASSWORD))
    assert run(images.registry_digest, f"{name}:1", given) == built.manifest_digest
    assert images.stored_auth(f"{name}:1") == ""
    node_credentials(tmp_path / "state").put(registry.host, Credentials(USER, PASSWORD))
    assert images.stored_auth(f"{name}:1") == given
    assert run(images.registry_digest, f"{name}:1", images.stored_auth(f"{name}:1")) == built.manifest_digest
    assert images.stored_auth("busybox") == ""  # no login for Docker Hub
