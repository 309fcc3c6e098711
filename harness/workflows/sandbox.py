"""Runs code that an executor wrote (HumanEval answers, Programmer's solve()) in isolation.

Each program runs in a fresh throwaway directory, in a new process isolated by `isolated_command`
(no network, read-only root, resource limits) and killed, with its whole process group, when its
wall-clock timeout passes. Output is truncated so a program that prints without end cannot fill
memory. Results are cached by (program, timeout) because the same candidate program is tested many
times during collection.

A run passes only when the program ran to its end: harness/workflows/sandbox_driver.py executes it
and writes a fresh random token, sent on stdin and found nowhere in the program's text, to a marker
file once the last statement returned. Exit status 0 alone (``sys.exit(0)``, ``os._exit(0)`` before
the tests) is not a pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import secrets
import stat
import tempfile
from collections import OrderedDict
from dataclasses import dataclass

from spogw.harness.workflows.isolation import (
    Limits,
    interpreter,
    isolated_command,
    kill_process_group,
    process_cap,
    spawn_kwargs,
)

MAX_OUTPUT_BYTES = 64 * 1024
# the real path: the sandbox shows harness/ itself, not the spogw/ links to it
DRIVER = os.path.join(os.path.dirname(os.path.realpath(__file__)), "sandbox_driver.py")
MARKER = ".spogw-completed"


@dataclass(frozen=True)
class SandboxResult:
    status: str
    """'ok' (the program ran to its end: exit 0 and the driver's token), 'error' (an exception, an
    early exit of any kind, or killed by a limit) or 'timeout'."""
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float

    @property
    def passed(self) -> bool:
        return self.status == "ok"


class Sandbox:
    """Runs Python programs isolated, with a bounded cache and bounded parallelism."""

    def __init__(self, limits: Limits | None = None, max_parallel: int | None = None, cache_size: int = 20_000):
        self.limits = limits or Limits(memory_bytes=1 << 30, cpu_s=10, processes=64, file_bytes=10 << 20)
        self._slots = asyncio.Semaphore(max_parallel or max(2, os.cpu_count() or 2))
        self._cache: OrderedDict[str, SandboxResult] = OrderedDict()
        self._cache_size = cache_size
        self.runs = 0
        self.cache_hits = 0

    async def run_python(self, program: str, timeout_s: float = 10.0) -> SandboxResult:
        key = hashlib.sha256(f"{timeout_s}\0{program}".encode()).hexdigest()
        cached = self._cache.get(key)
        if cached is not None:
            self.cache_hits += 1
            self._cache.move_to_end(key)
            return cached
        async with self._slots:
            result = await self._run(program, timeout_s)
        self.runs += 1
        if result.status != "timeout":  # a timeout may be load-related: do not make it sticky
            self._cache[key] = result
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return result

    async def _run(self, program: str, timeout_s: float) -> SandboxResult:
        start = asyncio.get_running_loop().time()
        with tempfile.TemporaryDirectory(prefix="spogw-sandbox-") as workdir:
            with open(os.path.join(workdir, "prog.py"), "w") as handle:
                handle.write(program)
            argv = isolated_command(
                [interpreter(), "-I", "-S", DRIVER, "prog.py", MARKER], self.limits, workdir=workdir
            )
            if argv[0] != "bwrap":  # without bwrap there is no mount: run from the host dir
                argv = [os.path.join(workdir, a) if a in ("prog.py", MARKER) else a for a in argv]
            token = secrets.token_hex(16)
            with process_cap(self.limits.processes) as prefix:
                result = await self._spawn_and_wait(prefix + argv, workdir, timeout_s, start, token)
            if result.status == "ok" and _read_marker(os.path.join(workdir, MARKER)) != token:
                note = "\nthe program exited before its last statement returned (early exit)\n"
                result = dataclasses.replace(result, status="error", stderr=result.stderr + note)
            return result

    async def _spawn_and_wait(
        self, argv: list[str], workdir: str, timeout_s: float, start: float, token: str
    ) -> SandboxResult:
        loop = asyncio.get_running_loop()
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=workdir,
            **spawn_kwargs(self.limits),  # type: ignore[arg-type]
        )
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a process that died at once
            process.stdin.write(token.encode())
            await process.stdin.drain()
        process.stdin.close()
        # Reading goes on after a timeout until the killed process's pipes close: asyncio's
        # wait() only returns once the pipes are drained.
        reading = asyncio.ensure_future(asyncio.gather(_read_capped(process.stdout), _read_capped(process.stderr)))
        try:
            done, _ = await asyncio.wait({reading}, timeout=timeout_s)
        except BaseException:  # cancelled (Ctrl-C): the program must not outlive the run
            kill_process_group(process)
            reading.cancel()
            await process.wait()
            raise
        timed_out = not done
        if timed_out:
            kill_process_group(process)
        stdout, stderr = await reading
        await process.wait()
        status = "timeout" if timed_out else ("ok" if process.returncode == 0 else "error")
        return SandboxResult(
            status=status,
            returncode=process.returncode,
            stdout=stdout.decode("utf-8", "replace"),
            stderr=stderr.decode("utf-8", "replace"),
            wall_s=loop.time() - start,
        )


def _read_marker(path: str) -> str | None:
    """The marker's content, read without trusting it: the program may have replaced it by a
    symlink (to a host file) or a FIFO (which would block an open), so neither is followed."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        return os.read(descriptor, 64).decode("ascii", "replace")
    finally:
        os.close(descriptor)


async def _read_capped(stream: asyncio.StreamReader | None) -> bytes:
    """Read to EOF but keep only the first MAX_OUTPUT_BYTES (the rest is drained and dropped)."""
    if stream is None:
        return b""
    kept = bytearray()
    while chunk := await stream.read(65536):
        if len(kept) < MAX_OUTPUT_BYTES:
            kept += chunk[: MAX_OUTPUT_BYTES - len(kept)]
        # read() returns without suspending while data is buffered: yield, or a program that
        # prints without end would starve the event loop and its own timeout would never fire.
        await asyncio.sleep(0)
    return bytes(kept)
