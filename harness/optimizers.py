"""The optimizer of a workflow search (methods/aflow.py): shown a parent workflow, it proposes one
modification and the child's code.

Two kinds, chosen by the experiment's ``optimizer:`` section (harness/config.py OptimizerConfig):

- `LLMOptimizer`: any executor backend (an OpenAI-compatible model, an in-process model) asked with
  the versioned prompt ``harness/optimizer_templates/optimize.<version>.txt`` (AFlow's content: the
  parent's code and score, the operator descriptions, the modifications tried from this parent with
  their outcomes, a few failure logs), answering ``<modification>..</modification><graph>..</graph>``.
- `SimulatedOptimizer` (``name: sim``), for the CPU testbed, labelled SIMULATED wherever its results
  appear: it reads the parent as a structure of the workflow grammar (harness/workflows/grammar.py)
  and proposes one edit of it: add or remove samples, switch the instruction style or the
  generating operator, add or remove Programmer, ScEnsemble, Review+Revise, Test or Format. Edits
  not yet tried from the parent are drawn with weights exp(``bias`` x the mean score gain the same
  kind of edit brought in earlier rounds), so edits that helped before are tried first. It makes no
  executor call. docs/simulator.md describes it.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from spogw.harness.errors import InputError, ServiceUnavailable
from spogw.harness.workflows import grammar, grammar_parse

if TYPE_CHECKING:
    from spogw.harness.config import OptimizerConfig
    from spogw.harness.executors.base import Executor

TEMPLATE_DIR = Path(__file__).parent / "optimizer_templates"

OPERATOR_DESCRIPTIONS = {
    "Custom": "Custom(input, instruction) -> {'response'}: one executor call with your instruction.",
    "AnswerGenerate": "AnswerGenerate(input) -> {'thought', 'answer'}: reasons step by step, then answers.",
    "CustomCodeGenerate": "CustomCodeGenerate(problem, instruction) -> {'response'}: writes the complete function.",
    "ScEnsemble": "ScEnsemble(solutions, problem) -> {'response'}: the solution most others agree with.",
    "Programmer": "Programmer(problem, analysis) -> {'code', 'output'}: writes and runs a program (math).",
    "Review": "Review(problem, solution) -> {'review_result', 'feedback'}: judges a solution.",
    "Revise": "Revise(problem, solution, feedback) -> {'solution'}: rewrites a solution after a review.",
    "Test": "Test(problem, solution) -> {'result', 'solution'}: runs the public examples, repairs failures (code).",
    "Format": "Format(problem, solution) -> {'response'}: reduces a solution to the final answer alone.",
}
"""What the optimizer is told about each operator (harness/workflows/operators.py has the code)."""

OPERATORS_BY_DOMAIN = {
    "math": ("Custom", "AnswerGenerate", "Programmer", "ScEnsemble", "Review", "Revise", "Format"),
    "code": ("CustomCodeGenerate", "Custom", "ScEnsemble", "Test", "Review", "Revise"),
    "qa": ("AnswerGenerate", "Custom", "ScEnsemble", "Review", "Revise", "Format"),
}
"""The operators shown for a domain (the grammar's, harness/workflows/grammar.py: Programmer for math,
Test for code, no Format for code)."""


@dataclass(frozen=True)
class Tried:
    """A modification already proposed from the parent, and what became of it."""

    modification: str
    outcome: str
    """'score 0.62 (parent 0.55)', 'invalid: <reason>' or 'duplicate: <reason>'."""


@dataclass(frozen=True)
class ProposalRequest:
    """What the optimizer is shown for one proposal."""

    benchmark: str
    domain: str
    round: int
    attempt: int
    seed: int
    parent_round: int
    parent_code: str
    parent_score: float
    tried: tuple[Tried, ...]
    """Every modification proposed from this parent so far, with its outcome."""
    gains: tuple[tuple[str, float], ...]
    """(modification, child score - parent score) of every evaluated child so far, any parent."""
    failures: tuple[dict[str, str], ...]
    """A few of the parent's failed search items: item, question, answer, expected."""
    split: str = "validation"
    """The split the scores are measured on (the prompt names it)."""


@dataclass(frozen=True)
class Proposal:
    modification: str
    code: str
    """The child's source ('' when the optimizer's reply had none: recorded as invalid)."""
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Optimizer(Protocol):
    name: str
    simulated: bool

    def describe(self) -> str:
        """Identity for logs, tags and the report (never a secret); a resumed search must give the same."""
        ...

    async def propose(self, request: ProposalRequest) -> Proposal: ...

    async def close(self) -> None: ...


class NoEditLeft(InputError):
    """The SIMULATED optimizer has no untried edit of the parent (the grammar is finite)."""


