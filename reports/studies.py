"""The study sections of a report: the paper's open questions and the component ablation.

Longer than 400 lines because it holds the five study sections side by side (one function each,
sharing the StudyData record), so that their wording and tests stay parallel.

Each section states the question, the design (read from the experiment file), the numbers, the
test and a one-sentence answer with its uncertainty, written from the numbers (never by hand):

- ``transfer`` (Q1): generators optimized with one executor, evaluated unchanged with others; the
  matrix of scores and of differences against the generator optimized with the evaluating executor.
- ``sharpening`` (Q2): generator temperature x sharpening t; test score, the fraction of groups
  curation removes and the within-group std; sharpening's paired effect at each temperature.
- ``kl_diversity`` (Q3): KL modes compared on workflow diversity over iterations and on test score.
- ``ablation``: full SPOGW against each component removed; paired effects and training cost.

Every paired test belongs to a family declared in the experiment file (stats.comparisons, or every
method against stats.baseline) and is Holm-corrected within it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from spogw.reports import plots
from spogw.reports.comparison import comparison_pairs, final_rows, paired_differences, with_holm
from spogw.reports.costs import COSTS
from spogw.reports.coverage import Coverage, coverage
from spogw.reports.diversity import METRICS
from spogw.reports.sections import Section, metric_bounds, pipe_table, text_section, with_intervals
from spogw.reports.stats import mean_ci, two_level_bootstrap_ci

if TYPE_CHECKING:
    from spogw.harness.config import ExperimentConfig

Figure = tuple[str, Any]


@dataclass(frozen=True)
class StudyData:
    """What the study sections read: per-item test scores, the declared family's paired tests, and
    the curation, diversity and cost frames rebuilt from the rollouts."""

    config: ExperimentConfig
    simulated: bool
    frame: pd.DataFrame
    """Item scores by each method's own executor (reports.summary.item_score_frame, transfer '')."""
    transfers: pd.DataFrame
    """Item scores by evaluation.transfer executors (the same frame's other rows)."""
    paired: pd.DataFrame
    """The declared family of paired tests on the final test score (reports.comparison.paired_table)."""
    coverage: Coverage | None = None
    """Which declared arms and seeds have scores (None: read from ``frame``, no run folder)."""
    stds: pd.DataFrame = field(default_factory=pd.DataFrame)
    diversity: pd.DataFrame = field(default_factory=pd.DataFrame)
    diversity_table: pd.DataFrame = field(default_factory=pd.DataFrame)
    costs: pd.DataFrame = field(default_factory=pd.DataFrame)
    cumulative: pd.DataFrame = field(default_factory=pd.DataFrame)
    curation: pd.DataFrame = field(default_factory=pd.DataFrame)


def difference_text(row: Any) -> str:
    """'+0.012 [-0.030, +0.054], p_holm 0.41' for a row of a paired table."""
    return f"{row.difference:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}], p_holm {row.p_holm:.3g}"


def design_table(config: ExperimentConfig) -> pd.DataFrame:
    """Per method label: what it is (method, executor, sampling temperature and the config fields
    that define the arms of the studies)."""
    from spogw.harness.config import executor_identity, method_config
    from spogw.methods.config import GRPOConfig, PairConfig

    rows = []
    for spec in config.methods:
        method = method_config(spec)
        row: dict[str, Any] = dict.fromkeys(DESIGN_COLUMNS, "") | {
            "label": spec.display_label,
            "method": spec.name,
            "executor": executor_identity(config.executor_for(spec)),
            "temperature": config.sampling_for(spec).temperature,
        }
        if isinstance(method, GRPOConfig):
            groups = (
                f"C({method.num_samples},{method.group_size})" if method.combinations else f"1 of {method.num_samples}"
            )
            row |= {
                "groups": groups,
                "min_group_std": method.min_group_std,
                "sharpen_t": method.sharpen_t,
                "kl": method.kl,
                "beta": method.beta,
                "schedule": method.schedule,
            }
        elif isinstance(method, PairConfig):
            row |= {"groups": f"pairs: {method.pairs}", "kl": method.loss, "beta": method.beta, "schedule": "offline"}
        elif hasattr(method, "workflow"):
            row |= {"groups": f"static: {method.workflow}"}
        else:  # a search (methods/aflow.py)
            row |= {"groups": f"search: {method.rounds} rounds from {method.seed_workflow}", "schedule": "search"}
        rows.append(row)
    return pd.DataFrame(rows, columns=list(DESIGN_COLUMNS))


DESIGN_COLUMNS = (
    "label",
    "method",
    "executor",
    "temperature",
    "groups",
    "min_group_std",
    "sharpen_t",
    "kl",
    "beta",
    "schedule",
)


