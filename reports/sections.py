"""A report's sections as markdown and HTML together: tables from DataFrames or pipe-table
markdown, paragraphs, and ### headings, with every piece of text HTML-escaped."""

from __future__ import annotations

import html
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Section:
    """One part of report.md and report.html: a title and the same content in both formats."""

    title: str
    markdown: str
    html: str


def table_section(title: str, table: pd.DataFrame, note: str) -> Section:
    shown = table.round(4)
    return Section(
        title,
        pipe_table(shown) + f"\n\n{note}\n" if not table.empty else f"{note}\n\n(no rows)\n",
        shown.to_html(index=False, border=0, classes="table") + f"<p>{html.escape(note)}</p>",
    )


def pipe_table(table: pd.DataFrame) -> str:
    """A markdown pipe table of a DataFrame (no index)."""
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += [
        "| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |" for row in table.itertuples(index=False)
    ]
    return "\n".join(lines)


def markdown_html(text: str) -> str:
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


def text_section(title: str, markdown: str) -> Section:
    """A section written as markdown (pipe tables, ### headings, paragraphs); HTML derived from it."""
    return Section(title, markdown, markdown_html(markdown))


def with_intervals(table: pd.DataFrame, bounds: dict[str, tuple[str, str]], digits: int = 3) -> pd.DataFrame:
    """``table`` with each column of ``bounds`` shown as 'value [low, high]' from its (low, high)
    columns, which are dropped; other columns unchanged."""
    shown = table.copy()
    for column, (lows, highs) in bounds.items():
        if not {column, lows, highs} <= set(shown.columns):
            continue
        shown[column] = [
            "" if pd.isna(v) else f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
            for v, lo, hi in zip(shown[column], shown[lows], shown[highs], strict=True)
        ]
        shown = shown.drop(columns=[lows, highs])
    return shown


def metric_bounds(metrics: list[str]) -> dict[str, tuple[str, str]]:
    """{metric: (metric_low, metric_high)}: the interval columns' names used across the reports."""
    return {metric: (f"{metric}_low", f"{metric}_high") for metric in metrics}
