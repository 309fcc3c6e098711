"""The schema of an experiment file and its loading.

Longer than 400 lines because the whole schema is kept in one place: one model per section with
every field documented under it (docs/experiments.md is generated from these docstrings), beside
the loader whose errors name file, field and value.

An experiment file is YAML with a ``version`` field and at most one level of ``include:`` (a path
relative to the including file; the including file's keys win, mappings merge deeply). Command-line
overrides ``--set a.b=value`` apply after the include, values parsed as YAML. Every model forbids
unknown keys: a typo is an error naming the file, the dotted field path and the value, never a
silently ignored setting.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from spogw.harness.errors import InputError

SUPPORTED_VERSIONS = (1,)
_Model = TypeVar("_Model", bound=BaseModel)


def _supported_version(value: int) -> int:
    if value not in SUPPORTED_VERSIONS:
        raise ValueError(f"unsupported version {value}; this harness reads {list(SUPPORTED_VERSIONS)}")
    return value


SchemaVersion = Annotated[int, AfterValidator(_supported_version)]
"""The `version` field of experiment and sweep files."""


class ConfigError(InputError):
    """An experiment file that cannot be used; the message names file, field and value."""


def _registered(kind: str, value: str) -> str:
    """``value`` if it is registered in the ``kind`` registry; else the registry's did-you-mean error."""
    from spogw.harness.catalog import registries

    registry = registries()[kind]
    if value not in registry:
        raise ValueError(registry.unknown_message(value))
    return value


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=False, use_attribute_docstrings=True)


class SplitConfig(StrictModel):
    test_fraction: float = Field(0.8, gt=0.0, lt=1.0)
    """Fraction of the items held out for testing (AFlow protocol: validation:test = 1:4)."""
    seed: int = 0
    """Seed of the deterministic item shuffle that makes the split."""
    validation_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    """Fraction of the items held out of training as a validation split (taken after the test
    items): sweeps choose hyperparameters on it and report the chosen config on test. 0: none."""

    @model_validator(mode="after")
    def _room_to_train(self) -> SplitConfig:
        if self.test_fraction + self.validation_fraction >= 1.0:
            raise ValueError(
                f"test_fraction {self.test_fraction} + validation_fraction {self.validation_fraction} "
                "leave no training items"
            )
        return self


class BenchmarkConfig(StrictModel):
    name: str
    """Registered benchmark name (`spogw list benchmarks`)."""
    path: str | None = None
    """Local data file in the upstream format; None uses the benchmark's bundled or generated data."""
    hub: str | None = None
    """A `datasets` dataset instead of a file: a Hugging Face hub id (e.g. openai/gsm8k; needs
    internet once, then the datasets cache) or a local dataset folder."""
    hub_config: str | None = None
    """The dataset's configuration (e.g. `main` for openai/gsm8k, `distractor` for HotpotQA)."""
    hub_split: str | None = None
    """The dataset split to read (default: the benchmark's usual evaluation split)."""
    size: int | None = Field(None, gt=0)
    """Generated benchmarks: number of items to generate; others: keep the first `size` items."""
    split: SplitConfig = SplitConfig()
    """How the items divide into training and test questions."""
    train_limit: int | None = Field(None, gt=0)
    """Use at most this many training items (the first after the split shuffle)."""
    test_limit: int | None = Field(None, gt=0)
    """Evaluate on at most this many test items."""

    @field_validator("name")
    @classmethod
    def _known_benchmark(cls, value: str) -> str:
        return _registered("benchmarks", value)

    @field_validator("path")
    @classmethod
    def _file_exists(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).expanduser().is_file():
            raise ValueError(f"no such file: {value} (relative paths start at the working directory)")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> BenchmarkConfig:
        if self.path is not None and self.hub is not None:
            raise ValueError("give either path (a file) or hub (a dataset), not both")
        return self


class LoraConfig(StrictModel):
    r: int = Field(8, gt=0)
    """LoRA rank (the paper-like default 8)."""
    alpha: int = Field(16, gt=0)
    """LoRA scaling numerator: the update is (alpha / r) B A."""
    dropout: float = Field(0.01, ge=0.0, lt=1.0)
    """Dropout on the LoRA branch during updates (never while sampling or computing references)."""
    target_modules: list[str] = ["q_proj", "v_proj"]
    """Module names LoRA adapts (Qwen2 names; peft matches them by suffix)."""


