from __future__ import annotations

import ast
import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spogw.harness.workflows.isolation import bwrap_available
from spogw.harness.workflows.sandbox import Sandbox
from tests.conftest import REPO, run

needs_bwrap = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap not installed")


def python(program: str, timeout_s: float = 5.0):  # type: ignore[no-untyped-def]
    return run(Sandbox().run_python(program, timeout_s=timeout_s))


def test_ok_program_prints() -> None:
    result = python("print(6 * 7)")
    assert result.passed and result.stdout.strip() == "42"


def test_failing_program_is_error() -> None:
    result = python("assert 1 == 2, 'nope'")
    assert result.status == "error" and "nope" in result.stderr


def test_an_error_is_reported_when_the_program_left_nothing_to_import() -> None:
    """The driver imports traceback only on the error path: a program that emptied sys.path
    before raising still fails with its exception named as the traceback's last line would."""
    result = python("import sys\nsys.path.clear()\nsys.meta_path.clear()\nraise ValueError('x')\n")
    assert result.status == "error" and result.returncode == 1
    assert result.stderr.endswith("ValueError: x\n")


@needs_bwrap
def test_cannot_write_outside_its_directory(tmp_path: Path) -> None:
    target = tmp_path / "escape.txt"
    result = python(f"open({str(target)!r}, 'w').write('x')")
    assert result.status == "error"
    assert not target.exists()


@needs_bwrap
def test_own_directory_is_writable_and_thrown_away() -> None:
    result = python("open('scratch.txt', 'w').write('x'); import os; print(os.getcwd())")
    assert result.passed
    assert not Path(result.stdout.strip(), "scratch.txt").exists() or result.stdout.strip() == "/tmp/sandbox"


@needs_bwrap
def test_no_network() -> None:
    result = python("import socket; socket.create_connection(('127.0.0.1', 22), timeout=2)")
    assert result.status == "error"
    assert "Network is unreachable" in result.stderr or "refused" in result.stderr


def test_memory_bomb_fails_cleanly() -> None:
    result = python("x = bytearray(4 * 1024 ** 3)")
    assert result.status == "error" and "MemoryError" in result.stderr


def test_infinite_loop_times_out() -> None:
    start = time.perf_counter()
    result = python("while True:\n    pass", timeout_s=2)
    assert result.status == "timeout"
    assert time.perf_counter() - start < 6


def test_endless_output_is_truncated_and_times_out() -> None:
    result = python("while True:\n    print('x' * 10000)", timeout_s=2)
    assert result.status == "timeout"
    assert len(result.stdout) <= 64 * 1024


@needs_bwrap
def test_secrets_in_environment_are_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-123")
    result = python("import os; print(os.environ.get('OPENAI_API_KEY'))")
    assert result.stdout.strip() == "None"


def test_results_are_cached() -> None:
    async def twice() -> tuple[int, int]:
        sandbox = Sandbox()
        await sandbox.run_python("print(1)")
        await sandbox.run_python("print(1)")
        return sandbox.runs, sandbox.cache_hits

    assert run(twice()) == (1, 1)


@pytest.mark.skipif(os.geteuid() != 0 and not bwrap_available(), reason="needs root or bwrap")
def test_fork_bomb_is_contained() -> None:
    start = time.perf_counter()
    result = python("import os\nwhile True:\n    os.fork()", timeout_s=5)
    assert result.status in ("error", "timeout")
    assert time.perf_counter() - start < 60


HOSTILE_ANSWERS = {
    "writes outside its directory": "    open({target!r}, 'w').write('pwned')\n    return False\n",
    "opens a socket": (
        "    import socket\n    socket.create_connection(('127.0.0.1', 22), timeout=2)\n    return False\n"
    ),
    "allocates 4 GiB": "    blob = bytearray(4 * 1024 ** 3)\n    return False\n",
    "loops forever": "    while True:\n        pass\n",
}