class OptimizerUnavailable(ServiceUnavailable):
    """An LLM optimizer's backend failed after its retries: the run stops (exit 3) and resumes."""


def proposal_draw(request: ProposalRequest) -> int:
    """Which independent draw of the optimizer a proposal is (its CallInfo.repeat): distinct for
    every (seed, round, attempt), the same on a resume."""
    return (request.seed * 10_000 + request.round) * 1_000 + request.attempt


# -- the SIMULATED optimizer ----------------------------------------------------------------------


def _edit(parent: grammar.Structure, **changes: object) -> grammar.Structure:
    return dataclasses.replace(parent, **changes)  # type: ignore[arg-type]


def structure_edits(parent: grammar.Structure) -> list[tuple[str, str, grammar.Structure]]:
    """Every single edit of ``parent`` that gives another structure of the grammar, as (kind,
    modification text, child), in a fixed order. ``kind`` groups edits for the bias ('style:cot',
    'samples:+', '+Programmer', ...)."""
    domain = parent.domain
    edits: list[tuple[str, str, grammar.Structure]] = []
    for style in grammar.STYLES_BY_DOMAIN[domain]:
        if style != parent.style:
            edits.append((f"style:{style}", f"Switch the instruction style to {style}.", _edit(parent, style=style)))
    for generator in grammar.GENERATORS_BY_DOMAIN[domain]:
        if generator != parent.generator:
            style = "cot" if generator == "AnswerGenerate" else parent.style
            edits.append(
                (f"generator:{generator}", f"Generate with {generator} instead of {parent.generator}.",
                 _edit(parent, generator=generator, style=style))
            )  # fmt: skip
    ladder = (1, 3, 5)
    position = ladder.index(parent.samples) if parent.samples in ladder else 0
    if position + 1 < len(ladder):
        more = ladder[position + 1]
        edits.append(
            ("samples:+", f"Sample {more} answers and select with ScEnsemble.",
             _edit(parent, samples=more, ensemble=True))
        )  # fmt: skip
    if position > 0:
        fewer = ladder[position - 1]
        ensemble = parent.ensemble and fewer + parent.programmer >= 2
        edits.append(("samples:-", f"Sample {fewer} answer(s) instead of {parent.samples}.",
                      _edit(parent, samples=fewer, ensemble=ensemble)))  # fmt: skip
    toggles = (
        ("programmer", "Programmer", "a Programmer that computes the answer"),
        ("ensemble", "ScEnsemble", "ScEnsemble over the answers"),
        ("review", "Review+Revise", "a Review of the answer and a Revise when it fails"),
        ("test", "Test", "a Test of the solution on the public examples"),
        ("format", "Format", "a Format step that keeps the final answer only"),
    )
    for field, name, what in toggles:
        present = bool(getattr(parent, field))
        text = f"Remove {what}." if present else f"Add {what}."
        edits.append((("-" if present else "+") + name, text, _edit(parent, **{field: not present})))
    valid = grammar_parse.structure_set(domain)
    return [(kind, text, child) for kind, text, child in edits if child in valid and child != parent]


@dataclass
class SimulatedOptimizer:
    """A documented stand-in for an optimizer LLM (module docstring). SIMULATED."""

    seed: int = 0
    bias: float = 10.0
    """Weight of an edit kind: exp(bias x its mean score gain so far); a +0.1 gain weighs e = 2.7x."""
    name: str = "sim"
    simulated: bool = True

    def describe(self) -> str:
        return f"sim:optimizer(bias={self.bias:g})"

    def weights(
        self, edits: Sequence[tuple[str, str, grammar.Structure]], gains: dict[str, list[float]]
    ) -> list[float]:
        """Each edit's weight: exp(bias x mean gain of its kind), 1 for a kind never tried."""
        return [math.exp(self.bias * (sum(gains[k]) / len(gains[k]))) if gains.get(k) else 1.0 for k, _, _ in edits]

    async def propose(self, request: ProposalRequest) -> Proposal:
        parent = grammar_parse.parse_structure(request.parent_code, request.domain)
        if parent is None:
            raise InputError(
                f"the SIMULATED optimizer edits structures of the workflow grammar (harness/workflows/grammar.py); "
                f"the workflow of round {request.parent_round} on {request.benchmark} is not one: give "
                "seed_workflow a grammar workflow (io, cot, cot_sc, pot) or an optimizer LLM"
            )
        tried = {t.modification for t in request.tried}
        edits = [e for e in structure_edits(parent) if e[1] not in tried]
        if not edits:
            raise NoEditLeft(f"every edit of {parent.signature()} was tried")
        gains: dict[str, list[float]] = {}
        kinds = {text: kind for kind, text, _ in _all_edit_texts(request.domain)}
        for modification, gain in request.gains:
            if modification in kinds:
                gains.setdefault(kinds[modification], []).append(gain)
        rng = random.Random(f"sim-optimizer:{self.seed}:{request.benchmark}:{request.round}:{request.attempt}")
        _, text, child = rng.choices(edits, weights=self.weights(edits, gains), k=1)[0]
        return Proposal(text, grammar.render(child))

    async def close(self) -> None:
        return None