class TrainingConfig(StrictModel):
    """How the trainer runs an update step on this machine. None of these changes what a step
    computes (the loss and gradient are equal within 1e-6, tests/test_training.py), only the memory
    and time it takes."""

    micro_batch_sequences: int = Field(0, ge=0)
    """Sequences per forward and backward pass in an update step (gradient accumulation); 0: as many
    as one unit has (a question's unique sequences, or a step's pairs). Lower it when a step runs out
    of memory: peak memory grows with sequences x completion tokens x vocabulary."""
    gradient_checkpointing: bool = False
    """Recompute the transformer's activations in the backward pass instead of keeping them: less
    memory, about a third more compute per step."""
    autocast: Literal["auto", "bf16", "off"] = "auto"
    """bf16 autocast of the training forward: `auto` turns it on on a CUDA GPU and off on the CPU."""
    sharding: Literal["replicate", "fsdp"] = "replicate"
    """How the ranks of a launch (`accelerate launch` / torchrun, docs/gpu.md) hold the base model:
    `replicate`, whole on every rank; `fsdp`, each rank 1/N of the frozen base weights (FSDP2, for
    a model one GPU cannot hold), the LoRA adapter whole on every rank. `fsdp` needs backend
    `vllm_server`: a rank cannot sample alone from a sharded model. One process holds the model
    whole either way (it says so at the start of the cell)."""


class SamplingConfig(StrictModel):
    temperature: float = Field(1.0, ge=0.0)
    """Sampling temperature of the generator (the log-probs the loss uses are at this temperature)."""
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    """Nucleus sampling: draw from the smallest token set holding this probability mass."""
    max_new_tokens: int = Field(512, gt=0)
    """Longest completion; a workflow cut off here is usually invalid."""
    stop: list[str] = ["</graph>"]
    """Strings that end a completion (the prompt asks for the workflow inside <graph> tags)."""


class ServerConfig(StrictModel):
    """How the harness talks to the vLLM server of `generator.backend: vllm_server` (docs/gpu.md)."""

    served_model: str | None = None
    """The base model's name on the server (`vllm serve MODEL --served-model-name NAME`); default:
    generator.model."""
    api_key_env: str | None = None
    """Name of the environment variable holding the server's API key (`vllm serve --api-key`)."""
    adapter_dir: str | None = None
    """Where adapters are written for the server to load; it must read this path (shared storage).
    Default: `served_adapters/` in the run folder."""
    request_timeout_s: float = Field(600.0, gt=0)
    """Wall-clock limit of one completion request."""
    max_retries: int = Field(5, ge=0)
    """Retries (exponential backoff from 1 s) of a request that failed on the connection, timed out or
    got 429/5xx, before the run stops with what it collected kept."""
    max_concurrent_requests: int = Field(64, gt=0)
    """Completion requests in flight at once (vLLM batches them on the GPU)."""


