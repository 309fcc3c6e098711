"""Sigmoid DPO on the best-vs-worst pair of each question's samples.

The config below is the whole method: its defaults name the functions it uses (registries in
methods/losses.py and methods/units.py), which the update steps (methods/steps.py) call; an
ablation is an override of one of its fields in the experiment file."""

from __future__ import annotations

from spogw.methods.config import Method, PairConfig, PairLoss, PairSelection


class DPOConfig(PairConfig):
    pairs: PairSelection = "best_worst"
    loss: PairLoss = "dpo"


METHOD = Method(DPOConfig, "sigmoid DPO on best-vs-worst pairs per question")
