"""Oracle regret of simulated runs: how much of the testbed's headroom each method recovered.

The `sim` executor's items carry the kind of question their text shows (docs/simulator.md,
'Headroom by design'), so the best a question-conditional generator can do is known: the class
oracle, the best grammar structure for each kind. For every benchmark a method ran on the
simulator, this module scores every structure of the grammar on the same held-out items
(harness.executors.sim_oracle), chooses the best single workflow and each kind's best structure on
one half of the items and scores them on the other (two folds), and reports per method:

- its held-out score next to the best static workflow and the class oracle on the same items;
- the fraction of the headroom it recovered, (method - best static) / (class oracle - best static),
  with a 95% percentile bootstrap CI over items (the three scores resampled together, paired);
- the structure it wrote most often for each kind, against the oracle's.

The structure scores are cached in ``$SPOGW_CACHE/oracle/`` (default ~/.cache/spogw) under a hash of
what they depend on (benchmark source, items, profile, repeats, seed, the grammar's code and the
profile's parameters), so rebuilding a report, or another run on the same items, does not re-run
them. Numbers are SIMULATED by construction.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from spogw.harness.atomic import atomic_write_text
from spogw.harness.scores import final_rows

if TYPE_CHECKING:
    from spogw.harness.config import ExperimentConfig
    from spogw.reports.sections import Section

MIN_ITEMS_PER_KIND = 10
"""Fewer test items of some kind and no oracle is computed: each fold would choose among dozens of
structures on four items or fewer, and the regret's CI would span everything."""

ORACLE_SEED = 0
"""Seed of the simulator when it scores the grammar's structures (one seed, the run's repeats)."""


@dataclass(frozen=True)
class Reference:
    """The oracle side of one benchmark: held-out best static and class-oracle score per item."""

    benchmark: str
    domain: str
    profile: str
    per_item: dict[str, tuple[float, float]]
    """Item id -> (best static workflow, class oracle), each chosen on the other fold."""
    kinds: dict[str, str]
    """Item id -> kind."""
    single_choice: str
    class_choice: dict[str, str]


def grammar_signature(code: str | None, domain: str) -> str:
    """The grammar signature of a workflow whose code is a grammar structure's rendering up to
    formatting (what the tiny generator writes), else its operator structure (harness.workflows.structure) marked as
    outside the grammar; '' for no code."""
    from spogw.harness.workflows.structure import structure_or_empty

    if not code:
        return ""
    known = _rendered(domain)
    shape = _shape(code)
    if shape in known:
        return known[shape]
    return f"{structure_or_empty(code) or 'invalid'} (outside the grammar)"


_RENDERED: dict[str, dict[str, str]] = {}


def _shape(code: str) -> str:
    """The code's syntax tree (quotes, spacing and comments do not matter); the text when it does
    not parse."""
    try:
        return ast.dump(ast.parse(code))
    except SyntaxError:
        return code.strip()


def _rendered(domain: str) -> dict[str, str]:
    from spogw.harness.workflows.grammar import all_structures, render

    if domain not in _RENDERED:
        _RENDERED[domain] = {_shape(render(s)): s.signature() for s in all_structures(domain)}
    return _RENDERED[domain]


def sim_benchmarks(config: ExperimentConfig) -> dict[str, str]:
    """Benchmark -> simulator profile, for the benchmarks every method ran on the `sim` executor with
    one profile (empty when no such benchmark: the regret needs one oracle per benchmark)."""
    profiles = {config.executor_for(spec).profile for spec in config.methods if config.executor_for(spec).name == "sim"}
    if len(profiles) != 1 or any(config.executor_for(spec).name != "sim" for spec in config.methods):
        return {}
    profile = next(iter(profiles)) or "medium"
    return {benchmark.name: profile for benchmark in config.benchmarks}


