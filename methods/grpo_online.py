"""GRPO as in DeepSeekMath: one group of n fresh samples per question, one update per collected batch,
standard k3 KL.

The config below is the whole method: the training loop (harness/train.py) reads it; an
ablation is an override of one of its fields in the experiment file."""

from __future__ import annotations

from typing import Literal

from methods.config import GRPOConfig


class GRPOOnlineConfig(GRPOConfig):
    num_samples: int = 8
    combinations: bool = False
    min_group_std: float = 0.0
    sharpen_t: int = 0
    beta: float = 0.04
    kl: Literal["none", "standard", "masked"] = "standard"
    schedule: Literal["offline", "online"] = "online"


FAMILY = "grpo"
CONFIG = GRPOOnlineConfig
