"""Docker's default seccomp profile, and its resolution into an OCI `linux.seccomp` section.

The allowlist below is the one moby's profiles/seccomp/default.json defines (default action:
EPERM; allow what ordinary programs need; a few syscalls only with a capability, on an
architecture or with argument checks). `resolve` does what dockerd does before it hands a spec
to runc: it keeps the groups whose conditions (capabilities in the bounding set, architecture,
kernel version) hold and drops the others, so the result is plain OCI that runc, crun and
Shoal's own init (seccomp.py) all apply the same way.
"""
from __future__ import annotations

import os
from typing import Any

# Always allowed (the profile's first, unconditional group).
ALLOWED = """
accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown chown32 clock_adjtime
clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64 clock_nanosleep
clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2 dup3 epoll_create
epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd
eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate
fanotify_mark fchdir fchmod fchmodat fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr
flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync
ftruncate ftruncate64 futex futex_time64 futex_waitv futimesat getcpu getcwd getdents getdents64
getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername
getpgid getpgrp getpid getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32
getrlimit get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid
gettimeofday getuid getuid32 getxattr inotify_add_watch inotify_init inotify_init1
inotify_rm_watch io_cancel ioctl io_destroy io_getevents io_pgetevents io_pgetevents_time64
ioprio_get ioprio_set io_setup io_submit io_uring_enter io_uring_register io_uring_setup ipc kill
landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link
linkat listen listxattr llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 madvise
membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall
mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64
mq_timedsend mq_timedsend_time64 mq_unlink mremap msgctl msgget msgrcv msgsnd msync munlock
munlockall munmap name_to_handle_at nanosleep newfstatat _newselect open openat openat2 pause
pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll
ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64
pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv recv recvfrom recvmmsg
recvmmsg_time64 recvmsg remap_file_pages removexattr rename renameat renameat2 restart_syscall
rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend
rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr
sched_getparam sched_get_priority_max sched_get_priority_min sched_getscheduler
sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity sched_setattr
sched_setparam sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32 setfsuid
setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority setregid
setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit
set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setuid32 setxattr shmat
shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 sigprocmask sigreturn socketcall
socketpair splice stat stat64 statfs statfs64 statx symlink symlinkat sync sync_file_range syncfs
sysinfo tee tgkill time timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64
timer_settime timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat utime
utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev
""".split()

_SYS_ADMIN_ONLY = """
bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount mount_setattr
move_mount open_tree perf_event_open quotactl quotactl_fd setdomainname sethostname setns syslog
umount umount2 unshare
""".split()

_CLONE_NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET


def _rule(names, action="SCMP_ACT_ALLOW", args=None, errno_ret=None, caps=(), arches=(), min_kernel=None,
          not_caps=(), not_arches=()) -> dict[str, Any]:
    return {"names": list(names), "action": action, "args": args or [], "errnoRet": errno_ret,
            "caps": list(caps), "arches": list(arches), "min_kernel": min_kernel,
            "not_caps": list(not_caps), "not_arches": list(not_arches)}


def _eq(index: int, value: int, op: str = "SCMP_CMP_EQ") -> list[dict[str, Any]]:
    return [{"index": index, "value": value, "valueTwo": 0, "op": op}]


