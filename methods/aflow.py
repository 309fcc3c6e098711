"""AFlow: Monte Carlo tree search over workflow code (Zhang et al., arXiv 2410.10762; reference
implementation FoundationAgents/AFlow, `scripts/optimizer.py` and `optimizer_utils/data_utils.py`).

A search, not a training: per benchmark, round 0 evaluates a seed workflow on the search split
(validation by default), and each later round
1. chooses a parent among the top-k workflows so far (`choose_parent`: AFlow's mix of a uniform
   choice and a softmax over scores in percentage points),
2. asks an *optimizer* (the experiment's ``optimizer:`` section: an LLM, or the SIMULATED optimizer
   on CPU) for one modification of the parent, shown the parent's code, the operator descriptions,
   the modifications already tried from that parent with their outcomes, and a few failure logs,
3. rejects a modification already tried from that parent, or a child whose code was evaluated
   before (`modification_key`, `code_key`), and a child that fails validation (recorded with its
   reason, never scored), and asks again, up to ``max_attempts`` times,
4. evaluates the child on the search split ``validation_repeats`` times and records the round.
It stops after ``rounds`` rounds, or when the mean of the top-k scores has not risen by more than
``min_improvement`` for ``patience`` rounds (`stagnated`; AFlow's convergence check). The best
workflow (`best_round`) is then evaluated on the test split like a static workflow.

The loop is harness/search.py; the optimizers are harness/optimizers.py. The functions here are the
method's choices, pure and checked by hand values in tests/test_search.py.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from spogw.methods.config import Method


class AFlowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    schedule: Literal["search"] = "search"
    """A search over workflows: nothing is trained (`spogw list methods` shows the kind)."""
    seed_workflow: str = "io"
    """The workflow of round 0 (a registered static workflow or a file); AFlow starts from a one-call graph."""
    rounds: int = Field(12, ge=1)
    """Round budget after round 0 (AFlow's max_rounds is 20)."""
    top_k: int = Field(3, ge=1)
    """Parents are chosen among the k best workflows so far (AFlow: `sample`)."""
    uniform_mix: float = Field(0.3, ge=0.0, le=1.0)
    """lambda: weight of the uniform choice in the parent distribution (AFlow: 0.3)."""
    softmax_alpha: float = Field(0.2, ge=0.0)
    """alpha: softmax temperature over scores in percentage points (AFlow: 0.2)."""
    validation_repeats: int = Field(3, ge=1)
    """Executions of each workflow on each search item (AFlow: validation_rounds 5)."""
    patience: int = Field(5, ge=0)
    """Stop when the top-k mean has not risen by more than min_improvement for this many rounds; 0: never."""
    min_improvement: float = Field(0.0, ge=0.0)
    """What counts as a rise of the top-k mean (score units, 0..1)."""
    max_attempts: int = Field(5, ge=1)
    """Proposals asked for in one round before it ends without a child (duplicates and invalid code)."""
    failure_logs: int = Field(3, ge=0)
    """Failed search items of the parent shown to the optimizer (AFlow: 3 log samples)."""
    split: Literal["validation", "train"] = "validation"
    """Which split the search scores on: validation (AFlow's protocol) or train (the questions the
    trained methods learn from, for an experiment without a validation split)."""
    search_limit: int | None = Field(None, gt=0)
    """At most this many items of the search split (the first of its fixed order); None: all."""

    @field_validator("seed_workflow")
    @classmethod
    def _exists(cls, value: str) -> str:
        from spogw.methods.static import known_workflow

        return known_workflow(value)


def selection_probabilities(scores: Sequence[float], uniform_mix: float, alpha: float) -> list[float]:
    """AFlow's parent distribution over candidates with ``scores`` (0..1): lambda / n + (1 - lambda)
    * softmax(alpha * 100 * (s - max s)). Raises ValueError for no candidates."""
    if not scores:
        raise ValueError("no candidate workflow to choose a parent from")
    top = max(scores)
    weights = [math.exp(alpha * 100.0 * (s - top)) for s in scores]
    total = sum(weights)
    return [uniform_mix / len(scores) + (1.0 - uniform_mix) * w / total for w in weights]


def parent_candidates(scores: dict[int, float], top_k: int) -> list[int]:
    """The rounds a parent is chosen among: the ``top_k`` best scored rounds, ties to the earlier
    round (FoundationAgents/AFlow data_utils.get_top_rounds, which also keeps only the top ones: its
    initial round is moved first when it is among them, which does not change the draw)."""
    return sorted(scores, key=lambda r: (-scores[r], r))[:top_k]


def choose_parent(scores: dict[int, float], top_k: int, uniform_mix: float, alpha: float, rng: random.Random) -> int:
    """A parent round drawn from `parent_candidates` with `selection_probabilities`."""
    candidates = parent_candidates(scores, top_k)
    probabilities = selection_probabilities([scores[r] for r in candidates], uniform_mix, alpha)
    return rng.choices(candidates, weights=probabilities, k=1)[0]


def top_k_mean(scores: Sequence[float], top_k: int) -> float:
    """Mean of the ``top_k`` highest scores (all of them when fewer)."""
    best = sorted(scores, reverse=True)[:top_k]
    return sum(best) / len(best) if best else float("nan")


def stagnated(history: Sequence[Sequence[float]], top_k: int, patience: int, min_improvement: float) -> bool:
    """Whether the search stops early: ``history[r]`` holds the scores evaluated up to round r; the
    top-k mean of the last ``patience`` rounds never rose by more than ``min_improvement`` over the
    one before them. False while fewer than ``patience`` + 1 rounds exist, and for patience 0."""
    if patience == 0 or len(history) <= patience:
        return False
    means = [top_k_mean(scores, top_k) for scores in history]
    before = means[-patience - 1]
    return all(mean <= before + min_improvement for mean in means[-patience:])


def modification_key(text: str) -> str:
    """The identity of a modification as the optimizer wrote it: lower case, words only (AFlow
    rejects a modification equal to one already tried from the same parent)."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def code_key(source: str) -> str:
    """The identity of a workflow's code: its AST with docstrings, comments and layout ignored (two
    children with this key equal are the same workflow, evaluated once); the stripped text when it
    does not parse."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source.strip()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str) and len(body) > 1:
                body.pop(0)
    return ast.dump(tree)


def best_round(scores: dict[int, float]) -> int:
    """The chosen workflow: the highest search score, the earlier round on ties. Raises ValueError
    when no round was scored."""
    if not scores:
        raise ValueError("the search scored no workflow")
    return min(scores, key=lambda r: (-scores[r], r))


METHOD = Method(AFlowConfig, "search: AFlow-style tree search over workflow code with an optimizer, on validation")