def reference(config: ExperimentConfig, benchmark_name: str, item_ids: list[str], cache_dir: Path) -> Reference | None:
    """The held-out oracle of ``benchmark_name`` on ``item_ids`` (cached in ``cache_dir``); None when
    its items carry no kinds to condition on or a kind has fewer than MIN_ITEMS_PER_KIND items."""
    import asyncio

    from spogw.harness.benchmarks import load_from_config
    from spogw.harness.executors.sim_oracle import StructureScore, choose, held_out_scores, kinds_of, score_structures
    from spogw.harness.executors.sim_profiles import PROFILES
    from spogw.harness.workflows.grammar import all_structures, render

    profile = sim_benchmarks(config)[benchmark_name]
    benchmark_config = next(b for b in config.benchmarks if b.name == benchmark_name)
    benchmark = load_from_config(benchmark_config)
    wanted = set(item_ids)
    items = [item for item in benchmark.items if item.id in wanted]
    if not items or any(item.sim is None or not item.sim.kind for item in items):
        return None
    kinds = {item.id: item.sim.kind for item in items if item.sim is not None}
    if min(Counter(kinds.values()).values()) < MIN_ITEMS_PER_KIND:
        return None
    structures = all_structures(benchmark.domain)
    repeats = config.evaluation.repeats
    grammar = [render(s) for s in structures]
    key = json.dumps(
        [benchmark.source, sorted(wanted), profile, repeats, ORACLE_SEED, repr(PROFILES[profile]), grammar]
    )
    path = cache_dir / f"{benchmark_name}-{profile}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    if path.is_file():
        cached = json.loads(path.read_text())
    else:
        scored = asyncio.run(score_structures(structures, benchmark, items, profile, repeats=repeats, seed=ORACLE_SEED))
        cached = {s.structure.signature(): {"per_item": s.per_item, "tokens": s.tokens_per_run} for s in scored}
        atomic_write_text(path, json.dumps(cached))
    by_signature = {s.signature(): s for s in structures}
    scores = [
        StructureScore(by_signature[sig], float(np.mean(list(v["per_item"].values()))), v["per_item"], v["tokens"])
        for sig, v in cached.items()
    ]
    groups = kinds_of(items)
    return Reference(
        benchmark=benchmark_name,
        domain=benchmark.domain,
        profile=profile,
        per_item=held_out_scores(scores, items),
        kinds=kinds,
        single_choice=choose(scores, list(kinds)).structure.signature(),
        class_choice={kind: choose(scores, ids).structure.signature() for kind, ids in groups.items()},
    )


def regret_table(frame: pd.DataFrame, references: dict[str, Reference], resamples: int = 2_000) -> pd.DataFrame:
    """One row per (method, benchmark): items, score, best_static, class_oracle (means over the
    items the oracle covers; a method's item score is its final-iteration score averaged over
    seeds), recovered and its 95% bootstrap CI (recovered_low, recovered_high; NaN when the oracle
    does not beat the best static workflow on these items)."""
    rows = []
    final = final_rows(frame)
    rng = np.random.default_rng(0)
    for (method, benchmark), part in final.groupby(["method", "benchmark"], sort=True):
        ref = references.get(str(benchmark))
        if ref is None:
            continue
        method_scores = part.groupby("item_id")["score"].mean()
        ids = [i for i in method_scores.index if i in ref.per_item]
        if len(ids) < 2:
            continue
        triple = np.array([[method_scores[i], *ref.per_item[i]] for i in ids])  # (items, 3)
        means = triple.mean(axis=0)
        draws = triple[rng.integers(0, len(ids), size=(resamples, len(ids)))].mean(axis=1)  # (resamples, 3)
        recovered, low, high = math.nan, math.nan, math.nan
        if means[2] - means[1] > 0:
            recovered = float((means[0] - means[1]) / (means[2] - means[1]))
            span = draws[:, 2] - draws[:, 1]
            ratios = np.where(span > 0, (draws[:, 0] - draws[:, 1]) / np.where(span > 0, span, 1.0), np.nan)
            if np.isfinite(ratios).mean() >= 0.95:
                low, high = (float(v) for v in np.nanpercentile(ratios, [2.5, 97.5]))
        rows.append(
            {
                "method": method,
                "benchmark": benchmark,
                "items": len(ids),
                "score": float(means[0]),
                "best_static": float(means[1]),
                "class_oracle": float(means[2]),
                "recovered": recovered,
                "recovered_low": low,
                "recovered_high": high,
            }
        )
    return pd.DataFrame(rows)


