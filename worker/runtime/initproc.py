"""The container's init (ContainerSpec.Init, Docker's --init): pid 1 runs the entrypoint as its
child, forwards the signals it receives to it, reaps every process re-parented to it, and exits
with the child's status (128 + n when signal n killed it).

Why: a process that is pid 1 of its pid namespace gets no default signal action, so a shell
that sets no trap ignores SIGTERM and is only stopped by SIGKILL at the end of the grace period;
and orphans are re-parented to pid 1, which most programs never wait for, so zombies pile up.

Why not a binary such as tini: there is none on the node to bind into the image. Instead the
container's first process (nsinit, a fork of the shim, so its pages are shared copy-on-write
with the shim and the node supervisor) forks once more as soon as it is pid 1 of the new pid
namespace and the others are made: the child sets the container up and execs the entrypoint as
it would have; the parent stays as pid 1, named "shoal-init".
Its cost is the pages it has copied, no new program: bench/init_pss.py measured 1.8 MiB PSS for
the init (1.5 MiB of it private), 1.5 MiB more PSS per container in all (shim and container
processes), 1.0 MiB more charged to the container's memory cgroup.

Confinement: the init takes the container process's own user, groups, capabilities,
no_new_privs and seccomp filter before the entrypoint may run, so it is never more privileged
than the container (the entrypoint waits for it). Having the same identity is also what lets it
signal its child. It is made non-dumpable: its executable is the node's Python interpreter, and
a non-dumpable process's /proc files (exe, mem, fd) need CAP_SYS_PTRACE (which the runtime does
not combine with an init; see Runtime.create).

Importable on its own (nsinit imports it as `initproc`).
"""
import gc
import os
import signal

try:
    from . import linux
except ImportError:  # loaded on its own by the supervisor
    import linux

NAME = "shoal-init"

# Not forwarded (as tini): the kernel raises these at the faulting process itself, or they stop
# or kill without any process being asked; SIGCHLD is the init's own business.
_SYNCHRONOUS = {signal.SIGFPE, signal.SIGILL, signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT,
                signal.SIGTRAP, signal.SIGSYS, signal.SIGTTIN, signal.SIGTTOU}
_KEEP = _SYNCHRONOUS | {signal.SIGKILL, signal.SIGSTOP}


def waited_signals() -> set:
    """What the init blocks and takes with sigwaitinfo: SIGCHLD and every signal it forwards.

    A blocked signal is queued even for a pid-namespace init (the kernel drops only signals
    whose action is the default), so SIGTERM from the shim reaches it."""
    return set(signal.valid_signals()) - _KEEP


def start(confine, keep_fds=()):
    """Fork the entrypoint's process, before the container is set up. Returns in the child a
    function to call once the setup is done: it waits until the parent has confined itself with
    confine(keep_fds) (which raises if it cannot: the parent's caller reports it, and the child
    exits). The parent never returns: it is the init until the child exits.

    Why fork this early: the setup (mounts, devices, pivot_root, ...) runs a good deal of Python,
    and every object it touches copies a page. Done in the child, those copies go away at its
    exec instead of staying with the init (measured: 0.2 MiB less PSS, 0.4 MiB less charged to
    the container's memory cgroup).

    keep_fds: descriptors the init holds only until it is confined (the error pipe to the shim),
    so that they close when the entrypoint execs, as without an init."""
    waited = waited_signals()
    # Blocked before the fork: nothing sent to the init between now and its loop is lost. The
    # child unblocks everything just before it execs (nsinit.reset_signals).
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    up_r, up_w = os.pipe2(os.O_CLOEXEC)      # child -> init: "set up"
    down_r, down_w = os.pipe2(os.O_CLOEXEC)  # init -> child: "confined, go on"
    child = os.fork()
    if child == 0:
        os.close(up_r)
        os.close(down_w)

        def set_up() -> None:
            os.write(up_w, b"1")
            os.close(up_w)
            if os.read(down_r, 1) != b"1":
                os._exit(128)  # the init could not confine itself, and has said why
            os.close(down_r)
        return set_up
    os.close(up_w)
    os.close(down_r)
    linux.set_process_name(NAME)
    linux.set_cmdline(NAME)  # else ps in the container shows the supervisor's host command line
    if os.read(up_r, 1) != b"1":  # the setup failed: the child has said why, and exits
        serve(child, waited)
    os.close(up_r)
    confine(keep_fds=(down_w, *keep_fds))
    os.write(down_w, b"1")
    os.close(down_w)
    for fd in keep_fds:
        os.close(fd)
    serve(child, waited)


def serve(child: int, waited: set) -> None:
    """The init's loop; exits with the child's status. Allocates next to nothing, and the
    garbage collector stays off: a collection would walk, and so copy, every object inherited
    from the shim."""
    gc.disable()
    while True:
        sig = signal.sigwaitinfo(waited).si_signo
        if sig != signal.SIGCHLD:
            try:
                os.kill(child, sig)
            except (ProcessLookupError, PermissionError):
                # gone (its exit is reaped below) or it changed its uid away from the
                # container's user: then a stop ends with the shim's SIGKILL, as without an init
                pass
        status = reap(child)
        if status is not None:
            code = os.waitstatus_to_exitcode(status)
            os._exit(128 - code if code < 0 else code)


def reap(child: int):
    """Wait for every exited process (orphans included); the child's wait status if it exited."""
    found = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found
        if pid == 0:
            return found
        if pid == child:
            found = status
