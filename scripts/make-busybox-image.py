#!/usr/bin/env python3
"""Build a small root filesystem tar from a static busybox, for `shoal image import`.

    python scripts/make-busybox-image.py OUT.tar [--busybox /usr/bin/busybox]

The tar is reproducible (fixed owners and times, sorted entries): the same busybox gives
the same bytes, so the same image id. Needs Debian's busybox-static.
"""
from __future__ import annotations

import argparse
import io
import os
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

MTIME = 946684800  # 2000-01-01, fixed for reproducible digests

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
DIRS = {"bin": 0o755, "dev": 0o755, "etc": 0o755, "home": 0o755, "proc": 0o555, "root": 0o700,
        "sbin": 0o755, "sys": 0o555, "tmp": 0o1777, "usr": 0o755, "usr/bin": 0o755,
        "usr/sbin": 0o755, "var": 0o755, "var/tmp": 0o1777}
FILES = {"etc/passwd": PASSWD, "etc/group": GROUP, "etc/hostname": "", "etc/hosts": "",
         "etc/resolv.conf": ""}


def is_static_elf(path: Path) -> bool:
    """True if the ELF file has no PT_INTERP program header (no dynamic loader needed)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


def applets(busybox: Path) -> list[str]:
    out = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=True).stdout
    paths = sorted({line.strip().lstrip("/") for line in out.splitlines() if line.strip()})
    return [p for p in paths if p != "bin/busybox"]


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def build(busybox: Path, out: Path) -> int:
    names = applets(busybox)
    dirs = set(DIRS)
    for p in names:
        dirs.update(str(parent) for parent in Path(p).parents if str(parent) != ".")
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in sorted(dirs):
            tar.addfile(_info(d, tarfile.DIRTYPE, DIRS.get(d, 0o755)))
        data = busybox.read_bytes()
        info = _info("bin/busybox", tarfile.REGTYPE, 0o755)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for name in sorted(FILES):
            body = FILES[name].encode()
            info = _info(name, tarfile.REGTYPE, 0o644)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        for name in names:
            link = _info(name, tarfile.SYMTYPE, 0o777)
            link.linkname = "/bin/busybox"
            tar.addfile(link)
    os.replace(tmp, out)
    return len(names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to write the rootfs tar")
    parser.add_argument("--busybox", type=Path, default=Path("/usr/bin/busybox"),
                        help="static busybox binary (default: /usr/bin/busybox)")
    args = parser.parse_args(argv)
    if not args.busybox.is_file():
        print(f"busybox: {args.busybox} not found (apt-get install busybox-static)", file=sys.stderr)
        return 1
    if not is_static_elf(args.busybox):
        print(f"busybox: {args.busybox} is not a static binary (apt-get install busybox-static)",
              file=sys.stderr)
        return 1
    count = build(args.busybox, args.out)
    print(f"wrote {args.out} ({count} applets)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
