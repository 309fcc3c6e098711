from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from spogw.harness.cli import main
from tests.conftest import REPO

SPOGW = [sys.executable, "-m", "spogw.harness.cli"]


def test_help_is_fast() -> None:
    start = time.perf_counter()
    result = subprocess.run([*SPOGW, "--help"], capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - start
    assert "eval" in result.stdout
    assert elapsed < 2.0, f"spogw --help took {elapsed:.2f}s"


def test_help_imports_no_heavy_module() -> None:
    heavy = ("torch", "pydantic", "numpy", "mlflow", "transformers")
    code = (
        "import sys, spogw.harness.cli; spogw.harness.cli.build_parser(); "
        f"print(sorted(m for m in {heavy} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_working_directory_with_its_own_reports_and_methods_shadows_nothing(tmp_path: Path) -> None:
    """A notebook folder with its own reports/ and methods/ packages: `import reports` is the user's,
    `spogw.reports` and the CLI are the harness's (issue 20, item 12)."""
    for package in ("reports", "methods", "harness"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(f"OWNER = 'user {package}'\n")
    code = (
        "import reports, methods, harness, spogw\n"
        "from spogw.methods.spogw import METHOD\n"
        "from spogw.harness.cli import main\n"
        "print(reports.OWNER, methods.OWNER, harness.OWNER, spogw.load.__module__, METHOD.config.__name__)\n"
        "raise SystemExit(main(['list', 'methods']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    first, *listed = result.stdout.splitlines()
    assert first == "user reports user methods user harness spogw.reports SPOGWConfig"
    assert any(line.startswith("spogw ") for line in listed)


def test_list_methods_shows_every_method_file_with_its_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """Every methods/<name>.py that defines METHOD is listed, with the summary its file gives."""
    import importlib

    assert main(["list", "methods"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    files = sorted(p.stem for p in (REPO / "methods").glob("*.py") if "\nMETHOD = Method(" in p.read_text())
    assert sorted(lines) == files
    assert {"spogw", "grpo_online", "grpo_offline", "grpo_kl", "dpo", "score_dpo", "ipo", "static"} <= set(files)
    for name in files:
        assert importlib.import_module(f"spogw.methods.{name}").METHOD.summary in lines[name]


@pytest.mark.parametrize("what", ["benchmarks", "executors", "workflows", "experiments", "generators"])
def test_list_other_registries(what: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", what]) == 0
    assert capsys.readouterr().out.strip()


def test_eval_unknown_benchmark_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "x.parquet"
    assert main(["eval", "--benchmark", "humanevl", "--workflow", "io", "--out", str(out)]) == 2
    assert "did you mean 'humaneval'" in capsys.readouterr().err
    assert not out.exists()


def test_eval_invalid_workflow_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = Path(__file__).parent / "hostile_workflows" / "02_import_os.py"
    out = tmp_path / "x.parquet"
    assert main(["eval", "--benchmark", "gsm_synth", "--workflow", str(bad), "--out", str(out)]) == 2
    assert "Import is not allowed" in capsys.readouterr().err
    assert not out.exists()


def test_eval_writes_per_item_parquet_and_labels_simulation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "scores.parquet"
    code = main(
        [
            "eval",
            "--benchmark",
            "gsm_synth",
            "--workflow",
            "cot",
            "--repeats",
            "2",
            "--limit",
            "10",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    printed = capsys.readouterr()
    assert "SIMULATED" in printed.out and "95% CI over 10 items" in printed.out
    frame = pd.read_parquet(out)
    assert len(frame) == 20 and set(frame["repeat"]) == {0, 1}
    assert frame["simulated"].all() and set(frame["status"]) == {"ok"}
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file is left behind"


@pytest.mark.slow
def test_humaneval_cot_sc_eval_is_deterministic(tmp_path: Path) -> None:
    outputs = []
    for name in ("a", "b"):
        start = time.perf_counter()
        result = subprocess.run(
            [
                *SPOGW,
                "eval",
                "--benchmark",
                "humaneval",
                "--workflow",
                "cot_sc",
                "--executor",
                "sim:medium",
                "--repeats",
                "3",
                "--limit",
                "16",  # 16 x 3 runs with their sandboxed tests show any nondeterminism; the 2 cores are shared
                "--quiet",
                "--out",
                str(tmp_path / f"{name}.parquet"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        elapsed = time.perf_counter() - start
        print(f"run {name}: {elapsed:.1f}s; {result.stdout.splitlines()[3]}")  # about 7 s alone on 2 cores
        assert elapsed < 600  # a hang guard, not a timing claim: the suite shares the cores
        outputs.append(result.stdout.replace(str(tmp_path), ""))
    assert outputs[0].replace("a.parquet", "") == outputs[1].replace("b.parquet", "")
    first, second = (pd.read_parquet(tmp_path / f"{n}.parquet") for n in ("a", "b"))
    columns = ["item_id", "repeat", "status", "score", "answer", "calls", "completion_tokens"]
    pd.testing.assert_frame_equal(first[columns], second[columns])


def test_check_refuses_a_static_workflow_that_cannot_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A workflow file that fails validation, or is not text, is refused by `spogw check` and `spogw
    run` (exit 2, the file named, no run folder), instead of running and scoring 0 for every item."""
    experiment = REPO / "tests" / "data" / "runner_small.yaml"
    invalid = tmp_path / "imports_os.py"
    invalid.write_text("import os\nclass Workflow:\n    pass\n")
    binary = tmp_path / "binary.py"
    binary.write_bytes(b"\xff\xfe\x00\x01binary")
    for path, reason in ((invalid, "Import is not allowed: os"), (binary, "is not UTF-8 text")):
        setting = ["--set", f"methods.1.overrides.workflow={path}"]
        assert main(["check", str(experiment), *setting]) == 2
        err = capsys.readouterr().err
        assert f"{str(path)!r}" in err and reason in err and "methods.1" in err
        run_dir = tmp_path / f"run-{path.stem}"
        assert main(["run", str(experiment), "--run-dir", str(run_dir), "--quiet", *setting]) == 2
        assert not run_dir.exists()


def test_a_trained_method_without_training_questions_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    experiment = tmp_path / "notrain.yaml"
    experiment.write_text(
        "version: 1\nname: notrain\nbenchmarks: [{name: gsm_synth, size: 1}]\n"
        "generator: {name: tiny, tiny_recipe: test}\nmethods: [{name: spogw, overrides: {num_samples: 4, "
        "group_size: 3, max_groups: 4, sharpen_t: 1}}, {name: static, label: cot, overrides: {workflow: cot}}]\n"
        "seeds: [0]\niterations: 1\n"
    )
    run_dir = tmp_path / "run"
    assert main(["run", str(experiment), "--run-dir", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no training questions after the split" in err and "['spogw']" in err and not run_dir.exists()
    assert main(["run", str(experiment), "--dry-run", "--set", "iterations=0"]) == 0  # untrained evaluation is fine


def test_a_run_folder_in_use_is_refused_naming_the_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two `spogw run` on one folder at once used to race (an MLflow migration error, or both doing
    every cell): the second is told which process holds the folder and exits 2, touching nothing."""
    import os

    from spogw.harness.run_folder import run_folder_lock

    run_dir = tmp_path / "run"
    experiment = REPO / "tests" / "data" / "runner_small.yaml"
    with run_folder_lock(run_dir):
        assert main(["run", str(experiment), "--run-dir", str(run_dir), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"{run_dir} is in use by process {os.getpid()}" in err and "--run-dir" in err
        assert not run_dir.exists()
    with run_folder_lock(run_dir):  # released when its holder ends: the folder can be taken again
        pass
