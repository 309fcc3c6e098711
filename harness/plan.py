"""What an experiment will run: its benchmarks loaded and split, and the dry-run plan (generator
samples, workflow runs, executor calls and estimated tokens per method x seed) that
`spogw run --dry-run` prints."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from spogw.harness.config import ConfigError, ExecutorConfig, ExperimentConfig, MethodSpec, method_config
from spogw.harness.errors import InputError
from spogw.methods.config import method_kind

if TYPE_CHECKING:
    from spogw.harness.benchmarks.base import Benchmark, Item
    from spogw.harness.policy.prompts import PromptStyle


@dataclass(frozen=True)
class BenchmarkSplit:
    benchmark: Benchmark
    train: Sequence[Item]
    """The questions methods collect on and train with."""
    evaluated: Sequence[Item]
    """The held-out questions of evaluation.split (the test split unless a sweep scores on validation)."""
    validation: Sequence[Item] = ()
    """The validation split (empty when split.validation_fraction is 0): what a search scores on."""

    def search_items(self, method: Any) -> Sequence[Item]:
        """The items a search method (methods/aflow.py) scores its workflows on: its ``split``,
        at most ``search_limit`` of them."""
        items = self.validation if method.split == "validation" else self.train
        return items[: method.search_limit]


def load_splits(config: ExperimentConfig) -> list[BenchmarkSplit]:
    """Every benchmark of the experiment, loaded and split (AFlow protocol: the split's seed)."""
    from spogw.harness.benchmarks import load_from_config

    splits = []
    for index, spec in enumerate(config.benchmarks):
        try:
            benchmark = load_from_config(spec)
        except (InputError, FileNotFoundError, IsADirectoryError) as err:  # the data named; a bug keeps its traceback
            field, value = ("hub", spec.hub) if spec.hub is not None else ("path", spec.path)
            raise ConfigError(f"benchmarks.{index}.{field} = {value!r}: cannot load {spec.name}: {err}") from err
        fractions = (spec.split.test_fraction, spec.split.seed, spec.split.validation_fraction)
        train = list(benchmark.split("train", *fractions))[: spec.train_limit]
        evaluated = list(benchmark.split(config.evaluation.split, *fractions))[: spec.test_limit]
        if not evaluated:
            raise ConfigError(
                f"benchmarks.{index}: {spec.name} has no {config.evaluation.split} items after the split and test_limit"
            )
        validation = list(benchmark.split("validation", *fractions)) if spec.split.validation_fraction > 0 else []
        splits.append(BenchmarkSplit(benchmark, train, evaluated, validation))
    from spogw.harness.search import check_searches

    check_searches(config, splits)
    trained = [spec.display_label for spec in config.methods if method_kind(method_config(spec)) == "trained"]
    if trained and config.iterations > 0 and not any(split.train for split in splits):
        sizes = ", ".join(
            f"benchmarks.{i} {s.benchmark.name}: {len(s.benchmark.items)} items, test_fraction {b.split.test_fraction}"
            + (f", train_limit {b.train_limit}" if b.train_limit is not None else "")
            for i, (s, b) in enumerate(zip(splits, config.benchmarks, strict=True))
        )
        raise ConfigError(
            f"no training questions after the split ({sizes}); the trained methods {trained} would do "
            f"{config.iterations} iterations of nothing. Give a benchmark more items, a smaller "
            "split.test_fraction or a larger train_limit (or iterations: 0 to evaluate the untrained generator)"
        )
    return splits


def grammar_calls_per_run(domain: str) -> float:
    """Mean executor calls per run over the operator grammar's structures of ``domain``: the
    dry-run's estimate for generated workflows (the real number depends on what the policy writes)."""
    from spogw.harness.workflows.grammar import all_structures, render
    from spogw.harness.workflows.structure import calls_per_run

    return statistics.fmean(calls_per_run(render(s)) for s in all_structures(domain))


CHARS_PER_TOKEN = 4
"""Characters per token of the estimates (English text and code under a BPE tokenizer)."""
MEASURED_ITEMS = 2
"""Items per benchmark on which the dry run measures executor tokens per call."""


@dataclass(frozen=True)
class TokenRates:
    """What one domain's workflows cost in tokens: measured by running every operator-grammar
    structure on `MEASURED_ITEMS` items of the benchmark with the SIMULATED executor (its prompts are
    the operators' real prompts, counted at CHARS_PER_TOKEN; its reply lengths are the simulator
    profile's, so a real model's replies, and the prompts that quote them, may be longer)."""

    prompt_per_call: float
    completion_per_call: float
    generator_prompt: float
    """Tokens of the generator's prompt (the experiment's prompt style; `full` stands in for `chat`)."""
    generator_completion: float
    """Tokens of a workflow as the grammar writes it (free code may be longer, up to max_new_tokens)."""


def measure_token_rates(config: ExperimentConfig, splits: Sequence[BenchmarkSplit]) -> dict[str, TokenRates]:
    """`TokenRates` per domain of ``splits`` (a second or two: grammar renderings run in-process)."""
    import asyncio

    from spogw.harness.executors.sim import SimExecutor
    from spogw.harness.policy.prompts import build_prompt
    from spogw.harness.workflows.engine import WorkflowEngine
    from spogw.harness.workflows.grammar import all_structures, render

    style: PromptStyle = "compact" if config.generator.name == "tiny" else "full"
    longest = config.generator.sampling.max_new_tokens

    async def measure() -> dict[str, TokenRates]:
        engine = WorkflowEngine(SimExecutor("medium"), concurrency=8, timeout_s=60, grammar_only_in_process=True)
        rates: dict[str, TokenRates] = {}
        try:
            for split in splits:
                domain = split.benchmark.domain
                if domain in rates:
                    continue
                items = [*split.train, *split.evaluated][:MEASURED_ITEMS]
                sources = [render(structure) for structure in all_structures(domain)]
                outcomes = await asyncio.gather(*(engine.run(src, item, 0) for src in sources for item in items))
                calls = max(1, sum(o.calls for o in outcomes))
                prompts = [
                    build_prompt(domain, item.question, style, config.generator.prompt_version) for item in items
                ]
                rates[domain] = TokenRates(
                    prompt_per_call=sum(o.prompt_tokens for o in outcomes) / calls,
                    completion_per_call=sum(o.completion_tokens for o in outcomes) / calls,
                    generator_prompt=statistics.fmean(len(p) for p in prompts) / CHARS_PER_TOKEN,
                    generator_completion=min(statistics.fmean(len(src) for src in sources) / CHARS_PER_TOKEN, longest),
                )
        finally:
            await engine.close()
        return rates

    return asyncio.run(measure())


@dataclass
class PlannedRun:
    label: str
    method: str
    seed: int
    iterations: int
    generator_samples: int
    workflow_runs: int
    executor_calls: float
    generator_tokens: float = 0.0
    """Prompt + completion tokens of the generator's samples (estimate: TokenRates)."""
    executor_tokens: float = 0.0
    """Prompt + completion tokens of the executor calls (estimate: TokenRates)."""


@dataclass
class Plan:
    experiment: str
    runs: list[PlannedRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    executor_tokens_usd: tuple[float, float] = (0.0, 0.0)
    """USD per million executor prompt and completion tokens (0: not priced)."""

    def describe(self) -> str:
        lines = [f"experiment {self.experiment}: {len(self.runs)} run(s) (method x seed)"]
        width = max((len(r.label) for r in self.runs), default=5)
        lines.append(
            f"  {'method':<{width}}  seed  iters  generator samples  workflow runs  executor calls (estimate)"
            "  generator tokens (estimate)  executor tokens (estimate)"
        )
        for r in self.runs:
            lines.append(
                f"  {r.label:<{width}}  {r.seed:>4}  {r.iterations:>5}  {r.generator_samples:>17,}  "
                f"{r.workflow_runs:>13,}  {r.executor_calls:>25,.0f}  {r.generator_tokens:>27,.0f}"
                f"  {r.executor_tokens:>26,.0f}"
            )
        total_samples = sum(r.generator_samples for r in self.runs)
        total_runs = sum(r.workflow_runs for r in self.runs)
        total_calls = sum(r.executor_calls for r in self.runs)
        lines.append(
            f"  total: {total_samples:,} generator samples, {total_runs:,} workflow runs, "
            f"about {total_calls:,.0f} executor calls, {sum(r.generator_tokens for r in self.runs):,.0f} generator "
            f"tokens and {sum(r.executor_tokens for r in self.runs):,.0f} executor tokens"
        )
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def plan_experiment(
    config: ExperimentConfig, splits: Sequence[BenchmarkSplit], methods: Sequence[MethodSpec], seeds: Sequence[int]
) -> Plan:
    from spogw.harness.workflows.structure import calls_per_run
    from spogw.methods.static import StaticConfig, workflow_source

    plan = Plan(config.name)
    repeats = config.evaluation.repeats
    test_items = sum(len(s.evaluated) for s in splits)
    generated_calls = {s.benchmark.domain: grammar_calls_per_run(s.benchmark.domain) for s in splits}
    rates = measure_token_rates(config, splits)

    def executor_tokens(domain: str, calls: float) -> float:
        return calls * (rates[domain].prompt_per_call + rates[domain].completion_per_call)

    transfers = config.transfer_executors()
    for spec in methods:
        method = method_config(spec)
        own = config.executor_for(spec)
        evaluators = 1 + sum(executor != own for executor in transfers.values())
        for seed in seeds:
            if isinstance(method, StaticConfig):
                per_run = calls_per_run(workflow_source(method.workflow)[1])
                runs = test_items * repeats * evaluators
                tokens = sum(
                    executor_tokens(s.benchmark.domain, len(s.evaluated) * repeats * evaluators * per_run)
                    for s in splits
                )
                plan.runs.append(
                    PlannedRun(spec.display_label, spec.name, seed, 0, 0, runs, runs * per_run, 0.0, tokens)
                )
                continue
            if method_kind(method) == "search":  # the round budget spent in full (patience may stop it sooner)
                search_runs, search_calls, search_tokens = 0, 0.0, 0.0
                for split in splits:
                    domain = split.benchmark.domain
                    searched = (method.rounds + 1) * len(split.search_items(method)) * method.validation_repeats
                    tested = len(split.evaluated) * repeats * evaluators
                    search_runs += searched + tested
                    search_calls += (searched + tested) * generated_calls[domain]
                    search_tokens += executor_tokens(domain, (searched + tested) * generated_calls[domain])
                plan.runs.append(
                    PlannedRun(spec.display_label, spec.name, seed, 0, 0, search_runs, search_calls, 0.0, search_tokens)
                )
                if config.optimizer.name == "sim" and own.name != "sim":
                    plan.notes.append(
                        f"{spec.display_label} seed {seed}: the search's optimizer is the SIMULATED one "
                        "(optimizer.name: sim) while its executor is an LLM: its proposals are simulated; "
                        "set an optimizer: section"
                    )
                if config.optimizer.name != "sim":
                    plan.notes.append(
                        f"{spec.display_label} seed {seed}: up to {method.rounds * method.max_attempts * len(splits)} "
                        f"optimizer calls ({config.optimizer.model}), not counted above"
                    )
                continue
            evaluations = config.iterations + 1 if config.evaluation.every_iteration else 2
            collections = config.iterations + int(config.evaluation.collect_final)
            samples = runs = 0
            calls = generator_tokens = tokens = 0.0
            for split in splits:
                domain = split.benchmark.domain
                collected = collections * len(split.train) * method.num_samples
                evaluated = (evaluations + evaluators - 1) * len(split.evaluated)
                samples += collected + evaluated
                runs += (collected + evaluated) * repeats
                split_calls = (collected + evaluated) * repeats * generated_calls[domain]
                calls += split_calls
                tokens += executor_tokens(domain, split_calls)
                per_sample = rates[domain].generator_prompt + rates[domain].generator_completion
                generator_tokens += (collected + evaluated) * per_sample
            plan.runs.append(
                PlannedRun(
                    spec.display_label,
                    spec.name,
                    seed,
                    config.iterations,
                    samples,
                    runs,
                    calls,
                    generator_tokens,
                    tokens,
                )
            )
    plan.notes.append(
        "executor calls of generated workflows are estimated with the mean call count of the operator "
        "grammar's structures ("
        + ", ".join(f"{d}: {c:.1f}/run" for d, c in generated_calls.items())
        + "); static workflows are counted from their code"
    )
    plan.notes.append(
        f"tokens at {CHARS_PER_TOKEN} characters per token: executor tokens per call measured by running every "
        f"grammar structure on {MEASURED_ITEMS} items per benchmark with the SIMULATED executor (operators' real "
        "prompts, simulated reply lengths: a real model's may be longer) ("
        + ", ".join(f"{d}: {r.prompt_per_call:.0f} + {r.completion_per_call:.0f}/call" for d, r in rates.items())
        + "); generator tokens are the prompt plus a grammar-sized workflow ("
        + ", ".join(f"{d}: {r.generator_prompt:.0f} + {r.generator_completion:.0f}" for d, r in rates.items())
        + f"), at most {config.generator.sampling.max_new_tokens} completion tokens a sample"
    )
    executor = config.executor
    if executor.name == "sim":
        plan.notes.append("executor sim: SIMULATED, no API cost")
    elif executor.input_price_per_mtok or executor.output_price_per_mtok:
        plan.executor_tokens_usd = (executor.input_price_per_mtok, executor.output_price_per_mtok)
        prompt_share = {
            d: r.prompt_per_call / max(r.prompt_per_call + r.completion_per_call, 1e-9) for d, r in rates.items()
        }
        share = statistics.fmean(prompt_share.values()) if prompt_share else 1.0
        total = sum(r.executor_tokens for r in plan.runs)
        usd = total * (share * executor.input_price_per_mtok + (1 - share) * executor.output_price_per_mtok) / 1e6
        plan.notes.append(
            f"executor {executor.model}: about ${usd:,.0f} at ${executor.input_price_per_mtok}/M prompt and "
            f"${executor.output_price_per_mtok}/M completion tokens (from the token estimate; the response cache "
            "makes a re-run free)"
        )
    return plan


def select_methods(config: ExperimentConfig, labels: Sequence[str] | None) -> list[MethodSpec]:
    if not labels:
        return list(config.methods)
    known = {m.display_label: m for m in config.methods}
    unknown = [label for label in labels if label not in known]
    if unknown:
        raise ConfigError(f"--methods {','.join(unknown)}: not a method label of {config.name} ({', '.join(known)})")
    return [known[label] for label in labels]


def select_seeds(config: ExperimentConfig, seeds: Sequence[int] | None) -> list[int]:
    if not seeds:
        return list(config.seeds)
    unknown = [s for s in seeds if s not in config.seeds]
    if unknown:
        raise ConfigError(f"--seeds {unknown}: not seeds of {config.name} ({config.seeds})")
    return list(seeds)


def untrained_twins(config: ExperimentConfig) -> dict[str, tuple[str, ...]]:
    """Trained method label -> the other trained labels with the same executor and sampling."""
    trained = [spec for spec in config.methods if method_kind(method_config(spec)) == "trained"]

    def setting(spec: MethodSpec) -> tuple[ExecutorConfig, Any]:
        return config.executor_for(spec), config.sampling_for(spec)

    return {
        spec.display_label: tuple(
            other.display_label for other in trained if other is not spec and setting(other) == setting(spec)
        )
        for spec in trained
    }


def collection_twins(config: ExperimentConfig) -> dict[str, tuple[str, ...]]:
    """Trained method label -> its untrained twins (`untrained_twins`) whose iteration-0 rollouts are
    its own by construction: both collect iteration 0 whole with the untrained generator (offline
    schedule), and a sample's randomness and its executions depend on its key (seed, iteration,
    question, sample index), never on the method. An online method is nobody's twin here: it
    updates between the batches of its iteration 0."""
    offline = {
        spec.display_label
        for spec in config.methods
        if getattr(method_config(spec), "schedule", "offline") == "offline"
    }
    return {
        label: tuple(twin for twin in twins if twin in offline)
        for label, twins in untrained_twins(config).items()
        if label in offline
    }


def phase_counts(splits: Sequence[BenchmarkSplit], config: ExperimentConfig, phase: str, method: Any = None) -> str:
    """What a phase of a cell works on, for its progress line: 'evaluate' -> '32 items x 3 repeats',
    'collect' -> '40 questions x 8 workflows' (``method``: the trained method's config)."""
    if phase == "evaluate" or phase.startswith("transfer"):
        items = sum(len(split.evaluated) for split in splits)
        return f"{items} items x {config.evaluation.repeats} repeats"
    if phase.startswith("collect") and method is not None:
        questions = sum(len(split.train) for split in splits)
        return f"{questions} questions x {method.num_samples} workflows"
    return ""
