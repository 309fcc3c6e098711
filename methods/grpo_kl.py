"""SPOGW's data curation with the standard k3 KL on every sequence: isolates the effect of mKL.

The config below is the whole method: the training loop (harness/train.py) reads it; an
ablation is an override of one of its fields in the experiment file."""

from __future__ import annotations

from typing import Literal

from methods.config import GRPOConfig


class GRPOKlConfig(GRPOConfig):
    num_samples: int = 16
    group_size: int = 14
    combinations: bool = True
    max_groups: int = 120
    min_group_std: float = 0.05
    sharpen_t: int = 4
    beta: float = 0.1
    kl: Literal["none", "standard", "masked"] = "standard"
    schedule: Literal["offline", "online"] = "offline"


FAMILY = "grpo"
CONFIG = GRPOKlConfig
