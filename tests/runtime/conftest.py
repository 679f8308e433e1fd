"""Fixtures for runtime tests: a busybox image in a temporary store, a Runtime on a unique
cgroup parent, and cleanup of every container, mount and cgroup even when a test fails."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0


@dataclass
class BusyboxImage:
    layers: list[Path]
    env: list[str]
    image_id: str


@pytest.fixture(scope="session")
def cgroup_parent():
    from worker.runtime.cgroups import detect_layout
    name = f"shoal-test-{os.getpid()}"
    yield name
    layout = detect_layout()
    mounts = [layout.unified] if layout.version == 2 else list(dict.fromkeys(layout.v1.values()))
    for mount in mounts:
        parent = Path(mount) / name
        if not parent.is_dir():
            continue
        for child in parent.iterdir():
            if child.is_dir():
                for pid in (child / "cgroup.procs").read_text().split():
                    try:
                        os.kill(int(pid), 9)
                    except ProcessLookupError:
                        pass
                try:
                    child.rmdir()
                except OSError:
                    pass
        try:
            parent.rmdir()
        except OSError:
            pass


@pytest.fixture(scope="session")
def busybox(tmp_path_factory) -> BusyboxImage:
    if not IS_ROOT:
        pytest.skip("needs root")
    from worker.images import ImageStore
    work = tmp_path_factory.mktemp("busybox")
    tar = work / "busybox.tar"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "make-busybox-image.py"), str(tar)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"{proc.stderr} (needs: apt-get install busybox-static)"
    store = ImageStore(work / "images")
    image = store.import_rootfs(tar, "busybox")
    return BusyboxImage(store.layer_dirs(image), image.config["config"]["Env"], image.id)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path) + "/"
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4]
        if mount_point.startswith(prefix):
            found.append(mount_point)
    return found


@pytest.fixture
def runtime(tmp_path, cgroup_parent):
    if not IS_ROOT:
        pytest.skip("needs root")
    from worker.runtime import Runtime
    root = tmp_path / "containers"
    rt = Runtime(root, cgroup_parent=cgroup_parent)
    try:
        yield rt
    finally:
        cleanup_root(root, cgroup_parent)


@pytest.fixture
def open_root(cgroup_parent):
    """A runtime root whose ancestors all let other users through (o+x), as a remapped
    container root needs; pytest's own tmp directories are private."""
    import tempfile
    if not IS_ROOT:
        pytest.skip("needs root")
    root = Path(tempfile.mkdtemp(prefix="shoal-userns-"))
    os.chmod(root, 0o711)
    try:
        yield root / "containers"
    finally:
        cleanup_root(root / "containers", cgroup_parent)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def engine_runtime(tmp_path, cgroup_parent):
    """engine_runtime("shoal"|"runc"|"crun") -> a Runtime on that engine; all cleaned up."""
    from worker.runtime import Runtime
    made = []

    def make(engine: str):
        rt = Runtime(tmp_path / f"state-{engine}", cgroup_parent=cgroup_parent, engine=engine)
        made.append((rt.root, engine))
        return rt
    try:
        yield make
    finally:
        for root, engine in made:
            cleanup_root(root, cgroup_parent, engine)


def cleanup_root(root: Path, cgroup_parent: str, engine: str = "shoal") -> None:
    """Delete every container under root, stop its supervisor, unmount and remove it all."""
    from worker.runtime import Runtime
    from worker.runtime import linux
    rt = Runtime(root, cgroup_parent=cgroup_parent, engine=engine)
    for st in rt.list():
        try:
            rt.delete(st.id, force=True)
        except Exception:  # noqa: BLE001 - keep cleaning
            pass
    rt.close()
    for mount_point in reversed(_mounts_under(root)):
        linux.umount2(mount_point, linux.MNT_DETACH)
    shutil.rmtree(root, ignore_errors=True)


def log_lines(rt, id: str, stream: str | None = None) -> str:
    """The container's log as text (entries of one stream, or all)."""
    import asyncio
    from worker.logs import read_logs

    async def collect():
        return [e async for e in read_logs(rt.log_path(id).parent)]
    return "".join(e.line for e in asyncio.run(collect()) if stream in (None, e.stream))


def cfg(busybox, args, **kw):
    import secrets
    from worker.runtime import ContainerConfig
    return ContainerConfig(id=secrets.token_hex(32), args=args, env=list(busybox.env),
                           layers=list(busybox.layers), **kw)


def run(rt, config, timeout: float = 20.0):
    """Create, start and wait for a container; (final state, its log as text)."""
    import asyncio
    rt.create(config)
    rt.start(config.id)
    st = asyncio.run(asyncio.wait_for(rt.wait(config.id), timeout))
    return st, log_lines(rt, config.id)


def facts(log: str) -> dict[str, str]:
    """key=value lines of a log."""
    out = {}
    for line in log.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out
