"""SPOGW: ioGRPO on all C(m, n) groups with the variance filter and sharpening, and the KL penalty only
where the advantage is positive (mKL). Defaults follow the paper where it is known (m=16, n=14,
beta=0.1, masked KL, offline); the variance threshold and t are not published: 0.05 and t=4 are our
defaults.

The config below is the whole method: its defaults name the functions it uses (registries in
methods/losses.py and methods/units.py), which the update steps (methods/steps.py) call; an
ablation is an override of one of its fields in the experiment file."""

from __future__ import annotations

from spogw.methods.config import (
    AtLeastOne,
    GroupSize,
    GRPOConfig,
    KLMode,
    Method,
    NonNegative,
    NumSamples,
    Schedule,
    SharpenT,
)


class SPOGWConfig(GRPOConfig):
    num_samples: NumSamples = 16
    group_size: GroupSize = 14
    combinations: bool = True
    max_groups: AtLeastOne = 120
    min_group_std: NonNegative = 0.05
    sharpen_t: SharpenT = 4
    beta: NonNegative = 0.1
    kl: KLMode = "masked"
    schedule: Schedule = "offline"


METHOD = Method(SPOGWConfig, "SPOGW: offline ioGRPO on C(m,n) groups, variance filter, sharpening, masked KL")
