"""Crash safety of single writes and the crash points the kill tests use (the whole-run kill test
is tests/test_runner.py::test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness import failpoints
from harness.atomic import atomic_path, atomic_write_text

REPO = Path(__file__).resolve().parents[1]


def _child(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


def test_atomic_write_replaces_the_whole_file_with_the_usual_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "report.md"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new " * 1000)
    assert target.read_text() == "new " * 1000
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ["report.md"], "no temporary left behind"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "item_scores.parquet"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("the writer failed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("where", ["while writing the bytes", "after fsync, before the rename"])
def test_sigkill_during_a_write_never_leaves_a_torn_file(tmp_path: Path, where: str) -> None:
    """A process killed mid-write: the target still holds the complete old text (the new text, torn,
    is only ever in a temporary that no reader opens)."""
    target = tmp_path / "report.md"
    target.write_text("old report\n")
    if where == "while writing the bytes":
        body = (
            "import os, signal\nfrom harness.atomic import atomic_path\n"
            f"with atomic_path({str(target)!r}) as t:\n"
            "    h = open(t, 'w'); h.write('new' * 10000); h.flush()\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n"
        )
        result = _child(body)
    else:
        body = f"from harness.atomic import atomic_write_text\natomic_write_text({str(target)!r}, 'new' * 10000)\n"
        result = _child(body, {failpoints.ENV: "write.report.md=1"})
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert target.read_text() == "old report\n"
    strays = [p for p in tmp_path.iterdir() if p != target]
    assert len(strays) == 1 and strays[0].name.startswith(".report.md.") and strays[0].suffix == ".tmp"


def test_a_crash_point_kills_at_its_nth_hit_and_traces_every_hit(tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    code = (
        "from harness import failpoints\n"
        "for site in ['store.rollouts', 'train.step', 'store.rollouts', 'train.step', 'train.step']:\n"
        "    failpoints.hit(site)\n"
        "print('survived')\n"
    )
    env = {failpoints.ENV: "train.step=2", failpoints.TRACE_ENV: str(trace)}
    result = _child(code, env)
    assert result.returncode == -signal.SIGKILL and "survived" not in result.stdout
    assert trace.read_text().split() == ["store.rollouts", "train.step", "store.rollouts", "train.step"]
    by_phase = _child(code, {failpoints.ENV: "phase:collection=2"})
    assert by_phase.returncode == -signal.SIGKILL
    untouched = _child(code, {failpoints.ENV: "phase:report=1"})
    assert untouched.returncode == 0 and "survived" in untouched.stdout


def test_crash_point_plans_parse_and_bad_ones_are_named() -> None:
    plan = failpoints.parse("store.rollouts=3,p=0.5,seed=7,phase=training")
    assert plan.at == {"store.rollouts": 3} and plan.probability == 0.5 and plan.seed == 7
    assert plan.phase == "training"
    for bad in ("store.rollouts=three", "p=x", "phase=lunch"):
        with pytest.raises(ValueError, match=failpoints.ENV):
            failpoints.parse(bad)
    assert failpoints.phase_of("store.rollouts") == "collection"
    assert failpoints.phase_of("checkpoint.staged") == "training"
    assert failpoints.phase_of("write.report.html") == "report"
    assert failpoints.phase_of("write.config.resolved.yaml") == "starting"


def test_unarmed_crash_points_do_nothing() -> None:
    failpoints.configure(None)
    for _ in range(1000):
        failpoints.hit("store.rollouts")
