"""ioGRPO without SPOGW's curation: one group of all m samples per question, no filter, no sharpening,
standard KL, offline schedule.

The config below is the whole method: the training loop (harness/train.py) reads it; an
ablation is an override of one of its fields in the experiment file."""

from __future__ import annotations

from typing import Literal

from methods.config import GRPOConfig


class GRPOOfflineConfig(GRPOConfig):
    num_samples: int = 16
    combinations: bool = False
    min_group_std: float = 0.0
    sharpen_t: int = 0
    beta: float = 0.1
    kl: Literal["none", "standard", "masked"] = "standard"
    schedule: Literal["offline", "online"] = "offline"


FAMILY = "grpo"
CONFIG = GRPOOfflineConfig
