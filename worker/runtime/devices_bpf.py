"""Device access rules on cgroup v2, where there is no devices controller: an eBPF program of
type BPF_PROG_TYPE_CGROUP_DEVICE attached to the container's cgroup, as runc and crun do.

The program gets (access type | device type << 0, major, minor) and returns 1 to allow or 0
to deny. Rules are OCI linux.resources.devices entries; as with the v1 devices.allow/deny
files they are applied in order, so the last rule that matches decides; nothing matching denies.
"""
from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path

SYS_BPF = {"x86_64": 321, "aarch64": 280}
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2

DEV_BLOCK, DEV_CHAR = 1, 2
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4
_ACCESS = {"m": ACC_MKNOD, "r": ACC_READ, "w": ACC_WRITE}

# eBPF opcodes used here
LDX_W = 0x61        # dst = *(u32 *)(src + off)
AND32_K = 0x54
RSH32_K = 0x74
MOV64_K = 0xB7
MOV64_X = 0xBF
JNE_K = 0x55
JNE_X = 0x5D
EXIT = 0x95


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def program(rules: list[dict]) -> bytes:
    """The program for these rules. Registers: r2 device type, r3 access, r4 major, r5 minor."""
    out = [
        _insn(LDX_W, 2, 1, 0), _insn(AND32_K, 2, imm=0xFFFF),
        _insn(LDX_W, 3, 1, 0), _insn(RSH32_K, 3, imm=16),
        _insn(LDX_W, 4, 1, 4), _insn(LDX_W, 5, 1, 8),
    ]
    for rule in reversed(rules):  # the last matching rule wins: test it first
        checks = []
        kind = rule.get("type") or "a"
        if kind in ("c", "b"):
            checks.append(("jne", 2, DEV_CHAR if kind == "c" else DEV_BLOCK))
        elif kind != "a":
            raise ValueError(f"devices: type must be a, b or c, got {kind!r}")
        mask = 0
        for ch in rule.get("access") or "rwm":
            if ch not in _ACCESS:
                raise ValueError(f"devices: access must be made of r, w and m, got {rule.get('access')!r}")
            mask |= _ACCESS[ch]
        if mask != ACC_MKNOD | ACC_READ | ACC_WRITE:
            checks.append(("subset", mask))
        for reg, key in ((4, "major"), (5, "minor")):
            value = rule.get(key)
            if value not in (None, -1):
                checks.append(("jne", reg, int(value)))
        block = []
        for check in checks:
            if check[0] == "jne":
                block.append(["jne_k", check[1], check[2]])
            else:  # the access asked for must be within the rule's: (r3 & mask) == r3
                block.append(_insn(MOV64_X, 6, 3))
                block.append(_insn(AND32_K, 6, imm=check[1]))
                block.append(["jne_x", 6, 3])
        block.append(_insn(MOV64_K, 0, imm=1 if rule.get("allow") else 0))
        block.append(_insn(EXIT))
        n = len(block)
        for i, ins in enumerate(block):  # jumps skip to the end of this rule's block
            if isinstance(ins, list):
                code = JNE_K if ins[0] == "jne_k" else JNE_X
                skip = n - i - 1
                block[i] = _insn(code, ins[1], off=skip, imm=ins[2]) if code == JNE_K else \
                    _insn(code, ins[1], ins[2], off=skip)
        out += block
        if not checks:
            return b"".join(out)  # matches everything: earlier rules (and the default) never count
    out += [_insn(MOV64_K, 0, imm=0), _insn(EXIT)]
    return b"".join(out)


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    nr = SYS_BPF.get(os.uname().machine)
    if nr is None:
        raise OSError(38, f"bpf: unknown syscall number on {os.uname().machine}")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ret = libc.syscall(ctypes.c_long(nr), ctypes.c_long(cmd), attr, ctypes.c_long(len(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf: {os.strerror(err)}")
    return ret


def load(prog: bytes) -> int:
    insns = ctypes.create_string_buffer(prog, len(prog))
    license = ctypes.create_string_buffer(b"Apache")
    log = ctypes.create_string_buffer(65536)
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIQQIIQ", attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE, len(prog) // 8,
                     ctypes.addressof(insns), ctypes.addressof(license), 1, len(log), ctypes.addressof(log))
    struct.pack_into("<I", attr, 68, BPF_CGROUP_DEVICE)  # expected_attach_type
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except OSError as exc:
        detail = log.value.decode(errors="replace").strip().splitlines()[-3:]
        raise OSError(exc.errno, f"devices: loading the cgroup device program: {exc.strerror}"
                                 + (f" ({' | '.join(detail)})" if detail else "")) from None


def attach(cgroup_dir: Path, rules: list[dict]) -> None:
    """Load the program for rules and attach it to the cgroup (it stays there, held by the
    cgroup, after our file descriptors are closed)."""
    prog_fd = load(program(rules))
    try:
        cg_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            attr = ctypes.create_string_buffer(struct.pack("<IIIII", cg_fd, prog_fd, BPF_CGROUP_DEVICE,
                                                           BPF_F_ALLOW_MULTI, 0), 32)
            try:
                _bpf(BPF_PROG_ATTACH, attr)
            except OSError as exc:
                raise OSError(exc.errno, f"devices: attaching to {cgroup_dir}: {exc.strerror}") from None
        finally:
            os.close(cg_fd)
    finally:
        os.close(prog_fd)