def covered(data: StudyData) -> Coverage:
    """The declared arms x seeds and which have scores (a partial run lists only those)."""
    return data.coverage if data.coverage is not None else coverage(data.config, data.frame)


def _head(data: StudyData, design: str, extra_design: str = "") -> list[str]:
    study = data.config.study
    lines = []
    if study.question:
        lines += [f"Question: {study.question}", ""]
    lines += [f"Design: {design}", ""]
    design_rows = design_table(data.config)
    lines += [pipe_table(design_rows[design_rows["label"].isin(covered(data).methods_with_scores())]), ""]
    if missing := covered(data).missing():
        lines += [missing, ""]
    if extra_design:
        lines += [extra_design, ""]
    return lines


def _test_sentence(data: StudyData, family: str | None = None) -> str:
    stats = data.config.stats
    if family is None:
        family = "stats.comparisons" if stats.comparisons else f"every method against {stats.baseline}"
    return (
        f"Test: paired by item (item score averaged over seeds), mean difference with a 95% BCa CI; "
        f"paired permutation test (McNemar's exact test for binary scores), {stats.alternative}; Holm over "
        f"the declared family ({family}) at alpha {stats.alpha:g}."
    )


def _paired_lines(paired: pd.DataFrame, what: str = "benchmark") -> list[str]:
    """A paired table as markdown (``what`` names its first column: benchmark, or metric)."""
    if paired.empty:
        return ["(no paired comparisons: declare stats.comparisons or stats.baseline)", ""]
    lines = [
        f"| {what} | method | reference | difference [95% CI] | p | p_holm | items |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in paired.itertuples():
        mark = " \u2020" if row.significant else ""
        lines.append(
            f"| {row.benchmark} | {row.method} | {row.reference} | {row.difference:+.3f} "
            f"[{row.ci_low:+.3f}, {row.ci_high:+.3f}]{mark} | {row.p_value:.3g} | {row.p_holm:.3g} | {row.items} |"
        )
    return [*lines, ""]


# ----------------------------------------------------------------------------------------------
# Q1: executor transfer


def transfer_frame(data: StudyData) -> pd.DataFrame:
    """Final item scores with ``trained_with`` (the method's own executor, 'static' for static
    workflows) and ``evaluated_with`` (the executor that ran them) as executor identities."""
    from spogw.harness.config import executor_identity, method_config
    from spogw.methods.static import StaticConfig

    config = data.config
    own = {s.display_label: executor_identity(config.executor_for(s)) for s in config.methods}
    static = {s.display_label for s in config.methods if isinstance(method_config(s), StaticConfig)}
    named = {name: executor_identity(executor) for name, executor in config.transfer_executors().items()}
    native = final_rows(data.frame)
    frame = pd.concat([native, data.transfers], ignore_index=True)
    frame = frame[frame["method"].isin(own)]
    frame = frame.assign(
        evaluated_with=[
            own[m] if t == "" else named[t] for m, t in zip(frame["method"], frame["transfer"], strict=True)
        ],
        trained_with=[("static" if m in static else own[m]) for m in frame["method"]],
    )
    return frame


def _cell_scores(part: pd.DataFrame, resamples: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """method x executor matrices of the mean score and of its two-level CI as text."""
    means: dict[tuple[str, str], float] = {}
    texts: dict[tuple[str, str], str] = {}
    for (method, executor), cell in part.groupby(["method", "evaluated_with"], sort=True):
        matrix = cell.pivot_table(index="seed", columns="item_id", values="score", aggfunc="mean").dropna(axis=1)
        ci = two_level_bootstrap_ci(matrix.to_numpy(), resamples=resamples)
        means[(method, executor)] = ci.mean
        texts[(method, executor)] = f"{ci.mean:.3f} [{ci.low:.3f}, {ci.high:.3f}]"
    return pd.Series(means).unstack(), pd.Series(texts).unstack().fillna("-")


def transfer_differences(frame: pd.DataFrame, config: ExperimentConfig) -> pd.DataFrame:
    """For every evaluating executor B and trained method A not optimized with B: A's score on B
    minus the score on B of the method optimized with B (the diagonal), paired by item; Holm over
    all cells x benchmarks. Static workflows are compared too (an unoptimized reference)."""
    stats = config.stats
    diagonal = (
        frame[frame["trained_with"] == frame["evaluated_with"]].groupby("evaluated_with")["method"].first().to_dict()
    )
    rows = []
    for (benchmark, executor), part in frame.groupby(["benchmark", "evaluated_with"], sort=True):
        reference = diagonal.get(executor)
        if reference is None:
            continue
        per_item = part.groupby(["method", "item_id"])["score"].mean().unstack("item_id")
        pairs = [(str(m), reference) for m in per_item.index if m != reference]
        for row in paired_differences(per_item, pairs, stats.alternative, stats.bootstrap_samples, 0):
            trained = part.loc[part["method"] == row["method"], "trained_with"].iloc[0]
            rows.append({"benchmark": benchmark, "evaluated_with": executor, "trained_with": trained, **row})
    return with_holm(pd.DataFrame(rows), stats.alpha, stats.alternative)


def transfer_section(data: StudyData) -> tuple[Section, list[Figure]]:
    config = data.config
    frame = transfer_frame(data)
    resamples = config.stats.bootstrap_samples
    evaluators = sorted(frame["evaluated_with"].unique())
    lines = _head(
        data,
        f"each trained method's final generator samples one workflow per test item; the same workflows run "
        f"unchanged with every executor ({', '.join(evaluators)}), {config.evaluation.repeats} repeats each, "
        f"seeds {covered(data).seeds_with_scores()}.",
    )
    figures: list[Figure] = []
    for benchmark, part in frame.groupby("benchmark", sort=True):
        means, texts = _cell_scores(part, resamples)
        lines += [
            f"### {benchmark}: test score (rows: method, columns: evaluated with; 95% CI over seeds and items)",
            "",
        ]
        lines += [pipe_table(texts.reset_index(names="method")), ""]
        figures.append(
            (f"transfer_{benchmark}", plots.transfer_heatmap(means, f"{benchmark}: test score", data.simulated))
        )
    differences = transfer_differences(frame, config)
    lines += ["### Difference against the generator optimized with the evaluating executor", ""]
    if differences.empty:
        lines += ["(no cell has a method optimized with its executor to compare against)", ""]
        answer = "Answer: not measurable in this run (no evaluating executor has a generator optimized with it)."
    else:
        shown = differences.rename(columns={"reference": "optimized_for_it"})
        lines += _paired_lines(shown.rename(columns={"optimized_for_it": "reference"}))
        trained = differences[differences["trained_with"] != "static"]
        for benchmark, part in differences.groupby("benchmark", sort=True):
            matrix = part.pivot_table(index="method", columns="evaluated_with", values="difference")
            figures.append(
                (
                    f"transfer_drop_{benchmark}",
                    plots.transfer_heatmap(
                        matrix, f"{benchmark}: minus the generator optimized for the executor", data.simulated, 0.0
                    ),
                )
            )
        answer = _transfer_answer(frame, trained, config)
    family = "every off-diagonal cell against the generator optimized with its evaluating executor, all benchmarks"
    test = _test_sentence(data, family).replace("paired by item", "paired by item within an evaluating executor")
    lines += [test, ""]
    lines += [answer, ""]
    return text_section("Q1: executor transfer", "\n".join(lines)), figures


def _transfer_answer(frame: pd.DataFrame, trained: pd.DataFrame, config: ExperimentConfig) -> str:
    if trained.empty:
        return "Answer: no trained generator was evaluated with an executor it was not optimized for."
    # Per item, the mean over the off-diagonal cells of (transferred - optimized-for-it): items are
    # the resampling unit, so the CI is not inflated by counting an item once per cell.
    diagonal = frame[frame["trained_with"] == frame["evaluated_with"]]
    per_item = frame.groupby(["benchmark", "evaluated_with", "method", "item_id"])["score"].mean()
    reference = diagonal.groupby(["benchmark", "evaluated_with", "item_id"])["score"].mean()
    drops = []
    for row in trained.itertuples():
        own = per_item.loc[(row.benchmark, row.evaluated_with, row.method)]
        best = reference.loc[(row.benchmark, row.evaluated_with)]
        drops.append((own - best).dropna().rename(lambda item, b=row.benchmark: f"{b}/{item}"))
    by_item = pd.concat(drops, axis=1).mean(axis=1).to_numpy()
    ci = mean_ci(by_item, "items", resamples=config.stats.bootstrap_samples)
    significant = int(trained["significant"].sum())
    return (
        f"Answer: evaluated with an executor it was not optimized for, a trained generator scores {ci.mean:+.3f} "
        f"(95% CI [{ci.low:+.3f}, {ci.high:+.3f}] over {ci.n} items) against the generator optimized with that "
        f"executor, averaged over {len(trained)} transfer cells; {significant} of them "
        f"{'differs' if significant == 1 else 'differ'} significantly after Holm (alpha {config.stats.alpha:g})."
    )


# ----------------------------------------------------------------------------------------------
# Q2: sharpening under low score variance


def _arms(data: StudyData) -> pd.DataFrame:
    """The design rows of the GRPO-family methods (the ones with groups to sharpen)."""
    from spogw.harness.config import method_config
    from spogw.methods.config import GRPOConfig

    grouped = [s.display_label for s in data.config.methods if isinstance(method_config(s), GRPOConfig)]
    design = design_table(data.config)
    return design[design["label"].isin(grouped) & design["label"].isin(covered(data).methods_with_scores())]


def sharpening_section(data: StudyData) -> tuple[Section, list[Figure]]:
    config = data.config
    arms = _arms(data)
    lines = _head(
        data,
        "GRPO-family arms that differ in generator temperature (lower temperature: less score variance "
        "within groups) and sharpening t (0: none); test score at the final iteration, and the groups the "
        "curation removed, from every collected iteration's rollouts.",
    )
    from spogw.reports.comparison import score_table

    scores = score_table(data.frame, resamples=config.stats.bootstrap_samples)
    merged = arms[["label", "temperature", "min_group_std", "sharpen_t"]].rename(columns={"label": "method"})
    if not data.curation.empty:
        merged = merged.merge(data.curation, on="method", how="left")
    table = merged.merge(scores[["method", "benchmark", "score", "ci_low", "ci_high"]], on="method", how="left")
    table = with_intervals(
        table.sort_values(["benchmark", "temperature", "sharpen_t"]), {"score": ("ci_low", "ci_high")}
    )
    first = ["method", "temperature", "sharpen_t", "min_group_std", "benchmark", "score"]
    table = table[[*first, *(c for c in table.columns if c not in first)]]
    lines += ["### Arms: test score (95% CI over seeds and items) and group curation", ""]
    lines += [pipe_table(table.round(3)), ""]
    lines += ["### Paired tests (declared family)", "", *_paired_lines(data.paired), _test_sentence(data), ""]
    figures: list[Figure] = []
    if not data.stds.empty:
        figures.append(("group_std", plots.variance_histograms(data.stds, data.simulated)))
    lines += [_sharpening_answer(data, arms), ""]
    return text_section("Q2: sharpening under low score variance", "\n".join(lines)), figures


def _sharpening_answer(data: StudyData, arms: pd.DataFrame) -> str:
    attributes = arms.set_index("label")
    sentences = []
    for row in data.paired.itertuples():
        if row.method not in attributes.index or row.reference not in attributes.index:
            continue
        a, b = attributes.loc[row.method], attributes.loc[row.reference]
        if a["temperature"] != b["temperature"] or a["sharpen_t"] == b["sharpen_t"]:
            continue
        std = ""
        if not data.curation.empty and row.reference in set(data.curation["method"]):
            built = data.curation.set_index("method").loc[row.reference]
            std = (
                f" (mean group std {built['std_built']:.3f}, {built['zero_std_fraction']:.0%} of groups with zero std)"
            )
        text = (
            f"at T={a['temperature']:g}{std}, t={a['sharpen_t']} vs t={b['sharpen_t']} on {row.benchmark}: "
            f"{difference_text(row)}"
        )
        sentences.append((text, bool(row.significant)))
    if not sentences:
        return "Answer: no declared comparison pairs two arms of one temperature that differ only in t."
    helped = sum(significant for _, significant in sentences)
    verdict = f"sharpening's effect is significant after Holm in {helped} of {len(sentences)} comparisons"
    return f"Answer: {verdict}; " + "; ".join(text for text, _ in sentences) + "."


# ----------------------------------------------------------------------------------------------
# Q3: KL mode and workflow diversity


def diversity_comparisons(data: StudyData) -> pd.DataFrame:
    """The declared pairs compared on each diversity metric at the last collected iteration, paired
    by question (metric averaged over seeds); Holm over pairs x metrics."""
    stats = data.config.stats
    if data.diversity.empty:
        return pd.DataFrame()
    last = data.diversity["iteration"].max()
    at_last = data.diversity[data.diversity["iteration"] == last]
    pairs = comparison_pairs(at_last["method"].unique(), stats.baseline, stats.comparisons)
    rows = []
    for metric in METRICS:
        per_question = at_last.groupby(["method", "query_id"])[metric].mean().unstack("query_id")
        for row in paired_differences(per_question, pairs, stats.alternative, stats.bootstrap_samples, 0):
            rows.append({"benchmark": f"{metric} @ iteration {last}", "metric": metric, **row})
    return with_holm(pd.DataFrame(rows), stats.alpha, stats.alternative)


def kl_diversity_section(data: StudyData) -> tuple[Section, list[Figure]]:
    lines = _head(
        data,
        "GRPO arms that differ only in the KL term (kl: masked = mKL, standard, none); workflow diversity of "
        "the m workflows sampled per training question at every collected iteration (distinct operator "
        "structures, entropy of the structure distribution, the policy's per-token entropy), and test score.",
    )
    figures: list[Figure] = []
    diversity = diversity_comparisons(data)
    if not data.diversity_table.empty:
        lines += ["### Diversity by iteration (mean over questions, 95% CI over questions)", ""]
        lines += [pipe_table(with_intervals(data.diversity_table, metric_bounds(list(METRICS)))), ""]
        figures.append(("kl_diversity", plots.diversity_plot(data.diversity_table, data.simulated)))
    lines += ["### Paired tests on diversity (by question, declared pairs, Holm over pairs x metrics)", ""]
    lines += _paired_lines(diversity, "metric")
    lines += ["### Paired tests on the test score (declared family)", "", *_paired_lines(data.paired)]
    lines += [_test_sentence(data), ""]
    sentences = []
    pairs = diversity.groupby(["method", "reference"], sort=False) if not diversity.empty else []
    for (method, reference), rows in pairs:
        named = [(METRICS[r.metric].split(" per ")[0].split(" (")[0], r) for r in rows.itertuples()]
        moved = [f"{name} {difference_text(r)}" for name, r in named if r.significant]
        still = [f"{name} {difference_text(r)}" for name, r in named if not r.significant]
        score = data.paired[(data.paired["method"] == method) & (data.paired["reference"] == reference)]
        text = f"{method} vs {reference}: " + (
            f"differs significantly in {'; '.join(moved)}" if moved else "no diversity metric differs significantly"
        )
        text += f" (not in {'; '.join(still)})" if moved and still else (f" ({'; '.join(still)})" if still else "")
        text += "".join(f"; test score on {r.benchmark} {difference_text(r)}" for r in score.itertuples())
        sentences.append(text)
    answer = (
        f"Answer, at iteration {data.diversity['iteration'].max()}: " + ". ".join(sentences) + "."
        if sentences
        else "Answer: no declared pair has diversity measurements in this run."
    )
    lines += [answer, ""]
    return text_section("Q3: mKL, standard KL and workflow diversity", "\n".join(lines)), figures


# ----------------------------------------------------------------------------------------------
# Component ablation


def ablation_section(data: StudyData) -> tuple[Section, list[Figure]]:
    config = data.config
    baseline = config.stats.baseline
    lines = _head(
        data,
        f"full SPOGW ({baseline}) against SPOGW with one component removed at a time, a pairwise loss trained on "
        "the same kind of curated data (DPO, Score-DPO), and online against offline GRPO; each effect is the "
        "variant's final test score minus the full method's, paired by item.",
    )
    lines += ["### Effects on the test score", "", *_paired_lines(data.paired), _test_sentence(data), ""]
    figures: list[Figure] = []
    if not data.costs.empty:
        from spogw.reports.costs import cost_table

        lines += ["### Training cost per run (mean over seeds)", "", pipe_table(cost_table(data.costs).round(1)), ""]
        for cost in ("executor_calls", "wall_s"):
            if data.cumulative[cost].notna().any():
                figures.append(
                    (
                        f"cost_{cost}",
                        plots.cost_curves(data.frame, data.cumulative, cost, COSTS[cost], data.simulated),
                    )
                )
    significant = data.paired[data.paired["significant"]] if not data.paired.empty else data.paired
    if data.paired.empty:
        answer = "Answer: no paired effects (declare stats.baseline as the full method)."
    else:
        largest = data.paired.iloc[int(np.argmax(np.abs(data.paired["difference"].to_numpy())))]
        listed = "; ".join(f"{r.method} on {r.benchmark} {difference_text(r)}" for r in significant.itertuples())
        answer = (
            f"Answer: {len(significant)} of {len(data.paired)} variant effects are significant after Holm "
            f"(alpha {config.stats.alpha:g})"
            + (f": {listed}" if listed else "")
            + f"; the largest effect is {largest['method']} on {largest['benchmark']} "
            f"{largest['difference']:+.3f} [{largest['ci_low']:+.3f}, {largest['ci_high']:+.3f}]."
        )
    lines += [answer, ""]
    return text_section("Component ablation", "\n".join(lines)), figures


STUDIES: dict[str, Callable[[StudyData], tuple[Section, list[Figure]]]] = {
    "transfer": transfer_section,
    "sharpening": sharpening_section,
    "kl_diversity": kl_diversity_section,
    "ablation": ablation_section,
}
