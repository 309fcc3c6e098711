"""ScoreFlow's Score-DPO: pairs with different scores resampled with probability proportional to (s_w -
s_l)^3, loss -log sigmoid(beta [s_w (logp_w - ref_w) - (1 - s_l)(logp_l - ref_l)]).

The config below is the whole method: its defaults name the functions it uses (registries in
methods/losses.py and methods/units.py), which the update steps (methods/steps.py) call; an
ablation is an override of one of its fields in the experiment file."""

from __future__ import annotations

from spogw.methods.config import AtLeastOne, Method, PairConfig, PairLoss, PairSelection


class ScoreDPOConfig(PairConfig):
    pairs: PairSelection = "scoreflow"
    pairs_per_question: AtLeastOne = 8
    loss: PairLoss = "score_dpo"


METHOD = Method(ScoreDPOConfig, "ScoreFlow's Score-DPO on score-weighted pairs")