def _all_edit_texts(domain: str) -> list[tuple[str, str, grammar.Structure]]:
    """Every (kind, text, child) edit of every structure of ``domain`` (the texts name their kind)."""
    return _EDITS.setdefault(domain, [e for s in grammar.all_structures(domain) for e in structure_edits(s)])


_EDITS: dict[str, list[tuple[str, str, grammar.Structure]]] = {}


# -- an LLM optimizer -------------------------------------------------------------------------------


def optimizer_prompt(request: ProposalRequest, version: str) -> str:
    """The prompt of ``optimize.<version>.txt`` filled for ``request``. Raises FileNotFoundError
    for a version without a file."""
    path = TEMPLATE_DIR / f"optimize.{version}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"optimizer prompt template {path} does not exist")
    tried = "\n".join(f"- {t.modification} -> {t.outcome}" for t in request.tried) or "(none yet)"
    failures = "\n\n".join(
        f"Question: {f['question']}\nWorkflow's answer: {f['answer']}\nExpected: {f['expected']}"
        for f in request.failures
    )
    shown = OPERATORS_BY_DOMAIN.get(request.domain, tuple(OPERATOR_DESCRIPTIONS))
    operators = "\n".join(f"- {OPERATOR_DESCRIPTIONS[name]}" for name in shown)
    fields = {
        "split": request.split,
        "domain": request.domain,
        "operators": operators,
        "score": f"{request.parent_score:.3f}",
        "graph": request.parent_code.strip(),
        "tried": tried,
        "failures": failures or "(no failed item)",
    }
    return re.sub(r"\{(\w+)\}", lambda m: fields.get(m.group(1), m.group(0)), path.read_text())


def parse_reply(text: str) -> tuple[str, str]:
    """(modification, code) from ``<modification>..</modification>`` and ``<graph>..</graph>``
    (a fenced code block inside the graph is unwrapped); '' for a missing part."""
    modification = re.search(r"<modification>(.*?)</modification>", text, re.S)
    graph = re.search(r"<graph>(.*?)</graph>", text, re.S)
    code = graph.group(1).strip() if graph else ""
    fenced = re.fullmatch(r"```(?:python)?\n(.*?)\n```", code, re.S)
    if fenced:
        code = fenced.group(1)
    return (modification.group(1).strip() if modification else ""), code


@dataclass
class LLMOptimizer:
    """An executor backend asked for each modification with the versioned optimizer prompt."""

    executor: Executor
    version: str = "v1"
    name: str = "llm"
    simulated: bool = False

    def describe(self) -> str:
        return f"{self.executor.describe()} prompt optimize.{self.version}"

    async def propose(self, request: ProposalRequest) -> Proposal:
        """Raises OptimizerUnavailable when the backend fails after its retries."""
        from spogw.harness.benchmarks.base import Item
        from spogw.harness.executors.base import CallInfo, InfraError

        prompt = optimizer_prompt(request, self.version)
        item = Item(f"search:{request.benchmark}:{request.round}:{request.attempt}", request.domain, "", "")
        # the response cache keys on the prompt and the draw (repeat): one draw per (seed, round, attempt), so
        # seeds are independent samples of the optimizer, and a resumed search gets the reply it had
        draw = proposal_draw(request)
        try:
            completion = await self.executor.complete(prompt, CallInfo("Optimizer", item, draw))
        except InfraError as err:
            raise OptimizerUnavailable(
                f"the optimizer {self.describe()} failed (round {request.round} on {request.benchmark}): {err}; "
                "the search resumes at this proposal when the run is started again"
            ) from None
        modification, code = parse_reply(completion.text)
        return Proposal(modification, code, 1, completion.prompt_tokens, completion.completion_tokens)

    async def close(self) -> None:
        await self.executor.close()


def optimizer_from_config(config: OptimizerConfig, seed: int) -> Optimizer:
    """The optimizer an experiment's ``optimizer:`` section describes."""
    if config.name == "sim":
        return SimulatedOptimizer(seed=seed, bias=config.bias)
    from spogw.harness.executors import executor_from_config

    return LLMOptimizer(executor_from_config(config.as_executor(), seed), config.prompt_version)
