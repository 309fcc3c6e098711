"""The two families of method configs. Each field is one switch of an ablation.

A method file (methods/spogw.py, ...) subclasses one of these with its own defaults; an ablation
is an override of a field in the experiment file, never an edit of the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeAlias

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator


def _registry(name: str) -> Any:
    """The registry of pure functions a config field chooses from (imported on first validation:
    the registries live beside their functions, in modules that import torch)."""
    if name == "unit builder":
        from spogw.methods.units import UNIT_BUILDERS

        return UNIT_BUILDERS
    from spogw.methods.losses import ADVANTAGES, KL_MASKS, PAIR_LOSSES, POLICY_TERMS

    return {"advantage estimator": ADVANTAGES, "policy term": POLICY_TERMS, "KL mask": KL_MASKS,
            "pair loss": PAIR_LOSSES}[name]  # fmt: skip


def _names(kind: str, unit: str | None = None) -> list[str]:
    registry = _registry(kind)
    return [e.name for e in registry if unit is None or e.metadata.get("unit") == unit]


def registered(kind: str, unit: str | None = None) -> Any:
    """A str field whose value must name an entry of the ``kind`` registry (optionally only the
    unit builders of one ``unit`` kind); the JSON schema lists the names."""

    def check(value: str) -> str:
        registry = _registry(kind)
        if value not in registry:
            raise ValueError(registry.unknown_message(value))
        if unit is not None and registry.entry(value).metadata.get("unit") != unit:
            raise ValueError(f"{kind} {value!r} does not build {unit}s; choose one of {_names(kind, unit)}")
        return value

    def schema(field_schema: dict[str, Any]) -> None:
        field_schema["enum"] = _names(kind, unit)

    return Annotated[str, AfterValidator(check), Field(json_schema_extra=schema)]


# Constrained types of the fields a method file may give new defaults. A subclass that redeclares a
# field must use these (a bare `beta: float = 0.2` would drop the bound); a test checks every
# registered method config keeps its family's constraints.
NumSamples = Annotated[int, Field(ge=2)]
NonNegative = Annotated[float, Field(ge=0.0)]
GroupSize = Annotated[int, Field(ge=2)]
SharpenT = Annotated[int, Field(ge=0)]
AtLeastOne = Annotated[int, Field(ge=1)]
Schedule = Literal["offline", "online"]
# Names of registered pure functions (methods/losses.py, methods/units.py); a type checker sees str
if TYPE_CHECKING:
    AdvantageName: TypeAlias = str
    PolicyTermName: TypeAlias = str
    KLMode: TypeAlias = str
    PairSelection: TypeAlias = str
    PairLoss: TypeAlias = str
else:
    AdvantageName = registered("advantage estimator")
    PolicyTermName = registered("policy term")
    KLMode = registered("KL mask")
    PairSelection = registered("unit builder", unit="pair")
    PairLoss = registered("pair loss")


MethodKind: TypeAlias = Literal["trained", "static", "search"]


def method_kind(config: BaseModel) -> MethodKind:
    """What a method config does with a cell: trains a generator (MethodConfig families), evaluates a
    fixed workflow (a ``workflow`` field: methods/static.py), or searches for one (schedule 'search':
    methods/aflow.py)."""
    if getattr(config, "schedule", None) == "search":
        return "search"
    if hasattr(config, "workflow"):
        return "static"
    return "trained"


@dataclass(frozen=True)
class Method:
    """A method as `spogw list methods` shows it: the config class (its defaults are the functions
    the method chooses) and one line saying what it is. Every methods/<name>.py that defines
    ``METHOD = Method(...)`` is registered under <name> (harness/catalog.py finds them)."""

    config: type[BaseModel]
    summary: str


class MethodConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, use_attribute_docstrings=True)

    update: ClassVar[str]
    """Which update step of methods/steps.py (UPDATES) trains this family."""
    units: ClassVar[str] = "groups"
    """Which unit builder of methods/units.py (UNIT_BUILDERS) turns a question's rollouts into units."""

    @property
    def unit_builder(self) -> str:
        """The registered unit builder this config chooses."""
        return self.units

    @property
    def units_per_step(self) -> int:
        """Units (questions or pairs) per optimizer step."""
        raise NotImplementedError

    num_samples: NumSamples = 16
    """m: workflows sampled per training question and iteration."""
    beta: NonNegative = 0.1
    """KL coefficient (GRPO) or DPO temperature."""
    ref: Literal["base", "previous_iteration"] = "base"
    """Reference policy: the base model (adapter off) or the previous iteration's adapter."""
    epochs: int = Field(1, ge=1)
    """Passes over an iteration's frozen data (offline schedule)."""
    learning_rate: float = Field(1e-5, gt=0.0)
    """AdamW learning rate of the LoRA parameters."""
    max_grad_norm: float = Field(1.0, gt=0.0)
    """Gradient clipping (global L2 norm) before each optimizer step."""


