"""Compile an OCI `linux.seccomp` section into a classic BPF program, and load it.

No libseccomp binding installs on this Python, so this does what libseccomp (and runc on top
of it) does for a filter, in plain Python:

- the architecture check first: x86_64, x32 (same audit arch, syscall numbers with bit 30 set)
  and i386 each get their own syscall table; any other architecture kills the process;
- per architecture, a binary search over ranges of syscall numbers (a few comparisons per
  syscall, where a linear list would take hundreds); each leaf returns an action, or checks
  the arguments as the rules say (64-bit comparisons done on the two 32-bit halves);
- syscalls newer than any the rules name fail with ENOSYS rather than the default action, as
  runc arranges, so that programs fall back to older calls (clone3 -> clone, ...).

Rules for one syscall are tried in order, the first whose argument checks all hold decides;
no rule matching means the default action.

Importable on its own (the container init imports it as `seccomp`).
"""
import ctypes
import errno as _errno
import os
import struct

try:
    from . import syscalls
except ImportError:  # loaded on its own by the supervisor
    import syscalls

# seccomp return values
RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_TRAP = 0x00030000
RET_ERRNO = 0x00050000
RET_TRACE = 0x7FF00000
RET_LOG = 0x7FFC0000
RET_ALLOW = 0x7FFF0000

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003

# classic BPF opcodes
LD_W_ABS = 0x20
ALU_AND_K = 0x54
JA = 0x05
JEQ_K = 0x15
JGT_K = 0x25
JGE_K = 0x35
RET_K = 0x06

# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6]
OFF_NR = 0
OFF_ARCH = 4
OFF_ARGS = 16

# OCI architecture -> (audit arch, syscall table, offset added to numbers, 64-bit arguments)
_ARCHES = {
    "SCMP_ARCH_X86_64": (AUDIT_ARCH_X86_64, syscalls.X86_64, 0, True),
    "SCMP_ARCH_X32": (AUDIT_ARCH_X86_64, syscalls.X32, syscalls.X32_SYSCALL_BIT, True),
    "SCMP_ARCH_X86": (AUDIT_ARCH_I386, syscalls.I386, 0, False),
}
_NATIVE = {"x86_64": "SCMP_ARCH_X86_64"}

_OPS = {"SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
        "SCMP_CMP_MASKED_EQ"}


class SeccompError(ValueError):
    pass


def action_value(action: str, errno_ret=None, default_errno=None) -> int:
    if action == "SCMP_ACT_ALLOW":
        return RET_ALLOW
    if action == "SCMP_ACT_ERRNO":
        code = errno_ret if errno_ret is not None else (default_errno if default_errno is not None else _errno.EPERM)
        return RET_ERRNO | (int(code) & 0xFFFF)
    if action in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return RET_KILL_THREAD
    if action == "SCMP_ACT_KILL_PROCESS":
        return RET_KILL_PROCESS
    if action == "SCMP_ACT_TRAP":
        return RET_TRAP
    if action == "SCMP_ACT_LOG":
        return RET_LOG
    if action == "SCMP_ACT_TRACE":
        code = errno_ret if errno_ret is not None else _errno.EPERM
        return RET_TRACE | (int(code) & 0xFFFF)
    raise SeccompError(f"seccomp: action {action!r} is not supported")


# -- assembler: instructions with symbolic forward labels -------------------------------------

class _Asm:
    """Instructions as tuples; jumps name labels, resolved (with long-jump expansion) at the end."""

    def __init__(self):
        self.code = []
        self._n = 0

    def label(self) -> str:
        self._n += 1
        return f"L{self._n}"

    def put(self, name: str) -> None:
        self.code.append(("label", name))

    def ld(self, offset: int) -> None:
        self.code.append(("op", LD_W_ABS, offset))

    def and_(self, k: int) -> None:
        self.code.append(("op", ALU_AND_K, k))

    def ret(self, k: int) -> None:
        self.code.append(("op", RET_K, k))

    def jump(self, target: str) -> None:
        self.code.append(("ja", target))

    def cond(self, opcode: int, k: int, jt: str, jf: str) -> None:
        self.code.append(("jcond", opcode, k, jt, jf))

    def assemble(self) -> bytes:
        long = set()  # indexes of conditional jumps that need the 3-instruction form
        while True:
            where, pos = {}, 0
            for i, ins in enumerate(self.code):
                if ins[0] == "label":
                    where[ins[1]] = pos
                    continue
                pos += 3 if i in long else 1
            out, pos, grew = [], 0, False
            for i, ins in enumerate(self.code):
                kind = ins[0]
                if kind == "label":
                    continue
                if kind == "op":
                    out.append(struct.pack("<HBBI", ins[1], 0, 0, ins[2]))
                    pos += 1
                elif kind == "ja":
                    out.append(struct.pack("<HBBI", JA, 0, 0, where[ins[1]] - pos - 1))
                    pos += 1
                elif i in long:
                    _, opcode, k, jt, jf = ins
                    out.append(struct.pack("<HBBI", opcode, 0, 1, k))
                    out.append(struct.pack("<HBBI", JA, 0, 0, where[jt] - pos - 2))
                    out.append(struct.pack("<HBBI", JA, 0, 0, where[jf] - pos - 3))
                    pos += 3
                else:
                    _, opcode, k, jt, jf = ins
                    t, f = where[jt] - pos - 1, where[jf] - pos - 1
                    if t < 0 or f < 0:
                        raise AssertionError("seccomp: backward jump generated")
                    if t > 255 or f > 255:
                        long.add(i)
                        grew = True
                    out.append(struct.pack("<HBBI", opcode, t & 0xFF, f & 0xFF, k))
                    pos += 1
            if not grew:
                if pos > 4096:
                    raise SeccompError(f"seccomp: filter has {pos} instructions, more than the kernel's 4096")
                return b"".join(out)


