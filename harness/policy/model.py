"""Loading the generator: a preset (`tiny`, `smol`) or any Hugging Face causal LM, with LoRA.

LoRA follows the paper-like default of GeneratorConfig (r=8, alpha=16, q_proj/v_proj, dropout
0.01), every field configurable. dtype `auto` is bf16 on a GPU and fp32 on a CPU. The reference
policy is the same weights with the adapter disabled (`ref: base`) or with the previous
iteration's adapter loaded beside the trainable one (`ref: previous_iteration`): never a second
copy of the base model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spogw.harness.errors import InputError
from spogw.harness.policy.prompts import TEMPLATE_VERSION, PromptStyle, build_prompt, template_id
from spogw.harness.policy.sampling import Sample, SampleKey, SamplingParams, sample_hf

if TYPE_CHECKING:
    import torch

    from spogw.harness.config import GeneratorConfig
    from spogw.harness.distributed import Ranks
    from spogw.harness.policy.constraint import GrammarConstraint
    from spogw.harness.policy.served import VLLMServerSampler
    from spogw.harness.sharding import LoneForwards

TRAINABLE = "default"
REFERENCE = "reference"


@dataclass
class Generator:
    model: Any
    """A peft PeftModel around the base causal LM (adapter name 'default' is the one trained)."""
    tokenizer: Any
    identity: str
    """What the base model is (preset + recipe hash, or model id): recorded with every run."""
    prompt_style: PromptStyle = "full"
    max_prompt_tokens: int | None = None
    constraint: GrammarConstraint | None = None
    """Grammar-constrained decoding (generator.decoding); the trainer applies the same mask."""
    extra: dict[str, Any] = field(default_factory=dict)
    prompt_version: str = TEMPLATE_VERSION
    stop_ids: tuple[int, ...] = ()
    """Token ids that end a completion: every eos id of the model's generation config and the
    tokenizer's (an instruct model may end on either, e.g. Qwen2's <|im_end|> and <|endoftext|>)."""
    micro_batch_sequences: int = 0
    """Sequences per forward/backward in an update step; 0: a whole unit (generator.training)."""
    autocast: bool = False
    """bf16 autocast around the training forward (generator.training.autocast, resolved)."""
    served: VLLMServerSampler | None = None
    """The vLLM server that samples (backend vllm_server); None: this process samples."""
    collective_forwards: bool = False
    """The base weights are sharded over a launch's ranks (harness/sharding.py): every forward is a
    collective that every rank runs."""
    lone_forwards: LoneForwards | None = None
    """Rank 0 of a sharded launch: its forwards outside the update steps, announced for the other
    ranks to mirror (`all_ranks` marks the ones every rank runs). None otherwise."""

    @property
    def exact_sampler_logprobs(self) -> bool:
        """Whether the sampler's log-probs equal the training forward's (float32 hf sampling only)."""
        import torch

        return self.served is None and next(self.model.parameters()).dtype == torch.float32

    @property
    def prompt_format(self) -> str:
        return template_id(self.prompt_style, self.prompt_version)

    def prompt(self, domain: str, question: str) -> str:
        return build_prompt(domain, question, self.prompt_style, self.prompt_version, self.tokenizer)

    def sample(self, prompts: Sequence[str], keys: Sequence[SampleKey], params: SamplingParams) -> list[Sample]:
        """One completion per (prompt, key) from the trainable adapter's current weights, here or on
        the vLLM server (which is sent the adapter first when it changed)."""
        if self.served is not None:
            return self.served.sample(self, prompts, keys, params)
        return sample_hf(
            self.model, self.tokenizer, prompts, keys, params, self.max_prompt_tokens, self.constraint, self.stop_ids
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def completion_logprobs(self, rollouts: Sequence[Any], temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(S, T) log-probs (with gradients) of the rollouts' completions and their (S, T) mask,
        under the decoding constraint the sampler used (harness/policy/logprobs.py)."""
        import torch

        from spogw.harness.policy.logprobs import completion_logprobs

        if not self.autocast:
            return completion_logprobs(self.model, rollouts, temperature, self.constraint)
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            return completion_logprobs(self.model, rollouts, temperature, self.constraint)

    def reference_logprobs(self, rollouts: Sequence[Any], ref: str, temperature: float) -> dict[Any, torch.Tensor]:
        """Per-token reference log-probs by rollout key (no gradients): see `reference`."""
        from spogw.harness.policy.logprobs import reference_logprobs

        return reference_logprobs(self, rollouts, ref, temperature)

    def train_mode(self) -> None:
        self.model.train()

    def all_ranks(self) -> contextlib.AbstractContextManager[None]:
        """Around forwards that every rank of a sharded launch runs itself (the update steps), so
        that rank 0 does not announce them as its own (harness/sharding.py)."""
        return self.lone_forwards.together() if self.lone_forwards is not None else contextlib.nullcontext()

    @contextlib.contextmanager
    def reference(self, kind: str) -> Iterator[None]:
        """Inside, the model computes the reference policy: 'base' (adapter off) or
        'previous_iteration' (the adapter loaded with `load_reference`), in eval mode (no dropout:
        the reference is a fixed distribution)."""
        if kind not in ("base", "previous_iteration"):
            raise ValueError(f"ref must be 'base' or 'previous_iteration', got {kind!r}")
        if kind == "previous_iteration" and REFERENCE not in self.model.peft_config:
            raise RuntimeError("no previous-iteration adapter loaded: call load_reference(directory) first")
        was_training = self.model.training
        self.model.eval()
        try:
            if kind == "base":
                with self.model.disable_adapter():
                    yield
            else:
                self.model.set_adapter(REFERENCE, inference_mode=True)
                try:
                    yield
                finally:
                    self.model.set_adapter(TRAINABLE)  # the trained adapter is active and trainable again
        finally:
            self.model.train(was_training)

    def load_reference(self, adapter_dir: Path) -> None:
        """Load (or replace) the frozen reference adapter from a saved iteration."""
        from spogw.harness.policy.checkpoints import check_adapter_base

        check_adapter_base(adapter_dir, self.identity)
        if REFERENCE in self.model.peft_config:
            self.model.delete_adapter(REFERENCE)
        self.model.load_adapter(str(adapter_dir), adapter_name=REFERENCE, is_trainable=False)
        self.model.set_adapter(TRAINABLE)


