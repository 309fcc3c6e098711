"""The schema of a sweep file (experiments/sweep_*.yaml) and its loading.

A sweep names a base experiment file, the method whose config it searches, the search space (a
parameter without a dot is a field of that method's config; a dotted one is a field of the
experiment, e.g. ``generator.sampling.temperature``), linear constraints between parameters, the
objective, the sampler and pruner, and how many trials run in total. Errors name the file, the
field and the value, as for experiment files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from spogw.harness.config import (
    ConfigError,
    ExperimentConfig,
    SchemaVersion,
    StrictModel,
    _read_yaml,
    apply_overrides,
    format_validation_error,
    load_raw,
    validate,
)
from spogw.harness.sweeps.space import LinearConstraint, ParamSpec, parse_constraint


class ObjectiveConfig(StrictModel):
    method: str
    """Label (in the base experiment) of the method whose config is searched and scored."""
    metric: Literal["mean_score", "paired_difference"] = "mean_score"
    """mean_score: the method's final mean score on the evaluation split (mean over benchmarks of
    the per-benchmark mean over items and seeds); paired_difference: the mean over items of
    (method - baseline), item scores averaged over seeds, benchmarks averaged."""
    baseline: str | None = None
    """For paired_difference: the label of the reference method (run in every trial)."""
    seeds: list[int] = Field([0], min_length=1)
    """Seeds every trial runs; the objective averages over them."""

    @model_validator(mode="after")
    def _baseline_for_paired(self) -> ObjectiveConfig:
        if self.metric == "paired_difference" and self.baseline is None:
            raise ValueError("metric paired_difference needs a baseline method label")
        return self


class SamplerConfig(StrictModel):
    name: Literal["tpe", "random"] = "tpe"
    """TPE (Optuna's default) or uniform random search."""
    seed: int = 0
    """Sampler seed (a worker joining with --worker adds its own offset, so workers never draw alike)."""
    n_startup_trials: int = Field(4, ge=0)
    """TPE: random trials before the model is used."""


class PrunerConfig(StrictModel):
    name: Literal["median", "none"] = "median"
    """median: stop a trial whose test score at an iteration is below the median of earlier trials
    at the same (seed, iteration) step; none: every trial runs to the end."""
    n_startup_trials: int = Field(3, ge=0)
    """Trials that run unpruned before the pruner compares."""
    n_warmup_steps: int = Field(1, ge=0)
    """Steps of each trial never pruned (step 0 is the untrained generator: identical for every trial)."""


class RerunConfig(StrictModel):
    seeds: list[int] = Field(default_factory=lambda: [100, 101, 102])
    """Fresh seeds the best configuration is run on after the study, for its final score and CI
    (empty: no re-run)."""
    split: Literal["test", "validation"] = "test"
    """The split of the re-run's evaluation: the test split when trials were scored on validation."""


class SweepConfig(StrictModel):
    version: SchemaVersion
    """Schema version of the sweep file."""
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """Study name (Optuna) and MLflow experiment; default run folder runs/<name>."""
    description: str = ""
    """One line shown by `spogw list experiments`."""
    base: str
    """The base experiment file, relative to the sweep file."""
    set: dict[str, Any] = Field(default_factory=dict)
    """Changes to the base experiment for every trial (dotted fields, like --set)."""
    space: dict[str, ParamSpec] = Field(min_length=1)
    """Parameters in the order they are drawn: a name without a dot is a field of the objective
    method's config (e.g. group_size), a dotted name a field of the experiment."""
    constraints: list[str] = Field(default_factory=list)
    """Linear constraints between parameters, e.g. '2 * sharpen_t <= group_size <= num_samples';
    enforced while suggesting, so an infeasible configuration is never run."""
    objective: ObjectiveConfig
    """What a trial is scored by."""
    direction: Literal["maximize", "minimize"] = "maximize"
    """Whether a larger objective is better."""
    sampler: SamplerConfig = SamplerConfig()
    """How configurations are suggested."""
    pruner: PrunerConfig = PrunerConfig()
    """Early stopping of unpromising trials."""
    n_trials: int = Field(gt=0)
    """Trials in total, over every worker (pruned and infeasible ones count; failed ones do not)."""
    heartbeat_s: int = Field(10, gt=0)
    """A running trial's heartbeat interval (RDB storages: sqlite, PostgreSQL)."""
    grace_s: int = Field(30, gt=0)
    """A RUNNING trial without a heartbeat for this long belongs to a dead worker: it is marked FAIL
    and retried once with the same parameters."""
    rerun: RerunConfig = RerunConfig()
    """The best configuration's re-run on fresh seeds."""

    @field_validator("constraints")
    @classmethod
    def _parse(cls, value: list[str], info: Any) -> list[str]:
        names = set(info.data.get("space", {}))
        for text in value:
            parse_constraint(text, names)
        return value

    def linear_constraints(self) -> list[LinearConstraint]:
        return [c for text in self.constraints for c in parse_constraint(text, set(self.space))]


class Sweep:
    """A loaded sweep: its config, the base experiment as data, and the trial configurations."""

    def __init__(self, config: SweepConfig, base: dict[str, Any], source: str) -> None:
        self.config = config
        self.base = base
        self.source = source

    FREE_FIELDS = ("description", "n_trials", "heartbeat_s", "grace_s", "rerun")
    """Sweep fields a study may change between invocations (more trials, another re-run): they do
    not change what a trial runs."""

    def definition(self) -> dict[str, Any]:
        """What every trial of the study runs: the sweep's search (space, constraints, objective,
        sampler, pruner, set) and the base experiment as a trial sees it."""
        fields = self.config.model_dump(mode="json", exclude=set(self.FREE_FIELDS))
        return {**fields, "base_experiment": self.experiment_data({})}

    def experiment_data(self, params: dict[str, Any], seeds: list[int] | None = None) -> dict[str, Any]:
        """The experiment of a trial with ``params`` (base + set + the parameters), reduced to the
        objective's methods and seeds."""
        objective = self.config.objective
        data = apply_overrides(self.base, [f"{k}={_yaml(v)}" for k, v in self.config.set.items()])
        labels = [objective.method] + ([objective.baseline] if objective.baseline else [])
        methods = [m for m in data["methods"] if _label(m) in labels]
        data["methods"] = methods
        index = next(i for i, m in enumerate(methods) if _label(m) == objective.method)
        changes = [
            (f"{name}" if "." in name else f"methods.{index}.overrides.{name}") + f"={_yaml(value)}"
            for name, value in params.items()
        ]
        data = apply_overrides(data, changes)
        data["seeds"] = list(seeds if seeds is not None else objective.seeds)
        stats = data.setdefault("stats", {})
        stats["baseline"] = objective.baseline
        stats["comparisons"] = []
        data.setdefault("study", {})["kind"] = "comparison"
        return data

    def experiment(self, params: dict[str, Any], seeds: list[int] | None = None) -> ExperimentConfig:
        return validate(self.experiment_data(params, seeds), f"{self.source} (trial {params})")


def _label(method: dict[str, Any]) -> str:
    """A raw methods[] entry's label, as MethodSpec.display_label gives it (label, else name)."""
    return str(method.get("label") or method.get("name"))


def _yaml(value: Any) -> str:
    import json

    return json.dumps(value)  # JSON is YAML: numbers, strings and lists round-trip exactly


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> Sweep:
    """Load and check a sweep file: its own fields, the base experiment, that the objective's
    methods exist, and that the space's corners give valid experiments. Raises ConfigError."""
    path = Path(path)
    data = _read_yaml(path)
    if overrides:
        data = apply_overrides(data, overrides)
    try:
        config = SweepConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(str(path), err, data)) from None
    base_path = (path.parent / config.base).resolve()
    base = load_raw(base_path)
    validate(base, str(base_path))
    labels = [_label(m) for m in base.get("methods", [])]
    for field, label in (
        ("objective.method", config.objective.method),
        ("objective.baseline", config.objective.baseline),
    ):
        if label is not None and label not in labels:
            raise ConfigError(f"{path}: {field} = {label!r}: not a method label of {base_path.name} ({labels})")
    for name in config.space:
        if "." in name:
            _check_experiment_field(path, name)
    sweep = Sweep(config, base, str(path))
    for corner in ("low", "high"):  # a typo in a method field fails here, before any trial runs
        params = {
            name: (spec.choices[0] if spec.type == "categorical" else getattr(spec, corner))  # type: ignore[index]
            for name, spec in config.space.items()
        }
        params = {k: int(v) if config.space[k].type == "int" else v for k, v in params.items()}
        try:
            sweep.experiment(params, config.objective.seeds)
        except ConfigError as err:  # a corner may break a constraint (2t > n): only unknown names are errors
            if "unknown field" in str(err):
                raise ConfigError(f"{path}: space: a parameter is not a field of the experiment:\n{err}") from None
    return sweep


def _check_experiment_field(path: Path, name: str) -> None:
    """A dotted parameter must name a field of the experiment schema."""
    from spogw.harness.config import ExperimentConfig as Model

    node: Any = Model
    for part in name.split("."):
        fields = getattr(node, "model_fields", None)
        if fields is None or part not in fields:
            raise ConfigError(f"{path}: space.{name}: not a field of the experiment file (`spogw schema` lists them)")
        annotation = fields[part].annotation
        node = annotation if isinstance(annotation, type) else None
        if node is None:
            return
