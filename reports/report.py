"""The run's report: report.md and a self-contained report.html (plots embedded), from the run
folder's store alone, so `spogw report RUN_DIR` can rebuild it at any time (also mid-run).

Sections: the results table (markdown and LaTeX: final scores with two-level CIs, best in bold,
significance against `stats.baseline` after Holm), the paired comparisons, rliable's aggregates,
the per-iteration summary, and the figures (learning curves, intervals, probability of
improvement, workflow diversity; PNG + SVG in <run_dir>/report/).
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from reports import plots
from reports.comparison import aggregate_table, paired_table, score_table
from reports.summary import final_iterations, item_score_frame, summary_markdown, summary_table
from reports.tables import latex_table, markdown_table

if TYPE_CHECKING:
    from harness.config import ExperimentConfig
    from harness.tracking import Tracker


@dataclass(frozen=True)
class Report:
    markdown: Path
    html: Path
    latex: Path
    figures: list[Path]


@dataclass(frozen=True)
class _Section:
    title: str
    markdown: str
    html: str


def _table_section(title: str, table: pd.DataFrame, note: str) -> _Section:
    shown = table.round(4)
    return _Section(
        title,
        _pipe_table(shown) + f"\n\n{note}\n" if not table.empty else f"{note}\n\n(no rows)\n",
        shown.to_html(index=False, border=0, classes="table") + f"<p>{html.escape(note)}</p>",
    )


def write_report(run_dir: Path, config: ExperimentConfig) -> Report:
    """The report of a run folder, read from its store (read-only: the run may still be going)."""
    from reports.data import connect_read_only

    with connect_read_only(run_dir) as db:
        eval_items = pd.read_sql_query("SELECT * FROM eval_items", db)
        rollouts = pd.read_sql_query("SELECT method, seed, iteration, query_id, structure FROM rollouts", db)
    return build_report(run_dir, config, rollouts, eval_items)


def log_report(report: Report, tracker: Tracker, run_id: str | None) -> None:
    """Attach the report files and figures to an MLflow run (no-op when untracked)."""
    for path in (report.markdown, report.html, report.latex):
        tracker.log_artifact(run_id, path)
    tracker.log_artifact(run_id, report.markdown.parent / "report", "report")


def build_report(run_dir: Path, config: ExperimentConfig, rollouts: pd.DataFrame, eval_items: pd.DataFrame) -> Report:
    """Write report.md, report.html, results.tex and the figures into ``run_dir``."""
    simulated = config.executor.name == "sim"
    executor = config.executor.name + (f":{config.executor.profile}" if simulated else f":{config.executor.model}")
    stats = config.stats
    frame = item_score_frame(eval_items)
    sections: list[_Section] = []
    figures: list[Path] = []
    figure_dir = run_dir / "report"
    latex = ""
    if not frame.empty:
        scores = score_table(frame, resamples=stats.bootstrap_samples)
        baseline = stats.baseline if stats.baseline in set(frame["method"]) else None
        paired = (
            paired_table(frame, baseline, stats.alpha, stats.alternative, resamples=stats.bootstrap_samples)
            if baseline is not None
            else pd.DataFrame()
        )
        aggregates = aggregate_table(frame, baseline)
        results = markdown_table(scores, paired, executor, simulated, baseline, stats.alpha)
        latex = latex_table(scores, paired, executor, simulated, baseline, stats.alpha)
        sections.append(_Section("Results", results + "\n", _markdown_table_html(results)))
        if not paired.empty:
            sections.append(
                _table_section(
                    f"Paired comparisons against {baseline}",
                    paired,
                    "difference = method - baseline, mean over items (item score averaged over seeds) with a 95% BCa "
                    f"CI; p: {paired['test'].iloc[0]} ({stats.alternative}); p_holm: Holm over the "
                    f"{len(paired)} comparisons, alpha {stats.alpha:g}.",
                )
            )
        sections.append(
            _table_section(
                "Aggregates over benchmarks (rliable's definitions)",
                aggregates,
                "Per-seed benchmark means; 95% stratified bootstrap CIs over seeds; IQM = interquartile mean, "
                "optimality gap = mean shortfall below 1; p_improve = P(method > baseline).",
            )
        )
        per_iteration = summary_table(frame, final_iterations(frame))
        per_iteration_md = summary_markdown(per_iteration)
        sections.append(_Section("Per iteration", per_iteration_md, _markdown_table_html(per_iteration_md)))
        plotted = [
            ("learning_curves", plots.learning_curves(frame, simulated)),
            ("intervals", plots.interval_plot(scores, simulated)),
        ]
        if baseline is not None and "p_improve" in aggregates:
            plotted.append(("probability_of_improvement", plots.improvement_plot(aggregates, baseline, simulated)))
        if not rollouts.empty:
            plotted.append(("diversity", plots.diversity_plot(rollouts, simulated)))
        for name, figure in plotted:
            figures += plots.save(figure, figure_dir, name)
    return _write(run_dir, config.name, simulated, executor, sections, figures, latex)


def _write(
    run_dir: Path, name: str, simulated: bool, executor: str, sections: list[_Section], figures: list[Path], latex: str
) -> Report:
    banner = (
        "**SIMULATED executor: these are simulator numbers, not LLM results.** (docs/simulator.md)"
        if simulated
        else f"Executor: {executor}."
    )
    pngs = [f for f in figures if f.suffix == ".png"]
    md = [f"# {name}", "", banner, ""]
    page = [f"<h1>{html.escape(name)}</h1>", f"<p><strong>{html.escape(banner.replace('**', ''))}</strong></p>"]
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
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(text)
        os.replace(temporary, path)
    return Report(*paths, figures)


def _pipe_table(table: pd.DataFrame) -> str:
    """A markdown pipe table of a DataFrame (no index)."""
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += [
        "| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |" for row in table.itertuples(index=False)
    ]
    return "\n".join(lines)


def _markdown_table_html(text: str) -> str:
    """Markdown of pipe tables, ### headings and paragraphs as HTML (bold kept, all text escaped)."""
    out: list[str] = []
    table: list[str] = []

    def cell(text: str, tag: str) -> str:
        escaped = html.escape(text.strip())
        if escaped.startswith("**") and "**" in escaped[2:]:
            inner, tail = escaped[2:].split("**", 1)
            escaped = f"<strong>{inner}</strong>{tail}"
        return f"<{tag}>{escaped}</{tag}>"

    def flush() -> None:
        if table:
            rows = [line.strip().strip("|").split("|") for line in table if not set(line) <= set("|-: ")]
            out.append("<table class='table'>")
            for index, row in enumerate(rows):
                out.append("<tr>" + "".join(cell(c, "th" if index == 0 else "td") for c in row) + "</tr>")
            out.append("</table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("### "):
            out.append(f"<h3>{html.escape(line[4:])}</h3>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "".join(out)
