"""The run's report: report.md and a self-contained report.html (plots embedded), from the run
folder's store alone, so `spogw report RUN_DIR` can rebuild it at any time (also mid-run).

Sections: the study's section when the experiment declares one (study.kind: the open questions
and the ablation, reports/studies.py), the results table (markdown and LaTeX: final scores with
two-level CIs, best in bold, significance in the declared family after Holm), the paired
comparisons, rliable's aggregates, the per-iteration summary, group curation, workflow diversity
and training cost, and the figures (PNG + SVG in <run_dir>/report/).

Its first lines say what it covers against what the experiment declares (reports/coverage.py): a
partial run or a report written mid-run says so, marks each method still in progress, and only
finished methods' numbers become MLflow's ``final.*`` metrics.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from spogw.harness.atomic import atomic_write_text
from spogw.harness.scores import own_executor
from spogw.reports import plots
from spogw.reports.comparison import (
    aggregate_display,
    aggregate_table,
    comparison_pairs,
    learning_table,
    paired_table,
    score_table,
)
from spogw.reports.costs import COSTS, cost_table, cumulative_costs, iteration_costs
from spogw.reports.coverage import Coverage, coverage
from spogw.reports.curation import curation_table, group_std_frame
from spogw.reports.diversity import METRICS, diversity_frame, diversity_table
from spogw.reports.health import SERVED_GAP, SERVED_NOTE, health_table, learning_signal_warnings
from spogw.reports.oracle import oracle_section
from spogw.reports.power import planning_markdown, planning_table
from spogw.reports.search import search_sections
from spogw.reports.sections import Section, markdown_html, metric_bounds, table_section, with_intervals
from spogw.reports.studies import STUDIES, StudyData
from spogw.reports.summary import final_iterations, item_score_frame, summary_markdown, summary_table
from spogw.reports.tables import latex_table, markdown_table

if TYPE_CHECKING:
    from spogw.harness.config import ExperimentConfig
    from spogw.harness.tracking import Tracker


@dataclass(frozen=True)
class Report:
    markdown: Path
    html: Path
    latex: Path
    figures: list[Path]
    final_metrics: dict[str, float] = field(default_factory=dict)
    """MLflow metrics of the methods whose every cell with scores is done (reports.coverage):
    ``final.<method>.test_score`` (harness.scores' macro average over benchmarks, mean over seeds),
    ``final.<method>.test_score.<benchmark>`` and ``final.<method>.seeds``. A method in progress has none."""


def write_report(run_dir: Path, config: ExperimentConfig) -> Report:
    """The report of a run folder, read from its store (read-only: the run may still be going)."""
    from spogw.reports.data import connect_read_only, read_eval_items, read_groups, read_iterations, read_rollouts
    from spogw.reports.search import read_search_rounds

    with connect_read_only(run_dir) as db:
        eval_items = read_eval_items(db)
        rollouts = read_rollouts(db)
        iterations = read_iterations(db)
        groups = read_groups(db)
        search = read_search_rounds(db)
    return build_report(run_dir, config, rollouts, eval_items, iterations, groups, search)


def finish_report(run_dir: Path, config: ExperimentConfig, tracker: Tracker, run_id: str | None) -> Report:
    """The end of a run (harness.runner's ``finish`` hook): write the report and attach it to the
    experiment's MLflow run."""
    report = write_report(run_dir, config)
    log_report(report, tracker, run_id)
    return report


def log_report(report: Report, tracker: Tracker, run_id: str | None) -> None:
    """Attach the report files and figures to an MLflow run and log the finished methods' final
    metrics there (no-op when untracked). An unfinished method's numbers are never logged as final."""
    for path in (report.markdown, report.html, report.latex):
        tracker.log_artifact(run_id, path)
    tracker.log_artifact(run_id, report.markdown.parent / "report", "report")
    if report.final_metrics:
        tracker.log_metrics(run_id, report.final_metrics, 0)


def build_report(
    run_dir: Path,
    config: ExperimentConfig,
    rollouts: pd.DataFrame,
    eval_items: pd.DataFrame,
    iterations: pd.DataFrame | None = None,
    groups: pd.DataFrame | None = None,
    search: pd.DataFrame | None = None,
) -> Report:
    """Write report.md, report.html, results.tex and the figures into ``run_dir`` (``groups``: the
    store's groups table, what the trainer built and kept; ``search``: its search_rounds table)."""
    from spogw.harness.config import executor_identity, method_config, optimizer_identity

    simulation = config.simulation()
    simulated = simulation.any  # figures carry the mark whenever any of their rows is simulated
    own = {spec.display_label: executor_identity(config.executor_for(spec)) for spec in config.methods}
    executor = (
        executor_identity(config.executor)
        if set(own.values()) <= {executor_identity(config.executor)}
        else "by method (" + ", ".join(f"{label}: {identity}" for label, identity in own.items()) + ")"
    )
    stats = config.stats
    everything = item_score_frame(eval_items)
    frame = own_executor(everything)
    covered = coverage(config, frame, run_dir)
    marks = covered.marks()
    sections: list[Section] = []
    plotted: list[tuple[str, object]] = []
    latex = ""
    if not frame.empty:
        scores = score_table(frame, resamples=stats.bootstrap_samples)
        baseline = stats.baseline if stats.baseline in set(frame["method"]) else None
        pairs = comparison_pairs(frame["method"].unique(), baseline, stats.comparisons)
        paired = paired_table(frame, pairs, stats.alpha, stats.alternative, resamples=stats.bootstrap_samples)
        declared = bool(stats.comparisons)
        aggregates = aggregate_table(frame, baseline)
        statement = simulation.statement()
        results = markdown_table(scores, paired, executor, statement, baseline, stats.alpha, declared, marks)
        latex = latex_table(scores, paired, executor, statement, baseline, stats.alpha, declared, marks=marks)
        data = _study_data(config, simulated, everything, frame, paired, rollouts, iterations, groups, covered)
        if config.study.kind in STUDIES:
            section, study_figures = STUDIES[config.study.kind](data)
            sections.append(section)
            plotted += study_figures
        sections.append(Section("Results", results + "\n", markdown_html(results)))
        if not paired.empty:
            sections.append(
                table_section(
                    "Paired comparisons" + (" (declared family)" if declared else f" against {baseline}"),
                    paired.assign(method=[f"{m}{marks.get(m, '')}" for m in paired["method"]]),
                    "difference = method - reference, mean over items (item score averaged over seeds) with a 95% "
                    f"BCa CI; p: {paired['test'].iloc[0]} ({stats.alternative}); p_holm: Holm over the "
                    f"{len(paired)} comparisons, alpha {stats.alpha:g}.",
                )
            )
            plan_table = planning_table(frame, pairs, None, stats.alpha, 0.8, stats.alternative)
            plan = planning_markdown(plan_table, stats.alpha, 0.8, None, stats.alternative)
            sections.append(Section("Sample size for the next run", plan, markdown_html(plan)))
        learned = learning_table(frame, stats.alpha, stats.alternative, resamples=stats.bootstrap_samples)
        if not learned.empty:
            sections.append(
                table_section(
                    "Learning: final iteration against iteration 0",
                    learned.assign(method=[f"{m}{marks.get(m, '')}" for m in learned["method"]]),
                    "Each trained method's final generator against its own untrained generator (reference "
                    "METHOD@0, iteration 0), paired by item (item score averaged over seeds) on the same test "
                    f"items: difference with a 95% BCa CI; p: {learned['test'].iloc[0]} ({stats.alternative}); "
                    f"p_holm: Holm over the {len(learned)} trained methods x benchmarks, alpha {stats.alpha:g}.",
                )
            )
        regret = oracle_section(config, frame, eval_items, stats.bootstrap_samples) if simulated else None
        if regret is not None:
            sections.append(regret)
        sections.append(
            table_section(
                "Aggregates over benchmarks (rliable's definitions)",
                aggregate_display(aggregates, baseline, marks),
                "Per-seed benchmark means; mean = the test score (macro average: mean over benchmarks of the "
                "benchmark's mean item score), mean over seeds; 95% stratified bootstrap CIs over seeds; IQM = "
                "interquartile mean, optimality gap = mean shortfall below 1; p_improve = P(method > baseline). "
                "Intervals over seeds need at least 2 seeds: with 1 seed they are n/a, never a zero-width interval.",
            )
        )
        per_iteration = summary_table(frame, final_iterations(frame))
        per_iteration_md = summary_markdown(per_iteration, marks)
        sections.append(Section("Per iteration", per_iteration_md, markdown_html(per_iteration_md)))
        sections += _training_sections(data, config.study.kind, plotted)
        plotted += [
            ("learning_curves", plots.learning_curves(frame, simulated)),
            ("intervals", plots.interval_plot(scores, simulated)),
        ]
        if baseline is not None and "p_improve" in aggregates:
            plotted.append(("probability_of_improvement", plots.improvement_plot(aggregates, baseline, simulated)))
    health = health_table(rollouts, eval_items)
    if not health.empty:
        sections.append(
            table_section(
                "Run health",
                health,
                "How the workflow runs ended, per method: held-out evaluation runs (every transfer executor "
                "included) and training rollouts, by status. infra_error = the executor failed after its retries: "
                "left out of item scores and of training groups, never counted as a score of 0."
                + (SERVED_NOTE if SERVED_GAP in health.columns else ""),
            )
        )
    if search is not None and not search.empty:
        from spogw.methods.config import method_kind

        kinds = {spec.display_label: method_kind(method_config(spec)) for spec in config.methods}
        searched, search_figures = search_sections(
            search, rollouts, eval_items, optimizer_identity(config.optimizer), config.optimizer.name == "sim",
            simulated, kinds,
        )  # fmt: skip
        sections += searched
        plotted += search_figures
    figures: list[Path] = []
    for name, figure in plotted:
        figures += plots.save(figure, run_dir / "report", name)
    header = [
        covered.statement(),
        generator_line(run_dir, config),
        *learning_signal_warnings(rollouts, iterations, config.iterations),
    ]
    report = write_files(run_dir, config.name, simulation.statement(), executor, sections, figures, latex, header)
    return Report(report.markdown, report.html, report.latex, report.figures, final_metrics(frame, covered))


def final_metrics(frame: pd.DataFrame, covered: Coverage) -> dict[str, float]:
    """Each finished method's final test score (macro average over benchmarks, mean over seeds), its
    per-benchmark means and its seed count, as MLflow metric names (Report.final_metrics)."""
    from spogw.harness.scores import benchmark_means, final_rows, macro_score

    metrics: dict[str, float] = {}
    final = final_rows(frame)
    for method in covered.finished_methods():
        rows = final[final["method"] == method]
        if rows.empty:
            continue
        metrics[f"final.{method}.test_score"] = macro_score(rows)
        for benchmark, value in benchmark_means(rows).items():
            metrics[f"final.{method}.test_score.{benchmark}"] = float(value)
        metrics[f"final.{method}.seeds"] = float(rows["seed"].nunique())
    return metrics


def generator_line(run_dir: Path, config: ExperimentConfig) -> str:
    """Which generator wrote the workflows: its identity, prompt format and decoding, as recorded
    when it was loaded (harness.run_folder.record_generator), else as configured."""
    from spogw.harness.policy.model import decoding_mode

    recorded = run_dir / "generator.json"
    if recorded.is_file():
        facts = json.loads(recorded.read_text())
        return (
            f"Generator: {facts['identity']} ({facts['decoding']} decoding, {facts['prompt_format']} prompt, "
            f"{facts['backend']} sampling)."
        )
    generator = config.generator
    model = f" {generator.model}" if generator.model else ""
    return f"Generator: {generator.name}{model} ({decoding_mode(generator)} decoding; not loaded by this run yet)."


def _study_data(
    config: ExperimentConfig,
    simulated: bool,
    everything: pd.DataFrame,
    frame: pd.DataFrame,
    paired: pd.DataFrame,
    rollouts: pd.DataFrame,
    iterations: pd.DataFrame | None,
    groups: pd.DataFrame | None,
    covered: Coverage,
) -> StudyData:
    """Everything the study and training sections read, from the store's tables."""
    transfers = everything[everything["transfer"] != ""].reset_index(drop=True)
    if rollouts.empty:
        return StudyData(config, simulated, frame, transfers, paired, covered)
    stds = group_std_frame(groups if groups is not None else pd.DataFrame())
    diversity = diversity_frame(rollouts)
    costs = iteration_costs(rollouts, iterations if iterations is not None else pd.DataFrame())
    return StudyData(
        config,
        simulated,
        frame,
        transfers,
        paired,
        covered,
        stds=stds,
        diversity=diversity,
        diversity_table=diversity_table(diversity, resamples=min(config.stats.bootstrap_samples, 2_000)),
        costs=costs,
        cumulative=cumulative_costs(costs, int(frame["iteration"].max())),
        curation=curation_table(stds) if not stds.empty else pd.DataFrame(),
    )


def _training_sections(data: StudyData, study: str, plotted: list[tuple[str, object]]) -> list[Section]:
    """Group curation, workflow diversity and training cost (what the study section has not shown)."""
    sections = []
    if not data.stds.empty:
        sections.append(
            table_section(
                "Group curation",
                data.curation,
                "Groups per question and iteration before (built) and after the variance filter and sharpening "
                "(kept), rebuilt from the stored rollout scores with the trainer's own functions; std = population "
                "score std within a group (scores in [0, 1], so at most 0.5).",
            )
        )
        if study != "sharpening":
            plotted.append(("group_std", plots.variance_histograms(data.stds, data.simulated)))
    if not data.diversity_table.empty and study != "kl_diversity":
        sections.append(
            table_section(
                "Workflow diversity",
                with_intervals(data.diversity_table, metric_bounds(list(METRICS))),
                "Of the m workflows sampled per training question at each collected iteration: distinct operator "
                "structures, entropy of their distribution (bits), and the per-token entropy estimate (mean -log p "
                "of the sampled tokens); mean over questions with 95% BCa CIs over questions.",
            )
        )
        plotted.append(("diversity", plots.diversity_plot(data.diversity_table, data.simulated)))
    if not data.costs.empty and study != "ablation":
        sections.append(
            table_section(
                "Training cost",
                cost_table(data.costs).round(1),
                "Per run, mean over seeds: executor calls and tokens and generator tokens of the collected "
                "workflows, and wall time of collection and updates (held-out evaluation not counted).",
            )
        )
        plotted.append(
            (
                "cost_executor_calls",
                plots.cost_curves(
                    data.frame, data.cumulative, "executor_calls", COSTS["executor_calls"], data.simulated
                ),
            )
        )
    return sections


def write_files(
    run_dir: Path,
    name: str,
    simulated: str,
    executor: str,
    sections: list[Section],
    figures: list[Path],
    latex: str,
    header: Sequence[str] = (),
) -> Report:
    """report.md, report.html (figures embedded) and results.tex in ``run_dir``, each written
    atomically; ``simulated``: the statement about simulated results ('' when none is; the first
    line under the title); ``header``: lines under the executor banner (the generator, warnings)."""
    banner = f"**{simulated}** (docs/simulator.md) Executor: {executor}." if simulated else f"Executor: {executor}."
    pngs = [f for f in figures if f.suffix == ".png"]
    md = [f"# {name}", "", banner, ""]
    page = [f"<h1>{html.escape(name)}</h1>", f"<p><strong>{html.escape(banner.replace('**', ''))}</strong></p>"]
    for line in header:
        md += [line, ""]
        page.append(f"<p>{html.escape(line.replace('**', ''))}</p>")
    for section in sections:
        md += [f"## {section.title}", "", section.markdown, ""]
        page += [f"<h2>{html.escape(section.title)}</h2>", section.html]
    if pngs:
        md += ["## Figures", ""] + [f"![{f.stem}](report/{f.name}) ([svg](report/{f.stem}.svg))" for f in pngs] + [""]
        page.append("<h2>Figures</h2>")
        for figure in pngs:
            encoded = base64.b64encode(figure.read_bytes()).decode()
            page.append(f'<figure><img alt="{figure.stem}" src="data:image/png;base64,{encoded}"></figure>')
    if not sections:
        md.append("No evaluation rows yet.")
        page.append("<p>No evaluation rows yet.</p>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto} table{border-collapse:collapse} "
        "td,th{padding:2px 8px;border-bottom:1px solid #ddd} img{max-width:100%}"
    )
    head = f"<meta charset='utf-8'><title>{html.escape(name)}</title><style>{style}</style>"
    document = f"<!doctype html><html><head>{head}</head><body>{''.join(page)}</body></html>"
    paths = (run_dir / "report.md", run_dir / "report.html", run_dir / "results.tex")
    for path, text in zip(paths, ("\n".join(md), document, latex), strict=True):
        atomic_write_text(path, text)
    return Report(*paths, figures)
