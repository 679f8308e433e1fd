"""The seccomp filter compiler, run through a BPF interpreter: Docker's default profile decides
each syscall as the profile says (allowlist, capability groups, argument rules, architectures),
syscalls newer than the profile get ENOSYS, and the assembler copes with long jumps.
No root needed."""
import errno
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.runtime import seccomp, seccomp_profile, syscalls
from worker.runtime.spec import DEFAULT_CAPABILITIES

ALLOW = seccomp.RET_ALLOW
EPERM = seccomp.RET_ERRNO | errno.EPERM
ENOSYS = seccomp.RET_ERRNO | errno.ENOSYS
X86_64, I386 = seccomp.AUDIT_ARCH_X86_64, seccomp.AUDIT_ARCH_I386


@pytest.fixture(scope="module")
def docker_default():
    section = seccomp_profile.resolve(DEFAULT_CAPABILITIES, machine="x86_64", kernel=(6, 1))
    return section, seccomp.compile_filter(section, machine="x86_64")


def run(prog, name, args=(), table=syscalls.X86_64, arch=X86_64, base=0):
    return seccomp.run_filter(prog, base + table[name], arch=arch, args=args)


def test_resolve_follows_capabilities_and_arch():
    default = seccomp_profile.resolve(DEFAULT_CAPABILITIES, machine="x86_64", kernel=(6, 1))
    names = {n for rule in default["syscalls"] for n in rule["names"]}
    assert default["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert "chroot" in names                    # CAP_SYS_CHROOT is in Docker's default set
    assert "mount" not in names and "reboot" not in names and "bpf" not in names
    assert "arch_prctl" in names and "s390_runtime_instr" not in names
    clone3 = [r for r in default["syscalls"] if r["names"] == ["clone3"]]
    assert clone3 == [{"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]
    admin = seccomp_profile.resolve(DEFAULT_CAPABILITIES + ["CAP_SYS_ADMIN"], machine="x86_64", kernel=(6, 1))
    admin_names = [n for rule in admin["syscalls"] for n in rule["names"]]
    assert "mount" in admin_names and "clone3" in admin_names
    assert not [r for r in admin["syscalls"] if r["names"] == ["clone"] and r.get("args")]
    old = seccomp_profile.resolve(DEFAULT_CAPABILITIES, machine="x86_64", kernel=(4, 4))
    assert "ptrace" not in {n for rule in old["syscalls"] for n in rule["names"]}
    with pytest.raises(ValueError, match="seccomp: no default profile for architecture 'mips'"):
        seccomp_profile.resolve([], machine="mips")


def test_allowlist_and_default(docker_default):
    _, prog = docker_default
    for name in ("read", "write", "execve", "openat", "futex", "exit_group", "chroot", "io_uring_setup"):
        assert run(prog, name) == ALLOW, name
    for name in ("mount", "umount2", "unshare", "setns", "reboot", "init_module", "kexec_load",
                 "open_by_handle_at", "bpf", "ptrace" if False else "acct", "swapon", "keyctl"):
        assert run(prog, name) == EPERM, name
    assert run(prog, "clone3") == ENOSYS


def test_every_syscall_of_the_table(docker_default):
    """Exactly the syscalls the resolved profile allows unconditionally are allowed."""
    section, prog = docker_default
    plain = {n for r in section["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and not r.get("args")
             for n in r["names"]}
    conditional = {n for r in section["syscalls"] if r.get("args") or r["action"] != "SCMP_ACT_ALLOW"
                   for n in r["names"]}
    top = max(syscalls.X86_64[n] for n in plain | conditional if n in syscalls.X86_64)
    for name, nr in syscalls.X86_64.items():
        got = seccomp.run_filter(prog, nr)
        if name in plain:
            assert got == ALLOW, name
        elif nr > top:
            assert got == ENOSYS, name  # e.g. set_mempolicy_home_node, newer than the profile's others
        elif name not in conditional:
            assert got == EPERM, name


def test_argument_rules(docker_default):
    _, prog = docker_default
    clone_thread = 0x3D0F00  # what glibc's pthread_create passes
    assert run(prog, "clone", (clone_thread,)) == ALLOW
    for flag in (0x10000000, 0x20000000, 0x40000000, 0x00020000, 0x02000000, 0x04000000, 0x08000000):
        assert run(prog, "clone", (0x11 | flag,)) == EPERM, hex(flag)
    assert run(prog, "clone", ((1 << 32) | 0x11,)) == ALLOW  # only the namespace bits are masked
    for value in (0, 8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert run(prog, "personality", (value,)) == ALLOW, value
    for value in (0x0040000, 1, (1 << 32) | 8):
        assert run(prog, "personality", (value,)) == EPERM, value
    assert run(prog, "socket", (2,)) == ALLOW          # AF_INET
    assert run(prog, "socket", (40,)) == EPERM         # AF_VSOCK
    assert run(prog, "socket", ((1 << 32) | 40,)) == ALLOW  # a 64-bit compare: not 40


def test_architectures(docker_default):
    _, prog = docker_default
    assert run(prog, "read", table=syscalls.I386, arch=I386) == ALLOW
    assert run(prog, "socketcall", table=syscalls.I386, arch=I386) == ALLOW
    assert run(prog, "mount", table=syscalls.I386, arch=I386) == EPERM
    # 32-bit: only the low half of an argument is compared
    assert run(prog, "personality", ((1 << 32) | 8,), table=syscalls.I386, arch=I386) == ALLOW
    assert run(prog, "read", table=syscalls.X32, base=syscalls.X32_SYSCALL_BIT) == ALLOW
    assert run(prog, "mount", table=syscalls.X32, base=syscalls.X32_SYSCALL_BIT) == EPERM
    assert seccomp.run_filter(prog, 0, arch=0xC00000B7) == seccomp.RET_KILL_PROCESS  # aarch64
    native_only = seccomp.compile_filter({"defaultAction": "SCMP_ACT_ERRNO",
                                          "architectures": ["SCMP_ARCH_X86_64"],
                                          "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]})
    assert seccomp.run_filter(native_only, syscalls.X32["read"] | syscalls.X32_SYSCALL_BIT) == seccomp.RET_KILL_PROCESS
    assert seccomp.run_filter(native_only, 0, arch=I386) == seccomp.RET_KILL_PROCESS


def test_newer_syscalls_get_enosys(docker_default):
    section, prog = docker_default
    top = max(syscalls.X86_64[n] for r in section["syscalls"] for n in r["names"] if n in syscalls.X86_64)
    assert seccomp.run_filter(prog, top + 1) == ENOSYS
    assert seccomp.run_filter(prog, 100_000) == ENOSYS
    assert seccomp.run_filter(prog, top) != ENOSYS


@settings(max_examples=300, deadline=None)
@given(op=st.sampled_from(["SCMP_CMP_EQ", "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_GT",
                           "SCMP_CMP_GE", "SCMP_CMP_MASKED_EQ"]),
       value=st.integers(0, 2**64 - 1), two=st.integers(0, 2**64 - 1), arg=st.integers(0, 2**64 - 1),
       interesting=st.booleans())
def test_comparisons_match_64_bit_semantics(op, value, two, arg, interesting):
    if interesting:  # values that share a half with the operand
        arg = (value & 0xFFFFFFFF00000000) | (arg & 0xFFFFFFFF)
    rule = {"names": ["read"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 2, "value": value, "valueTwo": two, "op": op}]}
    prog = seccomp.compile_filter({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
                                   "syscalls": [rule]})
    expected = {"SCMP_CMP_EQ": arg == value, "SCMP_CMP_NE": arg != value, "SCMP_CMP_LT": arg < value,
                "SCMP_CMP_LE": arg <= value, "SCMP_CMP_GT": arg > value, "SCMP_CMP_GE": arg >= value,
                "SCMP_CMP_MASKED_EQ": (arg & value) == two}[op]
    got = seccomp.run_filter(prog, syscalls.X86_64["read"], args=(0, 0, arg))
    assert got == (ALLOW if expected else EPERM)


def test_rules_in_order_and_and_of_arguments():
    section = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 13, "architectures": ["SCMP_ARCH_X86_64"],
               "syscalls": [
                   {"names": ["write"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5,
                    "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
                             {"index": 2, "value": 100, "op": "SCMP_CMP_GT"}]},
                   {"names": ["write"], "action": "SCMP_ACT_ALLOW"},
                   {"names": ["kill"], "action": "SCMP_ACT_KILL_PROCESS"}]}
    prog = seccomp.compile_filter(section)
    w = syscalls.X86_64["write"]
    assert seccomp.run_filter(prog, w, args=(2, 0, 101)) == seccomp.RET_ERRNO | 5
    assert seccomp.run_filter(prog, w, args=(2, 0, 100)) == ALLOW
    assert seccomp.run_filter(prog, w, args=(1, 0, 101)) == ALLOW
    assert seccomp.run_filter(prog, syscalls.X86_64["kill"]) == seccomp.RET_KILL_PROCESS
    assert seccomp.run_filter(prog, syscalls.X86_64["read"]) == seccomp.RET_ERRNO | 13


def test_long_jumps():
    """Hundreds of argument rules push branches beyond classic BPF's 255-instruction reach."""
    rules = [{"names": ["ioctl"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 1, "value": v, "op": "SCMP_CMP_EQ"}]}
             for v in range(300)]
    rules.append({"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"})
    prog = seccomp.compile_filter({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
                                   "syscalls": rules})
    assert len(prog) // 8 > 1000
    assert seccomp.run_filter(prog, syscalls.X86_64["ioctl"], args=(0, 299)) == ALLOW
    assert seccomp.run_filter(prog, syscalls.X86_64["ioctl"], args=(0, 300)) == EPERM
    assert seccomp.run_filter(prog, syscalls.X86_64["write"]) == ALLOW
    assert seccomp.run_filter(prog, syscalls.X86_64["open"]) == EPERM
    assert seccomp.run_filter(prog, syscalls.X86_64["mount"]) == ENOSYS  # beyond every syscall named


@pytest.mark.parametrize("section, message", [
    ({"defaultAction": "SCMP_ACT_NOTIFY"}, "seccomp: action 'SCMP_ACT_NOTIFY' is not supported"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_PPC64LE"]},
     "seccomp: architecture 'SCMP_ARCH_PPC64LE' is not supported"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                                                       "args": [{"index": 7, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
     "seccomp: argument index 7 is not 0..5"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                                                       "args": [{"index": 0, "value": 1, "op": "LIKE"}]}]},
     "seccomp: comparison 'LIKE' is not supported"),
])
def test_bad_sections_are_refused(section, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        seccomp.compile_filter(section, machine="x86_64")


HEADERS = Path("/usr/include/x86_64-linux-gnu/asm")


@pytest.mark.skipif(not (HEADERS / "unistd_64.h").exists(), reason="no kernel headers (linux-libc-dev)")
def test_tables_match_the_kernel_headers():
    def parse(name):
        out = {}
        for line in (HEADERS / name).read_text().splitlines():
            m = re.match(r"#define __NR_(\w+) (?:\(__X32_SYSCALL_BIT \+ )?(\d+)\)?$", line.strip())
            if m:
                out[m.group(1)] = int(m.group(2))
        return out
    assert parse("unistd_64.h") == syscalls.X86_64
    assert parse("unistd_32.h") == syscalls.I386
    assert parse("unistd_x32.h") == syscalls.X32