class GeneratorConfig(StrictModel):
    name: str = "tiny"
    """Generator preset (`tiny`, `smol`) or `hf` for any Hugging Face model id / local path."""
    model: str | None = None
    """Model id or path, for `hf` (e.g. Qwen/Qwen2.5-7B-Instruct)."""
    tiny_recipe: Literal["standard", "test"] = "standard"
    """For name `tiny`: `standard` (the CPU default) or `test`, the smaller build the test-suite uses
    to exercise the machinery fast (it is not a learning model)."""
    backend: Literal["hf", "vllm_server"] = "hf"
    """Where workflows are sampled: `hf`, the model in this process; `vllm_server`, vLLM's
    OpenAI-compatible server at `base_url`, each iteration's adapter loaded at run time (docs/gpu.md).
    The trainer keeps its own copy of the model for the update and the old log-probs."""
    base_url: str | None = None
    """Endpoint of the vLLM server for backend `vllm_server`, e.g. http://gpu-node:8000/v1."""
    server: ServerConfig = ServerConfig()
    """Requests to the vLLM server (backend `vllm_server` only)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """auto: bf16 on GPU, fp32 on CPU."""
    decoding: Literal["auto", "free", "grammar"] = "auto"
    """`free`: any token; `grammar`: only workflows of the operator grammar (a token trie per domain,
    applied in sampling and in the trainer's log-probs; hf backend only); `auto`: grammar for the
    `tiny` preset (a million-parameter model cannot keep declarations and calls consistent under
    RL, docs/methods.md), free for real models."""
    prompt: Literal["auto", "chat", "completion"] = "auto"
    """How a pretrained generator reads its instruction: `chat` wraps it in the tokenizer's chat
    template (instruct models), `completion` gives it as plain text (base models); both end on the
    cue `<graph>` so the model starts the workflow at once. `auto`: chat when the tokenizer has a
    chat template. The `tiny` preset has its own compact prompt and takes only `auto`."""
    prompt_version: Literal["v1", "v2"] = "v2"
    """Version of the instruction templates (harness/policy/templates): v2 says which constructs
    are allowed and that the answer must come from an operator; v1 is kept for older runs."""
    lora: LoraConfig = LoraConfig()
    """The LoRA adapter that training updates (the base model stays frozen)."""
    sampling: SamplingConfig = SamplingConfig()
    """How workflows are sampled, in collection and in evaluation."""
    training: TrainingConfig = TrainingConfig()
    """How update steps run (micro-batches, gradient checkpointing, autocast): memory, not results."""

    @field_validator("name")
    @classmethod
    def _known_generator(cls, value: str) -> str:
        return _registered("generators", value)

    @field_validator("backend", mode="before")
    @classmethod
    def _in_process_vllm_removed(cls, value: Any) -> Any:
        if value == "vllm":
            raise ValueError(
                "'vllm' (an engine in this process) was removed: serve the model with `vllm serve MODEL "
                "--enable-lora` and set backend: vllm_server and base_url (docs/gpu.md)"
            )
        return value

    @model_validator(mode="after")
    def _server_fields_need_the_server(self) -> GeneratorConfig:
        if self.backend == "vllm_server" and not self.base_url:
            raise ValueError("backend 'vllm_server' needs base_url (e.g. http://localhost:8000/v1)")
        # compared with the defaults, not with the fields given: a resolved config writes them all
        if self.backend == "hf" and (self.base_url or self.server != ServerConfig()):
            raise ValueError("base_url and server apply to backend 'vllm_server' only; backend is 'hf'")
        if self.training.sharding == "fsdp" and self.backend != "vllm_server":
            raise ValueError(
                "training.sharding 'fsdp' needs backend 'vllm_server' (with base_url): rank 0 cannot sample "
                "alone from a model whose weights are sharded over the ranks (harness/sharding.py)"
            )
        return self

    @model_validator(mode="after")
    def _tiny_has_its_own_prompt(self) -> GeneratorConfig:
        if self.name == "tiny" and (self.prompt != "auto" or self.prompt_version != "v2"):
            raise ValueError("the tiny preset reads a compact prompt: generator.prompt and prompt_version do not apply")
        return self


class ExecutorConfig(StrictModel):
    name: str = "sim"
    """Executor backend (`spogw list executors`)."""
    profile: str | None = "medium"
    """Simulator profile (sim only)."""
    model: str | None = None
    """Model name sent to the endpoint (openai), or the model id / local folder to load in process
    (hf; hf also takes `smol`, the offline SmolLM2-135M-Instruct)."""
    base_url: str | None = None
    """Endpoint of an OpenAI-compatible server (openai executor), e.g. http://localhost:8000/v1."""
    api_key_env: str | None = None
    """Name of the environment variable that holds the API key; the key itself never goes in a file."""
    temperature: float = Field(0.0, ge=0.0)
    """Executor sampling temperature (0: greedy, as in ScoreFlow's evaluation)."""
    max_tokens: int = Field(1024, gt=0)
    """Longest executor reply per call."""
    concurrency: int = Field(4, gt=0)
    """Workflow runs in flight at once (each runs in its own isolated worker process)."""
    max_concurrent_calls: int = Field(16, gt=0)
    """Requests in flight to the endpoint at once (openai); calls beyond wait their turn."""
    call_timeout_s: float = Field(120.0, gt=0)
    """Wall-clock limit of one executor call."""
    max_retries: int = Field(5, ge=0)
    """Retries of a failed executor call (with backoff) before the run is an infra_error."""
    requests_per_minute: float | None = Field(None, gt=0)
    """Requests per minute to the endpoint (openai), for every executor of the process with this
    endpoint and model (None: no limit). Spread evenly: at most one second's worth at once."""
    tokens_per_minute: float | None = Field(None, gt=0)
    """Prompt + max_tokens per minute to the endpoint (openai), counted as OpenAI counts them before
    a request is sent (None: no limit)."""
    rate_limit_file: str | None = None
    """A SQLite file in which the limits are kept, so that every process naming it (several `spogw`
    runs, sweep workers on one machine) shares one budget; None: this process only."""
    abort_after_failures: int = Field(20, ge=0)
    """Calls in a row that fail after all their retries before the run stops with a clear message
    (the endpoint is down; re-running resumes). 0: never stop, record every run as infra_error."""
    cache: bool = True
    """Keep every response on disk (`$SPOGW_CACHE/executor-responses.sqlite`, keyed by endpoint,
    model, messages, sampling parameters, repeat and occurrence): a re-run makes no new calls."""
    input_price_per_mtok: float = Field(0.0, ge=0.0)
    """USD per million prompt tokens, for the cost columns of reports (0: not priced)."""
    output_price_per_mtok: float = Field(0.0, ge=0.0)
    """USD per million completion tokens."""
    device: str | None = None
    """Device of an in-process executor model (hf): cuda, cpu; default: the GPU if there is one."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Dtype of an in-process executor model (hf): auto is bf16 on a GPU, fp32 on a CPU."""
    max_batch: int = Field(8, gt=0)
    """Calls generated together by the in-process executor (hf)."""
    workflow_timeout_s: float = Field(60.0, gt=0)
    """Wall-clock limit of one workflow run, executor calls included."""
    max_calls_per_run: int = Field(32, gt=0)
    """A workflow run that asks for more executor calls than this ends as runtime_error."""
    answer_grounding: Literal["contained", "verbatim"] = "contained"
    """How a run's answer must come from the executor (harness/workflows/grounding.py): `contained`,
    the graded part of the answer appears in an executor reply or in the output of a program the
    executor wrote; `verbatim`, the whole returned answer does. A run whose answer does not, that
    made no executor call, or whose code embeds the question's numbers or words, ends `ungrounded`
    (score 0). There is no setting that turns the check off."""

    @field_validator("name")
    @classmethod
    def _known_executor(cls, value: str) -> str:
        return _registered("executors", value)

    @model_validator(mode="after")
    def _known_profile(self) -> ExecutorConfig:
        if self.name == "sim":
            from spogw.harness.executors.sim_profiles import PROFILES

            if self.profile not in PROFILES:
                raise ValueError(f"unknown sim profile {self.profile!r}; choose one of {', '.join(sorted(PROFILES))}")
        return self

    @model_validator(mode="after")
    def _rate_limits_for_the_endpoint(self) -> ExecutorConfig:
        limited = self.requests_per_minute is not None or self.tokens_per_minute is not None
        if limited and self.name != "openai":
            raise ValueError(f"requests_per_minute and tokens_per_minute limit an endpoint (openai), not {self.name!r}")
        if self.rate_limit_file is not None and not limited:
            raise ValueError("rate_limit_file keeps the rate limits: set requests_per_minute or tokens_per_minute")
        return self


class OptimizerConfig(StrictModel):
    """The optimizer of a search method (methods/aflow.py, harness/optimizers.py)."""

    name: str = "sim"
    """sim: the SIMULATED optimizer (CPU testbed, docs/simulator.md); else an executor backend
    (`spogw list executors`: openai, hf) asked with the optimizer prompt."""
    model: str | None = None
    """Model name sent to the endpoint (openai), or the model id / local folder to load (hf)."""
    base_url: str | None = None
    """Endpoint of an OpenAI-compatible server (openai)."""
    api_key_env: str | None = None
    """Name of the environment variable that holds the API key."""
    temperature: float = Field(1.0, ge=0.0)
    """Optimizer sampling temperature (AFlow samples its optimizer at 1)."""
    max_tokens: int = Field(2048, gt=0)
    """Longest optimizer reply (the whole child workflow)."""
    call_timeout_s: float = Field(300.0, gt=0)
    """Wall-clock limit of one optimizer call."""
    max_retries: int = Field(5, ge=0)
    """Retries of a failed optimizer call (with backoff)."""
    cache: bool = True
    """Keep every reply on disk, like the executor's: a resumed search gets the same proposals."""
    prompt_version: Literal["v1"] = "v1"
    """The optimizer prompt, harness/optimizer_templates/optimize.<version>.txt (recorded with the run)."""
    bias: float = Field(10.0, ge=0.0)
    """SIMULATED optimizer only: weight exp(bias x mean gain) of an edit kind that helped before."""

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        return value if value == "sim" else _registered("executors", value)

    @model_validator(mode="after")
    def _backend_fields(self) -> OptimizerConfig:
        # values, not fields given: a resolved config (config.resolved.yaml) writes every field with its default
        changed = {f for f, info in type(self).model_fields.items() if getattr(self, f) != info.default}
        llm_fields = changed - {"name", "bias"}
        if self.name == "sim" and llm_fields:
            raise ValueError(
                f"{sorted(llm_fields)} configure an LLM optimizer; the SIMULATED optimizer (name: sim) has only bias"
            )
        if self.name != "sim" and "bias" in changed:
            raise ValueError("bias weighs the SIMULATED optimizer's edits (name: sim); an LLM optimizer has none")
        if self.name != "sim":
            self.as_executor()  # the executor backend's own checks (a model, a base_url), named as optimizer fields
        return self

    def as_executor(self) -> ExecutorConfig:
        """The executor config an LLM optimizer calls through (ValueError naming the field)."""
        fields = {"name": self.name, "model": self.model, "base_url": self.base_url, "api_key_env": self.api_key_env,
                  "temperature": self.temperature, "max_tokens": self.max_tokens, "call_timeout_s": self.call_timeout_s,
                  "max_retries": self.max_retries, "cache": self.cache, "profile": None}  # fmt: skip
        return _validated(ExecutorConfig, ExecutorConfig(), fields, "optimizer")


class MethodSpec(StrictModel):
    name: str
    """Registered method (`spogw list methods`)."""
    label: str | None = None
    """Name shown in reports and tracking; defaults to the method name. Labels must be unique."""
    overrides: dict[str, Any] = {}
    """Fields of the method's config to change (an ablation is an override, never a code fork)."""
    executor: dict[str, Any] = {}
    """Fields of the experiment's executor to change for this method, in training and in its own
    evaluation (e.g. {profile: coder}: a generator optimized with another executor, open question 1)."""
    sampling: dict[str, Any] = {}
    """Fields of generator.sampling to change for this method, in collection and evaluation (e.g.
    {temperature: 0.3}: lower score variance within groups, open question 2)."""

    @field_validator("name")
    @classmethod
    def _known_method(cls, value: str) -> str:
        return _registered("methods", value)

    @model_validator(mode="after")
    def _overrides_fit_method(self) -> MethodSpec:
        from spogw.harness.catalog import registries

        entry = registries()["methods"].entry(self.name)
        config_cls = entry.metadata.get("config")
        if self.overrides and config_cls is None:
            raise ValueError(f"method {self.name!r} takes no overrides (it has no trainable config yet)")
        if config_cls is not None:
            entry.load()  # importing the method module defines its config class
            config = _resolve(config_cls).model_validate(self.overrides)
            workflow = getattr(config, "workflow", None)
            if isinstance(workflow, str):  # a static method: its workflow must be one that can run
                _check_static_workflow(workflow)
        return self

    @property
    def display_label(self) -> str:
        return self.label or self.name


def _check_static_workflow(name_or_path: str) -> None:
    """Raise ValueError naming the workflow (registered name or file) unless it reads as text and
    passes the validator `spogw eval` applies, so a broken file never runs as a method scoring 0."""
    from spogw.harness.workflows.validate import WorkflowInvalid, validate_workflow
    from spogw.methods.static import workflow_source

    _, source = workflow_source(name_or_path)
    try:
        validate_workflow(source)
    except WorkflowInvalid as err:
        raise ValueError(f"workflow {name_or_path!r} is not a valid workflow: {err}") from None


class EvaluationConfig(StrictModel):
    repeats: int = Field(3, gt=0)
    """Executions of each (item, workflow); the item score is their mean (ScoreFlow uses 3)."""
    split: Literal["test", "validation", "train"] = "test"
    """Which split the held-out evaluation uses: test; validation (needs benchmarks[].split.validation_fraction;
    what sweeps score trials on); train only for debugging."""
    every_iteration: bool = True
    """Evaluate after every iteration (learning curves); off: only the untrained and the final policy."""
    transfer: dict[str, dict[str, Any]] = {}
    """Other executors that evaluate every method's final workflows unchanged (executor transfer,
    open question 1): name -> fields of the experiment's executor to change, e.g. {weak: {profile:
    weak}}. Their rows carry the name in eval_items.transfer; a method's own executor is never
    evaluated twice."""
    collect_final: bool = False
    """Also sample and execute m workflows per training question with the final policy (one more
    collection per run), so training-score, diversity and curation curves include the trained policy."""

    @field_validator("transfer")
    @classmethod
    def _transfer_names(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise ValueError(f"transfer executor name {name!r}: use letters, digits, '_', '.', '-'")
        return value


class TrackingConfig(StrictModel):
    uri: str | None = None
    """MLflow tracking URI; None means sqlite:///<run_dir>/mlflow.db (or $MLFLOW_TRACKING_URI)."""
    experiment_name: str | None = None
    """MLflow experiment name; None uses the experiment's name."""


class StatsConfig(StrictModel):
    baseline: str | None = None
    """Method label that paired tests compare against."""
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    """Significance level of the paired tests (family-wise, after correction)."""
    alternative: Literal["two-sided", "greater", "less"] = "two-sided"
    """Alternative hypothesis of the paired tests, method versus baseline."""
    bootstrap_samples: int = Field(10_000, gt=99)
    """Resamples of the bootstrap confidence intervals."""
    comparisons: list[tuple[str, str]] = []
    """The family of paired tests, declared before the run: [method, reference] label pairs (the
    difference is method - reference). Empty: every method against `baseline`. Holm's correction
    runs over the whole family (all pairs x benchmarks)."""


class StudyConfig(StrictModel):
    kind: Literal["comparison", "transfer", "sharpening", "kl_diversity", "ablation"] = "comparison"
    """Which question the report answers: `comparison` (methods against the baseline), or one of the
    paper's open questions, each with its own report section (docs/reports.md): `transfer` (Q1, needs
    evaluation.transfer), `sharpening` (Q2), `kl_diversity` (Q3), `ablation` (SPOGW's components)."""
    question: str = ""
    """The question in words, printed at the head of the study's section."""


class ExperimentConfig(StrictModel):
    version: SchemaVersion
    """Schema version of the experiment file."""
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """Experiment name: the default run folder runs/<name> and the MLflow experiment."""
    description: str = ""
    """One line shown by `spogw list experiments`."""
    benchmarks: list[BenchmarkConfig] = Field(min_length=1)
    """Benchmarks to train and evaluate on; a generator trains on the training questions of all of them."""
    generator: GeneratorConfig = GeneratorConfig()
    """The workflow generator (the policy being trained)."""
    executor: ExecutorConfig = ExecutorConfig()
    """The executor LLM that runs the workflows."""
    methods: list[MethodSpec] = Field(min_length=1)
    """Methods to compare; the same method may appear under several labels with different overrides."""
    seeds: list[int] = Field([0, 1, 2], min_length=1)
    """Every method runs once per seed (sampling, LoRA dropout and the simulator follow it)."""
    iterations: int = Field(3, ge=0)
    """Rounds of collect -> train (0: evaluate the untrained generator only)."""
    optimizer: OptimizerConfig = OptimizerConfig()
    """The optimizer of search methods (aflow); unused by the others."""
    evaluation: EvaluationConfig = EvaluationConfig()
    """Held-out evaluation (and the executions per workflow in collection)."""
    tracking: TrackingConfig = TrackingConfig()
    """MLflow tracking."""
    stats: StatsConfig = StatsConfig()
    """Statistics of the report."""
    study: StudyConfig = StudyConfig()
    """The question the report answers (its study section)."""

    @model_validator(mode="after")
    def _unique_labels(self) -> ExperimentConfig:
        labels = [m.display_label for m in self.methods]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ValueError(f"method labels must be unique; repeated: {duplicates}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        if self.stats.baseline is not None and self.stats.baseline not in labels:
            raise ValueError(f"stats.baseline {self.stats.baseline!r} is not a method label {labels}")
        for index, pair in enumerate(self.stats.comparisons):
            unknown = [label for label in pair if label not in labels]
            if unknown or pair[0] == pair[1]:
                raise ValueError(f"stats.comparisons.{index} {list(pair)}: needs two different method labels {labels}")
        for index, spec in enumerate(self.methods):
            where = f"methods.{index}"
            _validated(ExecutorConfig, self.executor, spec.executor, f"{where}.executor")
            _validated(SamplingConfig, self.generator.sampling, spec.sampling, f"{where}.sampling")
        for name, fields in self.evaluation.transfer.items():
            _validated(ExecutorConfig, self.executor, fields, f"evaluation.transfer.{name}")
        if self.evaluation.split == "validation":
            missing = [i for i, b in enumerate(self.benchmarks) if b.split.validation_fraction == 0]
            if missing:
                raise ValueError(
                    f"evaluation.split 'validation' needs benchmarks[].split.validation_fraction > 0"
                    f" (benchmarks {missing})"
                )
        if self.study.kind == "transfer" and not self.evaluation.transfer:
            raise ValueError("study.kind 'transfer' needs evaluation.transfer (the executors to evaluate with)")
        return self

    def executor_for(self, spec: MethodSpec) -> ExecutorConfig:
        """The executor ``spec`` trains and is evaluated with: the experiment's, with its changes."""
        return _validated(ExecutorConfig, self.executor, spec.executor, "executor")

    def sampling_for(self, spec: MethodSpec) -> SamplingConfig:
        """How ``spec``'s generator samples: generator.sampling with the method's changes."""
        return _validated(SamplingConfig, self.generator.sampling, spec.sampling, "sampling")

    def transfer_executors(self) -> dict[str, ExecutorConfig]:
        """evaluation.transfer as complete executor configs, by name."""
        return {
            name: _validated(ExecutorConfig, self.executor, fields, name)
            for name, fields in self.evaluation.transfer.items()
        }

    def simulation(self) -> Simulation:
        """Which of this experiment's results the simulated executor produces."""
        from spogw.methods.config import method_kind

        def simulated(spec: MethodSpec) -> bool:
            searched = self.optimizer.name == "sim" and method_kind(method_config(spec)) == "search"
            return self.executor_for(spec).name == "sim" or searched  # a SIMULATED optimizer chose its workflow

        return Simulation(
            {spec.display_label: simulated(spec) for spec in self.methods},
            {name: executor.name == "sim" for name, executor in self.transfer_executors().items()},
        )


@dataclass(frozen=True)
class Simulation:
    """Which results of an experiment come from the simulated executor: decided once, here, from
    the resolved experiment (the base executor, every method's executor changes, the transfer
    executors), and read by the MLflow tags, the report's banner, its tables and its figures."""

    methods: dict[str, bool]
    """Method label -> whether the executor it trains and is evaluated with is the simulator (or,
    for a search method, whether its optimizer is the SIMULATED one)."""
    transfers: dict[str, bool]
    """evaluation.transfer name -> whether that executor is the simulator."""

    @property
    def simulated(self) -> list[str]:
        """What is simulated: method labels, then 'transfer <name>' entries."""
        return [label for label, sim in self.methods.items() if sim] + [
            f"transfer {name}" for name, sim in self.transfers.items() if sim
        ]

    @property
    def kind(self) -> Literal["all", "none", "mixed"]:
        flags = [*self.methods.values(), *self.transfers.values()]
        return "all" if all(flags) else "none" if not any(flags) else "mixed"

    @property
    def any(self) -> bool:
        return self.kind != "none"

    @property
    def tag(self) -> str:
        """The MLflow tag value: true, false or mixed."""
        return {"all": "true", "none": "false", "mixed": "mixed"}[self.kind]

    def statement(self) -> str:
        """What a reader must be told ('' when nothing is simulated)."""
        if self.kind == "all":
            return "SIMULATED executor: these are simulator numbers, not LLM results."
        if self.kind == "mixed":
            return (
                f"Partly SIMULATED: the results of {', '.join(self.simulated)} come from the simulated executor "
                "(simulator numbers, not LLM results); the others from an LLM."
            )
        return ""


def method_config(spec: MethodSpec) -> Any:
    """The method's config (its class from methods/<name>.py) with the experiment's overrides applied."""
    from spogw.harness.catalog import registries

    return _resolve(registries()["methods"].entry(spec.name).metadata["config"]).model_validate(spec.overrides)


def optimizer_identity(optimizer: OptimizerConfig) -> str:
    """How reports name a search's optimizer: `sim (SIMULATED)` or `<backend>:<model>, prompt optimize.<v>`."""
    if optimizer.name == "sim":
        return f"sim (SIMULATED, bias {optimizer.bias:g})"
    return f"{optimizer.name}:{optimizer.model}, prompt optimize.{optimizer.prompt_version}"


def executor_identity(executor: ExecutorConfig) -> str:
    """How reports name an executor: `sim:<profile>` or `<backend>:<model>`."""
    return f"{executor.name}:{executor.profile if executor.name == 'sim' else executor.model}"


def _validated(model: type[_Model], base: BaseModel, changes: dict[str, Any], where: str) -> _Model:
    """``base`` with the fields in ``changes`` replaced, validated as ``model`` (errors name ``where``)."""
    if not changes:
        return base  # type: ignore[return-value]
    try:
        return model.model_validate(deep_merge(base.model_dump(), changes))
    except ValidationError as err:
        problems = "; ".join(
            (f"{where}.{'.'.join(map(str, e['loc']))} = {_short(e.get('input'))}: " if e["loc"] else f"{where}: ")
            + ("unknown field" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, "))
            for e in err.errors()
        )
        raise ValueError(problems) from None


def _resolve(target: Any) -> Any:
    if isinstance(target, str):
        import importlib

        module_name, _, attr = target.partition(":")
        return getattr(importlib.import_module(module_name), attr)
    return target


# ----------------------------------------------------------------------------------------------
# Loading


class _ExperimentLoader(yaml.SafeLoader):
    """Safe YAML with the rule an experiment file needs: a key written twice in one mapping is an
    error naming the key and both lines (plain YAML keeps the last one silently). Merge keys
    (``<<: *anchor``) may still be overridden by explicit keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line)
            except TypeError:  # an unhashable key: SafeLoader raises its own error below
                continue
            if first != key_node.start_mark.line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {first + 1})", key_node.start_mark
                )
        return super().construct_mapping(node, deep)


def unshared(data: Any) -> Any:
    """A copy of nested mappings and lists in which no node is shared. YAML aliases (``*anchor``)
    load as one object referenced twice; ``copy.deepcopy`` keeps that sharing, so a ``--set`` on
    one method's overrides would change every method that aliases them."""
    if isinstance(data, dict):
        return {key: unshared(value) for key, value in data.items()}
    if isinstance(data, list):
        return [unshared(value) for value in data]
    return copy.deepcopy(data)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    try:
        data = unshared(yaml.load(text, Loader=_ExperimentLoader))  # a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        where = f"line {err.problem_mark.line + 1}: " if err.problem_mark is not None else ""
        context = (
            f" ({err.context} on line {err.context_mark.line + 1})"
            if err.context and err.context_mark is not None
            else ""
        )
        raise ConfigError(f"{path}: not valid YAML: {where}{err.problem or err}{context}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``: mappings merge key by key, anything else is replaced (the
    result shares no node with either, nor within itself)."""
    merged: dict[str, Any] = unshared(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = unshared(value)
    return merged


def load_raw(path: str | Path) -> dict[str, Any]:
    """The experiment file as a dict with its one level of ``include:`` resolved."""
    path = Path(path)
    data = _read_yaml(path)
    include = data.pop("include", None)
    if include is None:
        return data
    if not isinstance(include, str):
        raise ConfigError(f"{path}: include: must be one file path, got {include!r}")
    included_path = (path.parent / include).resolve()
    included = _read_yaml(included_path)
    if "include" in included:
        raise ConfigError(
            f"{included_path}: include: only one level of include is allowed "
            f"(it is included by {path} and includes {included['include']!r})"
        )
    return deep_merge(included, data)


def dotted_fields(data: Any, index_scalar_lists: bool = True, prefix: str = "") -> dict[str, Any]:
    """Nested mappings and lists -> {"a.b.0.c": value}, the paths ``--set`` takes. Lists whose members
    are all mappings are always indexed; other non-empty lists are indexed too, or kept whole (one
    value, e.g. ``seeds: [0, 1]``) when ``index_scalar_lists`` is False."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(dotted_fields(value, index_scalar_lists, f"{prefix}{key}."))
        return out
    indexed = isinstance(data, list) and data and (index_scalar_lists or all(isinstance(m, dict) for m in data))
    if indexed:
        out = {}
        for index, value in enumerate(data):
            out.update(dotted_fields(value, index_scalar_lists, f"{prefix}{index}."))
        return out
    return {prefix.rstrip("."): data}


def apply_overrides(data: dict[str, Any], overrides: list[str], source: str = "--set") -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (value parsed as YAML; list items addressed by index) to a copy
    of ``data`` in which no node is shared: an override changes exactly the field it names."""
    data = unshared(data)
    for override in overrides:
        key, sep, raw_value = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{source} {override!r}: expected dotted.key=value")
        try:
            value = yaml.safe_load(raw_value)
        except yaml.YAMLError:
            value = raw_value
        parts = key.strip().split(".")
        node: Any = data
        for depth, part in enumerate(parts[:-1]):
            node = _child(node, part, create=True, where=f"{source} {'.'.join(parts[: depth + 1])}")
        last = parts[-1]
        if isinstance(node, list):
            index = _index(node, last, f"{source} {key}")
            node[index] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"{source} {key}: {'.'.join(parts[:-1])} is not a mapping or list")
    return data


def _index(node: list[Any], part: str, where: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise ConfigError(f"{where}: list index {part!r} out of range (length {len(node)})")
    return int(part)


def _child(node: Any, part: str, create: bool, where: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, where)]
    if isinstance(node, dict):
        if part not in node or node[part] is None:
            if not create:
                raise ConfigError(f"{where}: no such field")
            node[part] = {}
        return node[part]
    raise ConfigError(f"{where}: cannot descend into a {type(node).__name__}")


def format_validation_error(source: str, error: ValidationError, data: dict[str, Any]) -> str:
    """One line per problem: file, dotted field path, the offending value and what was wrong."""
    lines = [f"{source}: {error.error_count()} invalid field(s)"]
    for problem in error.errors():
        path = ".".join(str(p) for p in problem["loc"]) or "(top level)"
        if problem["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; `spogw schema` lists the fields)"
        else:
            message = problem["msg"].removeprefix("Value error, ")
        if not problem["loc"]:  # a check across fields: its message names them
            lines.append(f"  {source}: {message}")
            continue
        value = problem.get("input", _lookup(data, problem["loc"]))
        lines.append(f"  {source}: {path} = {_short(value)}: {message}")
    return "\n".join(lines)


def _lookup(data: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate(data: dict[str, Any], source: str) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(source, err, data)) from None


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load, include, override and validate an experiment file. Raises ConfigError."""
    data = load_raw(path)
    if "space" in data and "base" in data:
        raise ConfigError(f"{path}: this is a sweep file (base + space): run it with `spogw sweep {path}`")
    if overrides:
        data = apply_overrides(data, overrides)
    return validate(data, str(path))