def choices_table(eval_items: pd.DataFrame, references: dict[str, Reference]) -> pd.DataFrame:
    """One row per (method, benchmark, kind): the structure the method's final-iteration workflows
    had most often on items of that kind (own executor), its share of those runs, and the oracle's
    structure for the kind."""
    if eval_items.empty:
        return pd.DataFrame()
    own = eval_items[eval_items["transfer"] == ""] if "transfer" in eval_items else eval_items
    rows = []
    for method, part in own.groupby("method", sort=True):
        last = part[part["iteration"] == part["iteration"].max()]
        for benchmark, bench_rows in last.groupby("benchmark", sort=True):
            ref = references.get(str(benchmark))
            if ref is None:
                continue
            kinds = bench_rows["item_id"].map(ref.kinds)
            for kind in sorted(ref.class_choice):
                codes = bench_rows.loc[kinds == kind, "workflow_code"]
                if codes.empty:
                    continue
                counts = Counter(grammar_signature(code, ref.domain) for code in codes)
                top, count = counts.most_common(1)[0]
                rows.append(
                    {
                        "method": method,
                        "benchmark": benchmark,
                        "kind": kind,
                        "most_written": f"`{top}`",
                        "share": count / len(codes),
                        "oracle": f"`{ref.class_choice[kind]}`",
                        "matches": top == ref.class_choice[kind],
                    }
                )
    return pd.DataFrame(rows)


def references_for(config: ExperimentConfig, frame: pd.DataFrame) -> dict[str, Reference]:
    """The oracle of every simulated benchmark with kinds, on the items the run's methods were
    scored on (empty for runs on real executors)."""
    from spogw.harness.policy.tiny import cache_root

    out: dict[str, Reference] = {}
    for benchmark in sim_benchmarks(config):
        ids = sorted(set(frame.loc[frame["benchmark"] == benchmark, "item_id"]))
        if len(ids) < 2 * MIN_ITEMS_PER_KIND:
            continue
        found = reference(config, benchmark, ids, cache_root() / "oracle")
        if found is not None:
            out[benchmark] = found
    return out


def oracle_section(
    config: ExperimentConfig, frame: pd.DataFrame, eval_items: pd.DataFrame, resamples: int
) -> Section | None:
    """The report's 'Oracle regret (SIMULATED)' section, or None for a run with no simulated
    benchmark whose items carry kinds."""
    from spogw.reports.sections import pipe_table, text_section, with_intervals

    references = references_for(config, frame)
    if not references:
        return None
    regret = regret_table(frame, references, resamples)
    choices = choices_table(eval_items, references)
    lines = [
        "SIMULATED: the class oracle is the best grammar structure for each kind of question the text "
        "shows (docs/simulator.md, 'Headroom by design'); it and the best static workflow are chosen on "
        "one half of these items and scored on the other (two folds), by the simulator "
        f"(seed {ORACLE_SEED}, {config.evaluation.repeats} repeats). recovered = (score - best static) / "
        "(class oracle - best static): 0 = no better than one workflow for every question, 1 = the "
        "oracle's choice per kind; 95% percentile bootstrap CI over items.",
        "",
    ]
    if not regret.empty:
        shown = with_intervals(regret, {"recovered": ("recovered_low", "recovered_high")}).round(3)
        lines += [pipe_table(shown), ""]
    for benchmark, ref in sorted(references.items()):
        sizes = Counter(ref.kinds.values())
        kinds = ", ".join(f"{kind} ({sizes[kind]} items): `{sig}`" for kind, sig in sorted(ref.class_choice.items()))
        lines.append(f"{benchmark} ({ref.profile} profile): best static `{ref.single_choice}`; per kind: {kinds}.")
    if not choices.empty:
        lines += ["", "### The structure each method wrote most often per kind (final iteration)", ""]
        lines.append(pipe_table(choices.assign(share=choices["share"].round(2))))
    return text_section("Oracle regret (SIMULATED)", "\n".join(lines) + "\n")