def resolve_dtype(name: str, device: str) -> Any:
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def attach_lora(model: Any, config: GeneratorConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=list(config.lora.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def load_generator(
    config: GeneratorConfig,
    device: str | None = None,
    progress: bool = True,
    adapter_dir: Path | None = None,
    sharded_over: Ranks | None = None,
) -> Generator:
    """The generator of an experiment, LoRA attached, on ``device`` (default: GPU if present).

    With backend `vllm_server`, adapters for the server are written under generator.server.adapter_dir,
    else ``adapter_dir`` (the runner passes the run folder's), else the cache. ``sharded_over``: the
    ranks of a launch to shard the base weights over (generator.training.sharding fsdp,
    harness/sharding.py): the model is read on the CPU, then sharded onto ``device`` layer by layer."""
    import torch

    from spogw.harness.torch_threads import apply_torch_threads

    apply_torch_threads()
    device = device or default_device()
    dtype = resolve_dtype(config.dtype, device)
    load_device = "cpu" if sharded_over is not None else device
    if config.name == "tiny":
        from spogw.harness.policy import tiny

        recipe = tiny.TEST_RECIPE if config.tiny_recipe == "test" else tiny.TinyRecipe()
        base, tokenizer, _ = tiny.load(recipe, progress=progress)
        identity, style, max_prompt = f"tiny-{tiny.recipe_hash(recipe)}", "compact", recipe.max_prompt_tokens
    elif config.name == "smol":
        from spogw.harness.policy import smol

        base, tokenizer = smol.load(dtype=dtype)
        identity, style, max_prompt = smol.IDENTITY, prompt_style(config, tokenizer), None
    else:
        if not config.model:
            raise InputError("generator.model: give a Hugging Face model id or a local path for generator name 'hf'")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(config.model)
        base = AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype)
        identity, style, max_prompt = config.model, prompt_style(config, tokenizer), None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    base = base.to(device=load_device, dtype=dtype)
    # LoRA's A matrices are random: seed them so the same generator config gives the same start,
    # inside fork_rng so that loading a generator does not reset the caller's random state.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = attach_lora(base, config)
    if sharded_over is not None:
        from spogw.harness.sharding import shard_base_model

        shard_base_model(model, sharded_over, device)
    constraint = None
    if decoding_mode(config) == "grammar":
        from spogw.harness.policy.constraint import GrammarConstraint

        constraint = GrammarConstraint(tokenizer)
    training = config.training
    if training.gradient_checkpointing:
        # non-reentrant: the LoRA weights get gradients although the frozen embeddings' outputs do not
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return Generator(
        model,
        tokenizer,
        identity,
        style,  # type: ignore[arg-type]
        max_prompt,
        constraint,
        prompt_version=config.prompt_version,
        stop_ids=stop_token_ids(base, tokenizer),
        micro_batch_sequences=training.micro_batch_sequences,
        autocast=training.autocast == "bf16" or (training.autocast == "auto" and torch.device(device).type == "cuda"),
        served=served_sampler(config, identity, adapter_dir) if config.backend == "vllm_server" else None,
        collective_forwards=sharded_over is not None,
    )


def served_sampler(config: GeneratorConfig, identity: str, adapter_dir: Path | None) -> VLLMServerSampler:
    """The vLLM-server sampler of generator config ``config`` (backend vllm_server)."""
    import os

    from spogw.harness.policy.served import VLLMServerSampler
    from spogw.harness.policy.tiny import cache_root

    server = config.server
    api_key = None
    if server.api_key_env:
        api_key = os.environ.get(server.api_key_env)
        if not api_key:
            raise InputError(f"generator.server.api_key_env: the environment variable {server.api_key_env} is not set")
    folder = Path(server.adapter_dir) if server.adapter_dir else adapter_dir or cache_root() / "served_adapters"
    assert config.base_url is not None  # GeneratorConfig checks it for vllm_server
    return VLLMServerSampler(
        config.base_url,
        server.served_model or config.model or identity,
        folder,
        api_key=api_key,
        timeout_s=server.request_timeout_s,
        max_retries=server.max_retries,
        concurrency=server.max_concurrent_requests,
    )


def prompt_style(config: GeneratorConfig, tokenizer: Any) -> str:
    """`chat` or `full` for a pretrained model: generator.prompt, where `auto` is chat when the
    tokenizer has a chat template (an instruct model). Raises ValueError for `chat` without one."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if config.prompt == "chat" and not has_template:
        raise InputError(
            f"generator.prompt: 'chat', but the tokenizer of {config.model or config.name} has no chat template"
        )
    if config.prompt == "completion" or (config.prompt == "auto" and not has_template):
        return "full"
    return "chat"


def stop_token_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    """Every end-of-sequence id: the generation config's (an int or a list) and the tokenizer's."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(configured if isinstance(configured, list | tuple) else [configured])
    ids.add(tokenizer.eos_token_id)
    return tuple(sorted(i for i in ids if isinstance(i, int)))


def decoding_mode(config: GeneratorConfig) -> str:
    """`free` or `grammar`: what generator.decoding resolves to (auto: grammar for `tiny` only)."""
    mode = config.decoding
    if mode == "auto":
        mode = "grammar" if config.name == "tiny" else "free"
    if mode == "grammar" and config.backend == "vllm_server":
        raise InputError(
            "generator.decoding 'grammar' needs backend 'hf' (the vLLM server has no trie constraint): "
            "set decoding: free"
        )
    return mode
