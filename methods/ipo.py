"""IPO (Azar et al., arXiv 2310.12036): the squared loss (h - 1/(2 beta))^2 on the log-ratio difference
h of the best-vs-worst pair of each question's samples. Unlike DPO's sigmoid, the square keeps
pulling h towards a finite margin 1/(2 beta) instead of towards infinity, which is the paper's
answer to DPO over-fitting deterministic preferences.

The config below is the whole method: its defaults name the functions it uses (registries in
methods/losses.py and methods/units.py), which the update steps (methods/steps.py) call; an
ablation is an override of one of its fields in the experiment file."""

from __future__ import annotations

from spogw.methods.config import Method, PairConfig, PairLoss, PairSelection


class IPOConfig(PairConfig):
    """beta is the paper's tau: the target log-ratio margin is 1 / (2 beta), so it must be > 0 (the
    loss's registry entry says so, and the config refuses beta = 0)."""

    pairs: PairSelection = "best_worst"
    loss: PairLoss = "ipo"


METHOD = Method(IPOConfig, "IPO's squared preference loss on best-vs-worst pairs per question")