# -- compiling --------------------------------------------------------------------------------

def _arg_check(asm: _Asm, arg: dict, wide: bool, ok: str, fail: str) -> None:
    """Code that jumps to ok if the argument condition holds, else to fail."""
    index = arg.get("index")
    op = arg.get("op")
    if not isinstance(index, int) or not 0 <= index <= 5:
        raise SeccompError(f"seccomp: argument index {index!r} is not 0..5")
    if op not in _OPS:
        raise SeccompError(f"seccomp: comparison {op!r} is not supported")
    value = int(arg.get("value") or 0) & 0xFFFFFFFFFFFFFFFF
    two = int(arg.get("valueTwo") or 0) & 0xFFFFFFFFFFFFFFFF
    lo_off, hi_off = OFF_ARGS + 8 * index, OFF_ARGS + 8 * index + 4
    vlo, vhi = value & 0xFFFFFFFF, value >> 32
    if not wide:
        vhi = 0
    check_lo = asm.label()
    if op == "SCMP_CMP_MASKED_EQ":
        if wide:
            asm.ld(hi_off)
            asm.and_(vhi)
            asm.cond(JEQ_K, two >> 32, check_lo, fail)
        asm.put(check_lo)
        asm.ld(lo_off)
        asm.and_(vlo)
        asm.cond(JEQ_K, two & 0xFFFFFFFF, ok, fail)
        return
    # (hi, lo) against (vhi, vlo): decide on the high word unless equal, then on the low word.
    hi_gt, hi_lt, lo_op, lo_true = {
        "SCMP_CMP_EQ": (fail, fail, JEQ_K, True),
        "SCMP_CMP_NE": (ok, ok, JEQ_K, False),
        "SCMP_CMP_GT": (ok, fail, JGT_K, True),
        "SCMP_CMP_GE": (ok, fail, JGE_K, True),
        "SCMP_CMP_LT": (fail, ok, JGE_K, False),
        "SCMP_CMP_LE": (fail, ok, JGT_K, False),
    }[op]
    if wide:
        asm.ld(hi_off)
        if hi_gt == hi_lt:
            asm.cond(JEQ_K, vhi, check_lo, hi_gt)
        else:
            hi_not_gt = asm.label()
            asm.cond(JGT_K, vhi, hi_gt, hi_not_gt)
            asm.put(hi_not_gt)
            asm.cond(JEQ_K, vhi, check_lo, hi_lt)
    asm.put(check_lo)
    asm.ld(lo_off)
    asm.cond(lo_op, vlo, ok if lo_true else fail, fail if lo_true else ok)


def _leaf(asm: _Asm, rules: list, default: int, wide: bool) -> None:
    """Code for one syscall number: its rules in order, then the default action."""
    for action, args in rules:
        if not args:
            asm.ret(action)
            return
        fail = asm.label()
        for i, arg in enumerate(args):
            ok = asm.label()
            _arg_check(asm, arg, wide, ok, fail)
            asm.put(ok)
        asm.ret(action)
        asm.put(fail)
    asm.ret(default)


def _tree(asm: _Asm, ranges: list, default: int, wide: bool) -> None:
    """Binary search over [(first number, rules or action)], sorted, covering all numbers
    from ranges[0][0] up; the accumulator holds the syscall number."""
    if len(ranges) == 1:
        what = ranges[0][1]
        if isinstance(what, int):
            asm.ret(what)
        else:
            _leaf(asm, what, default, wide)
        return
    mid = len(ranges) // 2
    left, right = asm.label(), asm.label()
    asm.cond(JGE_K, ranges[mid][0], right, left)
    asm.put(left)
    _tree(asm, ranges[:mid], default, wide)
    asm.put(right)
    _tree(asm, ranges[mid:], default, wide)


