from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from harness.workflows.isolation import bwrap_available
from harness.workflows.sandbox import Sandbox
from tests.conftest import run

needs_bwrap = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap not installed")


def python(program: str, timeout_s: float = 5.0):  # type: ignore[no-untyped-def]
    return run(Sandbox().run_python(program, timeout_s=timeout_s))


def test_ok_program_prints() -> None:
    result = python("print(6 * 7)")
    assert result.passed and result.stdout.strip() == "42"


def test_failing_program_is_error() -> None:
    result = python("assert 1 == 2, 'nope'")
    assert result.status == "error" and "nope" in result.stderr


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
    import harness.benchmarks.humaneval as humaneval

    monkeypatch.setattr(humaneval, "TEST_TIMEOUT_S", 3.0)
    item = humaneval.load_humaneval().items[0]
    target = tmp_path / "pwned.txt"
    answer = item.question + HOSTILE_ANSWERS[attack].format(target=str(target))
    start = time.perf_counter()
    assert run(humaneval.score_tests(item, answer, Sandbox())) == 0.0
    assert time.perf_counter() - start < 15
    assert not target.exists()


def test_without_bwrap_falls_back_to_rlimits_with_a_warning(monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    import harness.workflows.isolation as isolation

    monkeypatch.setattr(isolation, "bwrap_available", lambda: False)
    isolation._warn_weak_isolation.cache_clear()
    command = isolation.isolated_command(["python3", "-c", "pass"], isolation.Limits())
    assert command[0] != "bwrap"
    assert "rlimits only" in caplog.text
    assert isolation.isolation_level() == "rlimit"
    result = python("print('still runs')")
    assert result.passed and result.stdout.strip() == "still runs"
    assert python("x = bytearray(4 * 1024 ** 3)").status == "error"
