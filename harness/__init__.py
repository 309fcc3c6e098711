"""SPOGW evaluation-and-ablation harness.

Notebook entry point: ``spogw.run(path_or_config, **overrides)`` (this function) runs (or resumes) an experiment
through the same code path as ``spogw run`` and returns its run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spogw.harness.config import ExperimentConfig

__all__ = ["run"]


def run(
    experiment: str | Path | ExperimentConfig,
    *,
    run_dir: str | Path | None = None,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
    force_new: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> Path:
    """Run (or resume) ``experiment`` (a YAML path or an ExperimentConfig); returns the run folder.

    ``overrides`` change fields like ``--set`` does; write dotted paths with ``__``:
    ``spogw.run("experiments/quickstart.yaml", iterations=1, executor__profile="weak")``."""
    from spogw.harness.config import ExperimentConfig, apply_overrides, load_raw, validate
    from spogw.harness.runner import run_experiment
    from spogw.reports.report import finish_report  # the public API is a composition root, like the CLI

    pairs = [f"{key.replace('__', '.')}={_yaml_value(value)}" for key, value in overrides.items()]
    if isinstance(experiment, ExperimentConfig):
        data = apply_overrides(experiment.model_dump(mode="json"), pairs)
        config = validate(data, "<ExperimentConfig>")
    else:
        data = apply_overrides(load_raw(experiment), pairs)
        config = validate(data, str(experiment))
    return run_experiment(
        config,
        Path(run_dir) if run_dir is not None else None,
        methods=methods,
        seeds=seeds,
        force_new=force_new,
        progress=progress,
        finish=finish_report,
    )


def _yaml_value(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
