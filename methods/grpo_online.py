"""GRPO as in DeepSeekMath: one group of n fresh samples per question, one update per collected batch,
standard k3 KL.

The config below is the whole method: its defaults name the functions it uses (registries in
methods/losses.py and methods/units.py), which the update steps (methods/steps.py) call; an
ablation is an override of one of its fields in the experiment file."""

from __future__ import annotations

from spogw.methods.config import GRPOConfig, KLMode, Method, NonNegative, NumSamples, Schedule, SharpenT


class GRPOOnlineConfig(GRPOConfig):
    num_samples: NumSamples = 8
    combinations: bool = False
    min_group_std: NonNegative = 0.0
    sharpen_t: SharpenT = 0
    beta: NonNegative = 0.04
    kl: KLMode = "standard"
    schedule: Schedule = "online"


METHOD = Method(GRPOOnlineConfig, "GRPO (DeepSeekMath), one group of n per question, online schedule")