def _ranges(table: dict, base: int, rules: list, default: int) -> list:
    """[(first number, what)] for numbers base..: runs of equal unconditional actions merged,
    a syscall with argument checks alone in its range, ENOSYS above the highest named one."""
    per_nr: dict = {}
    for action, args, names in rules:
        for name in names:
            nr = table.get(name)
            if nr is not None:
                per_nr.setdefault(base + nr, []).append((action, args))
    if not per_nr:
        return [(base, default)]
    top = max(per_nr)
    out: list = []
    for nr in range(base, top + 1):
        rl = per_nr.get(nr)
        if rl is None:
            what = default
        elif not rl[0][1]:
            what = rl[0][0]  # an unconditional first rule decides everything
        else:
            what = rl
        if out and isinstance(what, int) and out[-1][1] == what:
            continue
        out.append((nr, what))
    out.append((top + 1, RET_ERRNO | _errno.ENOSYS))
    return out


def compile_filter(section: dict, machine: str = None) -> bytes:
    """The BPF program (struct sock_filter[]) for an OCI linux.seccomp section."""
    machine = machine or os.uname().machine
    native = _NATIVE.get(machine)
    if native is None:
        raise SeccompError(f"seccomp: no syscall table for architecture {machine!r}")
    default = action_value(section.get("defaultAction", ""), section.get("defaultErrnoRet"))
    arches = list(section.get("architectures") or [native])
    if native not in arches:
        arches.insert(0, native)
    for a in arches:
        if a not in _ARCHES:
            raise SeccompError(f"seccomp: architecture {a!r} is not supported on {machine}")
    rules = []
    for entry in section.get("syscalls") or []:
        names = entry.get("names") or ([entry["name"]] if entry.get("name") else [])
        action = action_value(entry.get("action", ""), entry.get("errnoRet"), None)
        args = list(entry.get("args") or [])
        rules.append((action, args, names))

    asm = _Asm()
    by_audit: dict = {}
    for a in arches:
        by_audit.setdefault(_ARCHES[a][0], []).append(a)
    asm.ld(OFF_ARCH)
    labels = {}
    for audit in by_audit:
        labels[audit] = asm.label()
        nxt = asm.label()
        asm.cond(JEQ_K, audit, labels[audit], nxt)
        asm.put(nxt)
    asm.ret(RET_KILL_PROCESS)
    for audit, names in by_audit.items():
        asm.put(labels[audit])
        asm.ld(OFF_NR)
        plain = [a for a in names if _ARCHES[a][2] == 0]
        shifted = [a for a in names if _ARCHES[a][2] != 0]
        if audit == AUDIT_ARCH_X86_64:
            # x32 numbers have bit 30 set; without x32 in the list they are a bad architecture
            x32_label, native_label = asm.label(), asm.label()
            asm.cond(JGE_K, syscalls.X32_SYSCALL_BIT, x32_label, native_label)
            asm.put(native_label)
            for a in plain:
                _, table, base, wide = _ARCHES[a]
                _tree(asm, _ranges(table, base, rules, default), default, wide)
            asm.put(x32_label)
            if shifted:
                _, table, base, wide = _ARCHES[shifted[0]]
                _tree(asm, _ranges(table, base, rules, default), default, wide)
            else:
                asm.ret(RET_KILL_PROCESS)
        else:
            _, table, base, wide = _ARCHES[plain[0]]
            _tree(asm, _ranges(table, base, rules, default), default, wide)
    return asm.assemble()


_cache: dict = {}


def compile_cached(section: dict) -> bytes:
    """compile_filter, remembered per section: the node supervisor compiles the default profile
    once, and every container init it forks inherits the result."""
    key = repr(section)
    prog = _cache.get(key)
    if prog is None:
        prog = _cache[key] = compile_filter(section)
    return prog


# -- loading ----------------------------------------------------------------------------------

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


# Made once, in the node supervisor: a CDLL made per call is a new class in every container's
# init, pages the forked process would copy for nothing.
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]


def load(prog: bytes) -> None:
    """Install the filter on this thread (it survives exec). Needs no_new_privs or CAP_SYS_ADMIN."""
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = _SockFprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
    if _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp: loading the filter: {os.strerror(err)}")


# -- an interpreter, to check programs without loading them -----------------------------------

def run_filter(prog: bytes, nr: int, arch: int = AUDIT_ARCH_X86_64, args=(0, 0, 0, 0, 0, 0)) -> int:
    """What the kernel would return for this syscall (classic BPF semantics, as used here)."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, *(list(args) + [0] * (6 - len(args))))
    ins = [struct.unpack_from("<HBBI", prog, i) for i in range(0, len(prog), 8)]
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = ins[pc]
        if code == LD_W_ABS:
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == ALU_AND_K:
            acc &= k
        elif code == RET_K:
            return k
        elif code == JA:
            pc += k
        elif code in (JEQ_K, JGT_K, JGE_K):
            hit = acc == k if code == JEQ_K else acc > k if code == JGT_K else acc >= k
            pc += jt if hit else jf
        else:
            raise ValueError(f"unknown opcode {code:#x} at {pc}")
        pc += 1