class GRPOConfig(MethodConfig):
    update: ClassVar[str] = "groups"
    units: ClassVar[str] = "groups"

    group_size: GroupSize = 14
    """n: members of a group drawn from the m samples (ignored when combinations is off)."""
    combinations: bool = True
    """All C(m, n) groups (at most max_groups) or, when off, one group of all m samples."""
    max_groups: AtLeastOne = 120
    """Cap on groups per question: beyond it, this many distinct combinations are drawn with the seed."""
    min_group_std: NonNegative = 0.0
    """Variance filter: groups whose score std (population) is below this are dropped; 0 keeps all."""
    sharpen_t: SharpenT = 0
    """Sharpening: keep the t highest and t lowest of each group; 0 turns it off."""
    scale: AdvantageName = "group"
    """Advantage estimator (methods/losses.py ADVANTAGES): group = (s - mean) / (std + eps) per group;
    none = s - mean only."""
    policy_term: PolicyTermName = "clip"
    """Policy term (POLICY_TERMS): clip = PPO's clipped ratio; unclipped = the plain ratio."""
    kl: KLMode = "masked"
    """KL mask (KL_MASKS): none; standard = k3 on every sequence; masked = only where the advantage
    is positive (mKL)."""
    schedule: Schedule = "offline"
    """offline: collect an iteration with the frozen policy, then train on it (ioGRPO); online: one
    update per collected batch."""
    questions_per_step: int = Field(4, ge=1)
    """Questions (with all their groups) per optimizer step; online: questions collected per update."""
    eps_low: float = Field(0.2, ge=0.0, lt=1.0)
    """Lower clip of the ratio: r >= 1 - eps_low."""
    eps_high: float = Field(0.2, ge=0.0)
    """Upper clip of the ratio: r <= 1 + eps_high."""
    aggregation: Literal["seq_mean", "token_mean"] = "seq_mean"
    """seq_mean: mean over each sequence's tokens, then over sequences (GRPO); token_mean: over all tokens."""

    @property
    def units_per_step(self) -> int:
        return self.questions_per_step

    @model_validator(mode="after")
    def _consistent(self) -> GRPOConfig:
        members = self.group_size if self.combinations else self.num_samples
        if self.combinations and self.group_size > self.num_samples:
            raise ValueError(f"group_size n={self.group_size} is larger than num_samples m={self.num_samples}")
        if 2 * self.sharpen_t > members:
            raise ValueError(f"sharpening keeps 2t={2 * self.sharpen_t} members of groups of {members}")
        return self


class PairConfig(MethodConfig):
    update: ClassVar[str] = "pairs"

    pairs: PairSelection = "best_worst"
    """Pair builder (methods/units.py UNIT_BUILDERS): best_worst = the best vs the worst sample per
    question; scoreflow = pairs with different scores resampled with probability proportional to
    (s_w - s_l)^3 (ScoreFlow)."""
    pairs_per_question: AtLeastOne = 4
    """Pairs drawn per question (scoreflow pairs only)."""
    loss: PairLoss = "dpo"
    """Pair loss (methods/losses.py PAIR_LOSSES): dpo = sigmoid DPO; score_dpo = ScoreFlow's
    score-weighted DPO; ipo = IPO's squared loss."""
    pairs_per_step: int = Field(8, ge=1)
    """Preference pairs per optimizer step."""
    schedule: Literal["offline"] = "offline"
    """Pairs are built from a whole collected iteration (offline only)."""

    @property
    def unit_builder(self) -> str:
        return self.pairs

    @property
    def units_per_step(self) -> int:
        return self.pairs_per_step

    @model_validator(mode="after")
    def _beta_fits_loss(self) -> PairConfig:
        if self.beta <= 0 and _registry("pair loss").entry(self.loss).metadata.get("beta_positive"):
            raise ValueError(f"loss {self.loss!r} needs beta > 0, got beta={self.beta}")
        return self
