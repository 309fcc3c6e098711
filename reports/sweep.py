"""The report of a sweep: every trial, the best configuration (and its experiment file), parameter
importances (fANOVA, from MIN_IMPORTANCE_TRIALS complete trials on), Optuna's slice / contour /
parallel-coordinate / history plots, and the best configuration re-run on fresh seeds with its CI
(the number to put in a paper: the sweep's own best value is biased upward by the selection).

Writing it ends the sweep: the sweep's MLflow parent run gets the trial counts, the best value and
the report, and ends FINISHED (harness/sweeps/parent_run.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from spogw.harness.atomic import atomic_write_text
from spogw.harness.config import validate
from spogw.reports import plots
from spogw.reports.report import Report, write_files
from spogw.reports.sections import Section, pipe_table, table_section, text_section

if TYPE_CHECKING:
    import optuna

    from spogw.harness.sweeps.config import Sweep

BEST_EXPERIMENT = "best_experiment.yaml"
MIN_IMPORTANCE_TRIALS = 10
"""Complete trials below which fANOVA importances are not shown: its random forest fit to a handful
of points apportions noise (two trials give any split of 100%)."""


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, value (the objective: COMPLETE trials only), the last
    intermediate value a pruned trial reported (labelled: it is a test score at one step, not an
    objective value), parameters, duration and why it stopped early."""
    import optuna

    rows = []
    for trial in study.get_trials(deepcopy=False):
        start, end = trial.datetime_start, trial.datetime_complete
        duration = (end - start).total_seconds() if start is not None and end is not None else None
        # Optuna copies a pruned trial's last intermediate value into its value: never show it as one
        complete = trial.state == optuna.trial.TrialState.COMPLETE
        step = trial.last_step if trial.state == optuna.trial.TrialState.PRUNED else None
        rows.append(
            {
                "trial": trial.number,
                "state": trial.state.name,
                "value": trial.value if complete else None,
                "last_intermediate": (
                    f"{trial.intermediate_values[step]:.4f} at step {step} (before pruning)" if step is not None else ""
                ),
                **{f"param.{k}": v for k, v in trial.params.items()},
                "seconds": duration,
                "note": trial.user_attrs.get("infeasible")
                or trial.user_attrs.get("pruned")
                or trial.user_attrs.get("error", ""),
            }
        )
    return pd.DataFrame(rows)


def declared_space_copy(study: optuna.Study, sweep: Sweep) -> optuna.Study:
    """The completed trials in an in-memory study whose distributions are the declared ranges.

    The constraints draw a parameter from a range that depends on earlier draws (n in [2, m]), and
    Optuna's importances and plots leave out a parameter whose distribution changed between trials;
    against the declared, fixed ranges every parameter is assessed."""
    import optuna

    declared = {name: _distribution(spec) for name, spec in sweep.config.space.items()}
    copy = optuna.create_study(direction=study.direction)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        copy.add_trial(
            optuna.trial.create_trial(
                params=trial.params,
                distributions={k: declared[k] for k in trial.params},
                value=trial.value,
                user_attrs={"number": trial.number},
            )
        )
    return copy


def _distribution(spec: Any) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if spec.type == "categorical":
        return CategoricalDistribution(spec.choices)
    if spec.type == "int":
        return IntDistribution(int(spec.low), int(spec.high), log=spec.log, step=int(spec.step or 1))
    return FloatDistribution(spec.low, spec.high, log=spec.log, step=spec.step)


def importances(study: optuna.Study) -> dict[str, float]:
    """fANOVA importances over the completed trials of ``study`` (a declared_space_copy); {} with
    fewer than two trials, no varying parameter, or a constant objective."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    varying = {k for t in complete for k in t.params if len({str(u.params.get(k)) for u in complete}) > 1}
    if len(complete) < 2 or not varying:
        return {}
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator, params=sorted(varying)))
    except (RuntimeError, ValueError):  # a constant objective, or too few distinct points: nothing to apportion
        return {}


def importance_section(assessed: optuna.Study) -> Section:
    """fANOVA importances over ``assessed`` (a declared_space_copy), or why they are not shown."""
    title = "Parameter importances (fANOVA)"
    complete = len(assessed.trials)  # the copy holds the complete trials only
    if complete < MIN_IMPORTANCE_TRIALS:
        return text_section(
            title,
            f"Not shown: {complete} complete trial{'s' if complete != 1 else ''}; importances from fewer than "
            f"{MIN_IMPORTANCE_TRIALS} complete trials are unreliable (fANOVA's random forest, fit to so few "
            "points, apportions noise).\n",
        )
    weights = importances(assessed)
    if not weights:
        return text_section(title, "Not computable: no parameter varies, or the objective is constant.\n")
    frame = pd.DataFrame({"parameter": list(weights), "importance": list(weights.values())})
    return table_section(title, frame, f"Share of the objective's variance, over {complete} complete trials.")


def _figures(study: optuna.Study, names: list[str]) -> list[tuple[str, Any]]:
    """Optuna's matplotlib plots (experimental API: its warnings are silenced) as figures."""
    import warnings

    import optuna.visualization.matplotlib as views

    plots._pyplot()  # the Agg backend and the theme
    made = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, draw in (
            ("sweep_history", lambda: views.plot_optimization_history(study)),
            ("sweep_slice", lambda: views.plot_slice(study, params=names)),
            ("sweep_parallel_coordinate", lambda: views.plot_parallel_coordinate(study, params=names)),
            ("sweep_contour", lambda: views.plot_contour(study, params=names[:3])),
            ("sweep_importances", lambda: views.plot_param_importances(study)),
        ):
            if name == "sweep_importances" and len(study.trials) < MIN_IMPORTANCE_TRIALS:
                continue  # the same rule as importance_section
            try:
                axes = draw()
            except (ValueError, RuntimeError, ZeroDivisionError):  # too few completed trials for this view
                continue
            first = axes.flat[0] if hasattr(axes, "flat") else axes
            made.append((name, first.figure))
    return made


