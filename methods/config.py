"""The two families of method configs. Each field is one switch of an ablation.

A method file (methods/spogw.py, ...) subclasses one of these with its own defaults; an ablation
is an override of a field in the experiment file, never an edit of the training loop.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Constrained types of the fields a method file may give new defaults. A subclass that redeclares a
# field must use these (a bare `beta: float = 0.2` would drop the bound); a test checks every
# registered method config keeps its family's constraints.
NumSamples = Annotated[int, Field(ge=2)]
NonNegative = Annotated[float, Field(ge=0.0)]
GroupSize = Annotated[int, Field(ge=2)]
SharpenT = Annotated[int, Field(ge=0)]
AtLeastOne = Annotated[int, Field(ge=1)]
KLMode = Literal["none", "standard", "masked"]
Schedule = Literal["offline", "online"]
PairSelection = Literal["best_worst", "scoreflow"]
PairLoss = Literal["dpo", "score_dpo"]


class MethodConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, use_attribute_docstrings=True)

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
    scale: Literal["group", "none"] = "group"
    """Advantage: (s - mean) / (std + eps) per group, or none = s - mean only."""
    kl: KLMode = "masked"
    """none; standard k3 on every sequence; masked = only where the advantage is positive (mKL)."""
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

    @model_validator(mode="after")
    def _consistent(self) -> GRPOConfig:
        members = self.group_size if self.combinations else self.num_samples
        if self.combinations and self.group_size > self.num_samples:
            raise ValueError(f"group_size n={self.group_size} is larger than num_samples m={self.num_samples}")
        if 2 * self.sharpen_t > members:
            raise ValueError(f"sharpening keeps 2t={2 * self.sharpen_t} members of groups of {members}")
        return self


class PairConfig(MethodConfig):
    pairs: PairSelection = "best_worst"
    """best_worst: the best vs the worst sample per question; scoreflow: pairs with different scores
    resampled with probability proportional to (s_w - s_l)^3 (ScoreFlow)."""
    pairs_per_question: AtLeastOne = 4
    """Pairs drawn per question (scoreflow pairs only)."""
    loss: PairLoss = "dpo"
    """dpo: sigmoid DPO; score_dpo: ScoreFlow's score-weighted DPO."""
    pairs_per_step: int = Field(8, ge=1)
    """Preference pairs per optimizer step."""
    schedule: Literal["offline"] = "offline"
    """Pairs are built from a whole collected iteration (offline only)."""