@needs_bwrap
@pytest.mark.parametrize("attack", sorted(HOSTILE_ANSWERS))
def test_hostile_humaneval_answer_fails_that_item_cleanly(attack: str, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import spogw.harness.benchmarks.humaneval as humaneval
    import spogw.harness.benchmarks.programs as programs

    monkeypatch.setattr(programs, "TEST_TIMEOUT_S", 3.0)
    item = humaneval.load_humaneval().items[0]
    target = tmp_path / "pwned.txt"
    answer = item.question + HOSTILE_ANSWERS[attack].format(target=str(target))
    start = time.perf_counter()
    assert run(humaneval.score_tests(item, answer, Sandbox())) == 0.0
    assert time.perf_counter() - start < 15
    assert not target.exists()


def test_without_bwrap_falls_back_to_rlimits_with_a_warning(monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    import spogw.harness.workflows.isolation as isolation

    monkeypatch.setattr(isolation, "bwrap_available", lambda: False)
    isolation._warn_weak_isolation.cache_clear()
    command = isolation.isolated_command(["python3", "-c", "pass"], isolation.Limits())
    assert command[0] != "bwrap"
    assert "rlimits only" in caplog.text
    assert isolation.isolation_level() == "rlimit"
    result = python("print('still runs')")
    assert result.passed and result.stdout.strip() == "still runs"
    assert python("x = bytearray(4 * 1024 ** 3)").status == "error"


# ----------------------------------------------------------------------------------------------
# Hostile executor-written programs: each is contained (the host is unchanged) and reported
# (a status and, for errors, what failed), in bounded time.


@pytest.fixture
def host_canary() -> Iterator[Path]:
    """A secret file in the project folder (outside /tmp): the sandbox must not see it."""
    path = REPO / f".sandbox-canary-{os.getpid()}"
    path.write_text("CANARY-SECRET-7f3a")
    yield path
    path.unlink(missing_ok=True)


@needs_bwrap
def test_writing_to_the_root_file_system_fails() -> None:
    result = python("open('/spogw-pwned', 'w').write('x')")
    assert result.status == "error" and ("Read-only" in result.stderr or "Permission" in result.stderr)
    assert not Path("/spogw-pwned").exists()


@needs_bwrap
def test_home_ssh_and_project_files_are_invisible(host_canary: Path) -> None:
    program = (
        "import os, pathlib\n"
        "found = []\n"
        f"for path in [{str(host_canary)!r}, os.path.expanduser('~/.ssh'), '/root', '/home', {str(REPO)!r}]:\n"
        "    try:\n"
        "        p = pathlib.Path(path)\n"
        "        found.append(p.read_text() if p.is_file() else sorted(os.listdir(p)))\n"
        "    except OSError as err:\n"
        "        found.append(type(err).__name__)\n"
        "print(found)\n"
    )
    result = python(program)
    assert result.passed, result.stderr
    assert "CANARY-SECRET" not in result.stdout
    seen = ast.literal_eval(result.stdout)
    assert seen[0] == "FileNotFoundError" and seen[1] == "FileNotFoundError"
    project = seen[4] if isinstance(seen[4], list) else []
    assert set(project) <= {"harness", ".venv"}, f"of the project only the package and interpreter: {project}"


@needs_bwrap
def test_no_connection_to_a_server_on_the_hosts_loopback() -> None:
    accepted: list[object] = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    port = server.getsockname()[1]

    def accept() -> None:
        with contextlib.suppress(OSError):
            accepted.append(server.accept())

    listener = threading.Thread(target=accept)
    listener.start()
    result = python(f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2).send(b'x')")
    listener.join()
    server.close()
    assert result.status == "error" and ("refused" in result.stderr or "unreachable" in result.stderr)
    assert not accepted, "the sandbox reached a host server"


@needs_bwrap
def test_killing_the_parent_or_a_host_process_fails() -> None:
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        result = python(
            "import os, signal\n"
            f"for pid in ({bystander.pid}, os.getppid(), 1):\n"
            "    try:\n"
            "        os.kill(pid, signal.SIGKILL)\n"
            "    except OSError as err:\n"
            "        print(pid, type(err).__name__)\n"
            "print('still here')\n"
        )
        assert bystander.poll() is None, "a host process was killed from the sandbox"
        assert result.status in ("ok", "error", "timeout")
        assert python("print('next')").stdout.strip() == "next", "the sandbox still works afterwards"
    finally:
        bystander.kill()
        bystander.wait()


def test_sleeping_forever_times_out_in_bounded_time() -> None:
    start = time.perf_counter()
    result = python("import time\ntime.sleep(10 ** 6)", timeout_s=2)
    assert result.status == "timeout" and time.perf_counter() - start < 6


@pytest.mark.parametrize(
    "program",
    ["import sys\nsys.exit(0)", "raise SystemExit(0)", "import os\nos._exit(0)", "exit(0)", "quit()"],
)
def test_exit_status_0_before_the_end_is_not_a_pass(program: str) -> None:
    result = python(program + "\nprint('unreachable')")
    assert not result.passed and result.status == "error" and "unreachable" not in result.stdout


def test_a_planted_marker_fifo_or_symlink_is_not_a_pass(tmp_path: Path) -> None:
    """The program cannot pre-empt the pass marker: a FIFO would block an open, a symlink would
    point the write elsewhere; both end as a quick failure and nothing outside changes."""
    from spogw.harness.workflows.sandbox import MARKER

    target = tmp_path / "host-file.txt"
    target.write_text("untouched")
    start = time.perf_counter()
    fifo = python(f"import os\nos.mkfifo({MARKER!r})", timeout_s=10)
    link = python(f"import os\nos.symlink({str(target)!r}, {MARKER!r})", timeout_s=10)
    assert not fifo.passed and not link.passed and time.perf_counter() - start < 8
    assert target.read_text() == "untouched"


def test_a_main_block_does_not_run_as_in_the_reference() -> None:
    """openai/human-eval execs the program with __name__ != '__main__': a demo block that reads
    stdin must not fail the answer."""
    result = python("def f():\n    return 1\n\nif __name__ == '__main__':\n    print(f(int(input())))\nprint('end')")
    assert result.passed and result.stdout.strip() == "end"
