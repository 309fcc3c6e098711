"""The report's search section (methods/aflow.py): for each search method, seed and benchmark, the
rounds (the tree: each proposal's parent, modification, status and search score), the chosen
workflow and its code, a figure of score by round with the tree's edges, and every method's cost in
executor calls beside the search's (search + optimizer calls against training rollouts)."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import pandas as pd

from spogw.reports.sections import Section, markdown_html, pipe_table


def read_search_rounds(db: Any) -> pd.DataFrame:
    """The search_rounds table without the per-item scores; empty for run folders from before it."""
    from spogw.reports.data import columns_of

    wanted = ["method", "seed", "benchmark", "round", "attempt", "parent", "modification", "code", "structure",
              "status", "reason", "score", "calls", "optimizer_calls"]  # fmt: skip
    if not columns_of(db, "search_rounds"):
        return pd.DataFrame(columns=wanted)
    return pd.read_sql_query(f"SELECT {', '.join(wanted)} FROM search_rounds ORDER BY 1, 2, 3, 4, 5", db)


def chosen_rounds(search: pd.DataFrame) -> pd.DataFrame:
    """Per (method, seed, benchmark): the chosen round (highest search score, the earlier on
    ties: methods/aflow.py best_round) with its score and code."""
    evaluated = search[search["status"] == "evaluated"].sort_values(["score", "round"], ascending=[False, True])
    return evaluated.groupby(["method", "seed", "benchmark"], as_index=False).first()


def cost_table(
    search: pd.DataFrame, rollouts: pd.DataFrame, eval_items: pd.DataFrame, kinds: Mapping[str, str]
) -> pd.DataFrame:
    """Executor calls per method (summed over seeds): finding the workflow (a search's runs on its
    split, a trained method's training rollouts), optimizer calls, the evaluation of the final
    workflows on the test split (own executor, the final iteration), and the other test evaluations
    (a trained method's untrained generator and intermediate iterations), which the comparison does
    not need. ``kinds``: method label -> trained | static | search (methods/config.method_kind)."""
    own = eval_items[eval_items["transfer"] == ""] if "transfer" in eval_items else eval_items
    final = own.groupby(["method", "seed"])["iteration"].transform("max") if len(own) else own.get("iteration")
    rows = []
    for method in sorted(set(kinds) | set(own["method"])):
        searched = search[search["method"] == method]
        trained = rollouts[rollouts["method"] == method] if len(rollouts) else rollouts
        finding = int(searched["calls"].sum()) + (int(trained["executor_calls"].sum()) if len(trained) else 0)
        mine = own["method"] == method
        tested = int(own.loc[mine & (own["iteration"] == final), "calls"].sum())
        earlier = int(own.loc[mine & (own["iteration"] != final), "calls"].sum())
        rows.append(
            {
                "method": method,
                "kind": kinds.get(method, ""),
                "search/training executor calls": finding,
                "optimizer calls": int(searched["optimizer_calls"].sum()),
                "final test evaluation calls": tested,
                "total executor calls": finding + tested,
                "earlier test evaluations (not in total)": earlier,
            }
        )
    return pd.DataFrame(rows)


def search_sections(
    search: pd.DataFrame,
    rollouts: pd.DataFrame,
    eval_items: pd.DataFrame,
    optimizer: str,
    simulated_optimizer: bool,
    simulated: bool,
    kinds: Mapping[str, str],
) -> tuple[list[Section], list[tuple[str, Any]]]:
    """The search section and its figures (none when the run has no search rounds); ``simulated``:
    whether any of the run's numbers are a simulator's (the figures' mark)."""
    if search.empty:
        return [], []
    mark = (
        " SIMULATED optimizer: its proposals are a simulator's, not an LLM's (docs/simulator.md)." * simulated_optimizer
    )
    chosen = chosen_rounds(search)
    parts = [f"Optimizer: {optimizer}.{mark}", ""]
    figures: list[tuple[str, Any]] = []
    for (method, seed, benchmark), rounds in search.groupby(["method", "seed", "benchmark"], sort=True):
        pick = chosen[(chosen["method"] == method) & (chosen["seed"] == seed) & (chosen["benchmark"] == benchmark)]
        best = pick.iloc[0] if len(pick) else None
        shown = rounds.assign(
            score=rounds["score"].round(3),
            modification=rounds["modification"].fillna("").str.slice(0, 80),
            reason=rounds["reason"].fillna("").str.slice(0, 80),
        )[["round", "attempt", "parent", "modification", "structure", "status", "score", "reason", "calls"]]
        parts += [f"### {method} seed {seed}, {benchmark}", ""]
        if best is not None:
            parts += [
                f"Chosen: round {int(best['round'])} (`{best['structure']}`), search score {best['score']:.3f} "
                f"of {int((rounds['status'] == 'evaluated').sum())} workflows evaluated, "
                f"{int((rounds['status'] != 'evaluated').sum())} proposals rejected before any executor call.",
                "",
            ]
        parts += [pipe_table(shown), ""]
        figures.append((f"search_{method}_seed{seed}_{benchmark}", search_plot(rounds, benchmark, simulated)))
    parts += [
        "parent: the round whose workflow was modified (-1: the seed workflow); status: evaluated, duplicate (the "
        "same modification of the same parent, or a workflow evaluated before: never evaluated twice) or invalid "
        "(rejected by validation, or every run failed by the workflow's fault), infra_error (the executor failed "
        "runs after retries) or exhausted (no modification left for the parent): none of these is scored; score: "
        "the search score, mean over the search split's items (validation, or train with split: train) of the mean "
        "over repeats.",
        "",
        "### Cost in executor calls",
        "",
        pipe_table(cost_table(search, rollouts, eval_items, kinds)),
        "",
        "Summed over seeds. Search/training: a search's runs on its split, a trained method's training rollouts; "
        "optimizer calls are the search's LLM optimizer calls (0 for the SIMULATED optimizer); the total adds the "
        "evaluation of each method's final workflows on the test split, which the results table reports.",
    ]
    text = "\n".join(parts) + "\n"
    code = "\n\n".join(
        f"{row.method} seed {row.seed}, {row.benchmark}, round {row.round}:\n\n```python\n{row.code.strip()}\n```"
        for row in chosen.itertuples()
    )
    sections = [
        Section("Search", text, markdown_html(text)),
        Section("Chosen workflows", code + "\n", "<pre>" + html.escape(code) + "</pre>"),
    ]
    return sections, figures


def search_plot(rounds: pd.DataFrame, benchmark: str, simulated: bool) -> Any:
    """Validation score of each evaluated workflow by round, an edge from each to its parent (the
    tree), the best so far as a step line, the chosen workflow starred."""
    from spogw.reports.plots import _pyplot

    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 3.6))
    evaluated = rounds[rounds["status"] == "evaluated"].sort_values("round")
    scores = dict(zip(evaluated["round"], evaluated["score"], strict=True))
    for row in evaluated.itertuples():
        if row.parent in scores:
            axis.plot([row.parent, row.round], [scores[row.parent], row.score], color="0.75", linewidth=0.8, zorder=1)
    axis.scatter(evaluated["round"], evaluated["score"], zorder=2, label="workflow evaluated")
    axis.step(evaluated["round"], evaluated["score"].cummax(), where="post", label="best so far", zorder=2)
    best = evaluated.sort_values(["score", "round"], ascending=[False, True]).iloc[0]
    axis.scatter([best["round"]], [best["score"]], marker="*", s=180, color="C3", zorder=3, label="chosen")
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("round")
    axis.set_ylabel("search score")
    axis.set_title(f"Search on {benchmark}: score by round" + (" (SIMULATED)" if simulated else ""))
    axis.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    return figure
