"""ioGRPO without SPOGW's curation: one group of all m samples per question, no filter, no sharpening,
standard KL, offline schedule.

The config below is the whole method: the training loop (harness/train.py) reads it; an
ablation is an override of one of its fields in the experiment file."""

from __future__ import annotations

from methods.config import GRPOConfig, KLMode, NonNegative, NumSamples, Schedule, SharpenT


class GRPOOfflineConfig(GRPOConfig):
    num_samples: NumSamples = 16
    combinations: bool = False
    min_group_std: NonNegative = 0.0
    sharpen_t: SharpenT = 0
    beta: NonNegative = 0.1
    kl: KLMode = "standard"
    schedule: Schedule = "offline"


FAMILY = "grpo"
CONFIG = GRPOOfflineConfig
