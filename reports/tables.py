"""Method x benchmark tables for a paper: markdown and LaTeX (booktabs), best per column in bold,
significance against the baseline marked with the Holm-corrected p-value, and a caption that names
the executor and says whether it is simulated."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

SIGNIFICANT = "\u2020"
"""The dagger after a cell: differs from the baseline after Holm (a star would merge with markdown bold)."""


def _cells(scores: pd.DataFrame, paired: pd.DataFrame, bold: tuple[str, str]) -> pd.DataFrame:
    """method x benchmark strings 'mean [low, high]' with the best mean of each column wrapped in
    ``bold`` and SIGNIFICANT appended where the paired test rejects after Holm."""
    significant = set()
    if not paired.empty:
        significant = {(r.method, r.benchmark) for r in paired.itertuples() if r.significant}
    cells = {}
    for benchmark, part in scores.groupby("benchmark", sort=True):
        best = part["score"].max()
        column = {}
        for row in part.itertuples():
            text = f"{row.score:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]"
            if row.score == best:
                text = f"{bold[0]}{text}{bold[1]}"
            if (row.method, benchmark) in significant:
                text += SIGNIFICANT
            column[row.method] = text
        cells[benchmark] = column
    return pd.DataFrame(cells).sort_index().fillna("-")


def caption(
    executor: str, simulated: str, baseline: str | None, alpha: float, declared: bool = False, partial: bool = False
) -> str:
    """The table's caption; ``simulated``: what the reader must be told about simulated rows
    (harness.config.Simulation.statement; '' when none is); ``declared``: the significance marks come
    from the experiment's declared family of comparisons (stats.comparisons) rather than from every
    method against ``baseline``; ``partial``: some method is still in progress."""
    text = (
        "Mean test score at each method's final iteration with a 95% CI covering seeds and items "
        "(two-level bootstrap); best per benchmark in bold."
    )
    if partial:
        text += (
            " A method marked in progress has not finished its planned iterations: its scores are of the "
            "iteration named (k of K), not final."
        )
    if declared:
        text += (
            f" {SIGNIFICANT}: a declared comparison of this method against its reference (stats.comparisons) "
            f"is significant at family-wise alpha = {alpha:g} (paired test by item, Holm-corrected over the "
            "family); the paired comparisons table gives each."
        )
    elif baseline is not None:
        text += (
            f" {SIGNIFICANT}: differs from {baseline} at family-wise alpha = {alpha:g} "
            "(paired test by item, Holm-corrected over all methods and benchmarks)."
        )
    text += f" Executor: {executor}."
    if simulated:
        text += f" {simulated}"
    return text


def markdown_table(
    scores: pd.DataFrame,
    paired: pd.DataFrame,
    executor: str,
    simulated: str,
    baseline: str | None,
    alpha: float,
    declared: bool = False,
    marks: Mapping[str, str] | None = None,
) -> str:
    """``marks``: text after a method's name, e.g. ': in progress (iteration 1 of 3)' (reports.coverage)."""
    cells = _cells(scores, paired, ("**", "**"))
    header = "| method | " + " | ".join(cells.columns) + " |"
    lines = [header, "|---|" + "---|" * len(cells.columns)]
    for method, row in cells.iterrows():
        lines.append(f"| {_label(str(method), baseline, marks)} | " + " | ".join(row) + " |")
    return "\n".join([*lines, "", caption(executor, simulated, baseline, alpha, declared, bool(marks))])


def _label(method: str, baseline: str | None, marks: Mapping[str, str] | None) -> str:
    return f"{method}{' (baseline)' if method == baseline else ''}{(marks or {}).get(method, '')}"


def latex_table(
    scores: pd.DataFrame,
    paired: pd.DataFrame,
    executor: str,
    simulated: str,
    baseline: str | None,
    alpha: float,
    declared: bool = False,
    label: str = "tab:results",
    marks: Mapping[str, str] | None = None,
) -> str:
    """A booktabs table (\\toprule/\\midrule/\\bottomrule; needs \\usepackage{booktabs})."""
    cells = _cells(scores, paired, ("\\textbf{", "}"))
    cells = cells.rename(columns=_latex_escape, index=lambda m: _latex_escape(_label(str(m), baseline, marks)))
    cells = cells.map(lambda text: text.replace(SIGNIFICANT, "$^{\\dagger}$"))
    return str(
        cells.style.to_latex(
            hrules=True,
            caption=_latex_escape(caption(executor, simulated, baseline, alpha, declared, bool(marks))).replace(
                SIGNIFICANT, "$^{\\dagger}$"
            ),
            label=label,
            column_format="l" + "r" * len(cells.columns),
        )
    )


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", "\\textbackslash{}"), ("_", "\\_"), ("%", "\\%"), ("&", "\\&"), ("#", "\\#")):
        text = text.replace(char, escaped)
    return text