def write_sweep_report(
    run_dir: Path, sweep: Sweep, study: optuna.Study, rerun_dir: Path | None, mlflow_uri: str | None = None
) -> Report:
    """report.md / report.html / results.tex of the sweep folder, and best_experiment.yaml; then the
    sweep's MLflow parent run gets them and ends FINISHED (FAILED if the report cannot be written).
    ``mlflow_uri``: where that run lives (None: as recorded in the sweep folder)."""
    from spogw.harness.sweeps.parent_run import end_parent_run, ending_status

    try:
        report = _write_sweep_report(run_dir, sweep, study, rerun_dir)
    except BaseException as err:
        end_parent_run(run_dir, study, ending_status(err), mlflow_uri=mlflow_uri)
        raise
    files = [(path, None) for path in (report.markdown, report.html, report.latex, run_dir / BEST_EXPERIMENT)]
    end_parent_run(run_dir, study, "FINISHED", [*files, (run_dir / "report", "report")], mlflow_uri)
    return report


def _write_sweep_report(run_dir: Path, sweep: Sweep, study: optuna.Study, rerun_dir: Path | None) -> Report:
    import optuna

    config = sweep.config
    table = trials_table(study)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    simulated = validate(sweep.experiment_data({}), sweep.source).simulation().statement()
    sections: list[Section] = []
    counts = table["state"].value_counts().to_dict() if not table.empty else {}
    head = [
        f"Objective: {config.objective.metric} of `{config.objective.method}`"
        + (f" against `{config.objective.baseline}`" if config.objective.baseline else "")
        + f", {config.direction}d, seeds {config.objective.seeds}, on the "
        + f"{sweep.experiment_data({}).get('evaluation', {}).get('split', 'test')} split.",
        "",
        f"Trials: {len(table)} ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}); sampler "
        f"{config.sampler.name} (seed {config.sampler.seed}), pruner {config.pruner.name}; constraints: "
        + ("; ".join(f"`{c}`" for c in config.constraints) or "none")
        + ".",
        "",
    ]
    if complete:
        best = study.best_trial
        experiment = sweep.experiment_data(best.params)
        path = run_dir / BEST_EXPERIMENT
        atomic_write_text(
            path,
            f"# The best configuration of sweep {config.name} (trial {best.number}, objective {best.value:.4f}).\n"
            + yaml.safe_dump(experiment, sort_keys=False),
        )
        head += [
            f"Best: trial {best.number}, objective {best.value:.4f}, parameters "
            + ", ".join(f"{k} = {v}" for k, v in best.params.items())
            + f" (experiment file: {BEST_EXPERIMENT}). The sweep's best value is optimistic (it was selected "
            "among the trials); the re-run below on fresh seeds is the number to report.",
            "",
        ]
    sections.append(text_section("Sweep", "\n".join(head)))
    shown = table.round(4) if not table.empty else table
    sections.append(
        table_section(
            "Trials",
            shown,
            "Every trial; value = the objective, of COMPLETE trials only (empty: pruned, infeasible or failed). "
            "last_intermediate = the last test score a pruned trial reported to the pruner, at step = seed index "
            "x (iterations + 1) + iteration: not an objective value.",
        )
    )
    assessed = declared_space_copy(study, sweep)
    sections.append(importance_section(assessed))
    if rerun_dir is not None and (rerun_dir / "rollouts.sqlite").is_file():
        sections.append(_rerun_section(rerun_dir, sweep))
    names = [name for name in config.space if any(name in t.params for t in complete)]
    figures: list[Path] = []
    for name, figure in _figures(assessed, names) if len(complete) >= 2 else []:
        figures += plots.save(figure, run_dir / "report", name)
    latex = "" if table.empty else shown.style.hide(axis="index").to_latex(hrules=True)
    return write_files(run_dir, f"sweep {config.name}", simulated, "see the base experiment", sections, figures, latex)


def _rerun_section(rerun_dir: Path, sweep: Sweep) -> Section:
    """The best configuration on fresh seeds: its score with CIs, and the paired difference against
    the baseline when the objective has one."""
    from spogw.harness.scores import own_executor, read_item_scores
    from spogw.reports.comparison import MIN_SEEDS, paired_table, score_table

    frame = own_executor(read_item_scores(rerun_dir))
    objective = sweep.config.objective
    scores = score_table(frame, resamples=5_000)
    lines = [
        f"The best configuration re-run on fresh seeds {sweep.config.rerun.seeds}, evaluated on the "
        f"{sweep.config.rerun.split} split (folder {rerun_dir.name}/); score = mean over seeds and items with a 95% CI "
        "over seeds and items (two-level bootstrap) and over seeds only.",
        "",
        pipe_table(scores.round(4)),
        "",
    ]
    if len(sweep.config.rerun.seeds) < MIN_SEEDS:
        lines += [
            f"With {len(sweep.config.rerun.seeds)} re-run seed the interval over seeds is not computable (nan); "
            "the two-level interval then covers items only, not seed-to-seed variation. Give rerun.seeds "
            f"at least {MIN_SEEDS} seeds for a claim about the configuration.",
            "",
        ]
    if objective.baseline is not None and objective.baseline in set(frame["method"]):
        paired = paired_table(frame, [(objective.method, objective.baseline)], resamples=5_000)
        lines += ["Paired by item against the baseline:", "", pipe_table(paired.round(4)), ""]
    return text_section("Best configuration on fresh seeds", "\n".join(lines))
