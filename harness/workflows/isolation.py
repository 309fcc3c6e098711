"""How untrusted code is isolated: bubblewrap + prlimit when available, rlimits alone otherwise.

Both the workflow worker (pool.py) and the code sandbox (sandbox.py) start their processes
through `isolated_command`. With bubblewrap the process has no network (new network namespace),
cannot see other processes, and dies with its parent; prlimit caps address space, CPU seconds,
processes and file size. The environment is emptied so no API key or token can leak into it.

Its file system is an allowlist, read-only: the system folders a Python interpreter needs
(/usr, /bin, /lib*, /etc without the shadow files), the interpreter's own prefix, and the
harness package (the workflow worker imports it); a private /tmp, /dev and /proc. Nothing else
exists inside: not /home, /root, ~/.ssh, the project, its run folders or any data folder.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 1 << 30
    cpu_s: int = 30
    processes: int = 64
    file_bytes: int = 10 << 20
    open_files: int = 64


@functools.cache
def bwrap_available() -> bool:
    """Whether bubblewrap is installed and can create its namespaces on this machine."""
    exe = shutil.which("bwrap")
    if exe is None:
        return False
    try:
        probe = subprocess.run(
            [exe, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@functools.cache
def _warn_weak_isolation() -> None:
    log.warning(
        "bubblewrap (bwrap) is not available: untrusted code runs in a subprocess with rlimits only "
        "(no network or file-system isolation). Install it: apt-get install -y bubblewrap"
    )


SYSTEM_FOLDERS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
HIDDEN_FILES = ("/etc/shadow", "/etc/gshadow", "/etc/sudoers")


def interpreter() -> str:
    """The Python that isolated code runs on: the real file behind ``sys.executable`` (a venv's
    python is often a symlink whose folder the sandbox does not show; with -I -S no venv is used)."""
    return os.path.realpath(sys.executable)


@functools.cache
def _visible_paths() -> tuple[str, ...]:
    """What the sandbox sees read-only besides the system folders: the interpreter's prefix (a
    venv, conda or pyenv Python may live anywhere) and the harness package, nothing more."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../harness
    candidates = {sys.prefix, sys.base_prefix, os.path.dirname(interpreter()), package}
    visible = {os.path.realpath(p) for p in candidates}
    visible = {p for p in visible if not any(p == f or p.startswith(f + "/") for f in SYSTEM_FOLDERS)}
    # a parent already bound covers its children
    return tuple(sorted(p for p in visible if not any(p != q and p.startswith(q + "/") for q in visible)))


def isolation_level() -> str:
    """'bwrap' or 'rlimit' (the weaker fallback), for reports and logs."""
    return "bwrap" if bwrap_available() else "rlimit"


def isolated_command(
    argv: list[str], limits: Limits, workdir: str | None = None, sandbox_dir: str = "/tmp/sandbox"
) -> list[str]:
    """``argv`` wrapped so that it runs isolated. ``workdir`` (host path) is the only writable dir,
    mounted at ``sandbox_dir`` and used as the working directory."""
    prlimit = shutil.which("prlimit")
    limited = argv
    if prlimit is not None:
        limited = [
            prlimit,
            f"--as={limits.memory_bytes}",
            f"--cpu={limits.cpu_s}",
            f"--nproc={limits.processes}",
            f"--fsize={limits.file_bytes}",
            f"--nofile={limits.open_files}",
            "--",
            *argv,
        ]
    if not bwrap_available():
        _warn_weak_isolation()
        return limited
    # the private /tmp first: a venv or checkout under /tmp (CI clones) is then bound on top of it
    command = ["bwrap", "--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev"]
    for path in (*SYSTEM_FOLDERS, *_visible_paths()):
        command += ["--ro-bind-try", path, path]
    for path in HIDDEN_FILES:
        if os.path.exists(path):
            command += ["--ro-bind", "/dev/null", path]
    if workdir is not None:
        command += ["--bind", workdir, sandbox_dir, "--chdir", sandbox_dir]
    else:
        command += ["--chdir", "/tmp"]
    command += ["--remount-ro", "/"]  # bwrap's own root (a tmpfs holding the mount points) too
    command += ["--unshare-all", "--die-with-parent", "--new-session", "--", *limited]
    return command


def rlimit_preexec(limits: Limits) -> None:
    """Set the limits in a child before exec, for machines without the prlimit tool."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))


MINIMAL_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}


_PIDS_ROOTS = ("/sys/fs/cgroup/pids", "/sys/fs/cgroup")


@functools.cache
def _pids_root() -> str | None:
    """A writable cgroup directory with the pids controller (v1 or v2), or None."""
    for root in _PIDS_ROOTS:
        base = os.path.join(root, "spogw-sandbox")
        try:
            os.makedirs(base, exist_ok=True)
            if os.path.exists(os.path.join(base, "pids.max")):
                return base
        except OSError:
            continue
    return None


@contextlib.contextmanager
def process_cap(max_processes: int) -> Iterator[list[str]]:
    """A per-run pids cgroup, as a command prefix that moves the process into it.

    RLIMIT_NPROC is not enforced for root, so when the harness runs as root (CI does) a fork bomb
    would only be stopped by the timeout, after starving the machine. Where the pids controller is
    writable, the run gets its own cgroup with pids.max; elsewhere the prefix is empty.
    """
    base = _pids_root()
    if base is None:
        yield []
        return
    path = os.path.join(base, f"run-{uuid.uuid4().hex}")
    try:
        os.mkdir(path)
        with open(os.path.join(path, "pids.max"), "w") as handle:
            handle.write(str(max_processes))
    except OSError:
        yield []
        return
    try:
        yield ["/bin/sh", "-c", f'echo $$ > {path}/cgroup.procs && exec "$@"', "sh"]
    finally:
        for _ in range(50):  # the cgroup can be removed once its last process is gone
            try:
                os.rmdir(path)
                break
            except OSError:
                time.sleep(0.02)


def spawn_kwargs(limits: Limits) -> dict[str, object]:
    """Keyword arguments for subprocess/asyncio spawning of an `isolated_command`."""
    kwargs: dict[str, object] = {"env": dict(MINIMAL_ENV), "start_new_session": True}
    if shutil.which("prlimit") is None:
        kwargs["preexec_fn"] = functools.partial(rlimit_preexec, limits)
    return kwargs


def kill_process_group(process: object) -> None:
    """SIGKILL the process group of an asyncio subprocess started with start_new_session=True.

    Only killpg: Popen.kill() polls first and may reap the child itself, which steals the exit
    status from asyncio's child watcher ("Unknown child process ... returncode 255").
    """
    pid = process.pid  # type: ignore[attr-defined]
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()  # type: ignore[attr-defined]