# The conditional groups, in the profile's order. Architectures use Go's names, as moby does.
RULES: list[dict[str, Any]] = [
    _rule(ALLOWED),
    _rule(["process_vm_readv", "process_vm_writev", "ptrace"], min_kernel=(4, 8)),
    _rule(["socket"], args=_eq(0, 40, "SCMP_CMP_NE")),  # anything but AF_VSOCK
    *[_rule(["personality"], args=_eq(0, v)) for v in (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)],
    _rule(["sync_file_range2", "swapcontext"], arches=["ppc64le"]),
    _rule(["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush",
           "set_tls"], arches=["arm", "arm64"]),
    _rule(["arch_prctl"], arches=["amd64", "x32"]),
    _rule(["modify_ldt"], arches=["amd64", "x32", "x86"]),
    _rule(["s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"], arches=["s390", "s390x"]),
    _rule(["riscv_flush_icache"], arches=["riscv64"]),
    _rule(["open_by_handle_at"], caps=["CAP_DAC_READ_SEARCH"]),
    _rule(_SYS_ADMIN_ONLY, caps=["CAP_SYS_ADMIN"]),
    _rule(["clone"], args=_eq(0, _CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ"), not_caps=["CAP_SYS_ADMIN"],
          not_arches=["s390", "s390x"]),
    _rule(["clone"], args=_eq(1, _CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ"), arches=["s390", "s390x"],
          not_caps=["CAP_SYS_ADMIN"]),
    # ENOSYS, not EPERM: glibc then falls back to clone(2), whose flags the rule above can check.
    _rule(["clone3"], action="SCMP_ACT_ERRNO", errno_ret=38, not_caps=["CAP_SYS_ADMIN"]),
    _rule(["reboot"], caps=["CAP_SYS_BOOT"]),
    _rule(["chroot"], caps=["CAP_SYS_CHROOT"]),
    _rule(["delete_module", "init_module", "finit_module"], caps=["CAP_SYS_MODULE"]),
    _rule(["acct"], caps=["CAP_SYS_PACCT"]),
    _rule(["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"],
          caps=["CAP_SYS_PTRACE"]),
    _rule(["iopl", "ioperm"], caps=["CAP_SYS_RAWIO"]),
    _rule(["settimeofday", "stime", "clock_settime", "clock_settime64"], caps=["CAP_SYS_TIME"]),
    _rule(["vhangup"], caps=["CAP_SYS_TTY_CONFIG"]),
    _rule(["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"], caps=["CAP_SYS_NICE"]),
    _rule(["syslog"], caps=["CAP_SYSLOG"]),
    _rule(["bpf"], caps=["CAP_BPF"]),
    _rule(["perf_event_open"], caps=["CAP_PERFMON"]),
]

# uname -m -> (Go arch name, the OCI architectures the profile's archMap lists for it)
ARCHES = {
    "x86_64": ("amd64", ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
    "aarch64": ("arm64", ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]),
    "s390x": ("s390x", ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"]),
    "riscv64": ("riscv64", ["SCMP_ARCH_RISCV64"]),
    "ppc64le": ("ppc64le", ["SCMP_ARCH_PPC64LE"]),
}


def kernel_version(release: str | None = None) -> tuple[int, int]:
    release = release or os.uname().release
    parts = release.split(".")
    nums = []
    for p in parts[:2]:
        digits = "".join(ch for ch in p if ch.isdigit()) or "0"
        nums.append(int(digits))
    return nums[0], nums[1] if len(nums) > 1 else 0


def resolve(capabilities: list[str], machine: str | None = None,
            kernel: tuple[int, int] | None = None) -> dict[str, Any]:
    """The OCI `linux.seccomp` section dockerd would generate for a container whose bounding
    capability set is `capabilities`."""
    machine = machine or os.uname().machine
    if machine not in ARCHES:
        raise ValueError(f"seccomp: no default profile for architecture {machine!r}")
    go_arch, architectures = ARCHES[machine]
    kernel = kernel or kernel_version()
    caps = set(capabilities)
    syscalls = []
    for rule in RULES:
        if any(c not in caps for c in rule["caps"]):
            continue
        if rule["arches"] and go_arch not in rule["arches"]:
            continue
        if rule["min_kernel"] and kernel < rule["min_kernel"]:
            continue
        if any(c in caps for c in rule["not_caps"]) or go_arch in rule["not_arches"]:
            continue
        entry: dict[str, Any] = {"names": list(rule["names"]), "action": rule["action"]}
        if rule["args"]:
            entry["args"] = [dict(a) for a in rule["args"]]
        if rule["errnoRet"] is not None:
            entry["errnoRet"] = rule["errnoRet"]
        syscalls.append(entry)
    return {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "architectures": list(architectures),
            "syscalls": syscalls}
