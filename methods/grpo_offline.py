"""ioGRPO without SPOGW's curation: one group of all m samples per question, no filter, no sharpening,
standard KL, offline schedule.

The config below is the whole method: its defaults name the functions it uses (registries in
methods/losses.py and methods/units.py), which the update steps (methods/steps.py) call; an
ablation is an override of one of its fields in the experiment file."""

from __future__ import annotations

from spogw.methods.config import GRPOConfig, KLMode, Method, NonNegative, NumSamples, Schedule, SharpenT


class GRPOOfflineConfig(GRPOConfig):
    num_samples: NumSamples = 16
    combinations: bool = False
    min_group_std: NonNegative = 0.0
    sharpen_t: SharpenT = 0
    beta: NonNegative = 0.1
    kl: KLMode = "standard"
    schedule: Schedule = "offline"


METHOD = Method(GRPOOfflineConfig, "ioGRPO on one group of m per question, without SPOGW's curation")
