"""SPOGW's data curation with the standard k3 KL on every sequence: isolates the effect of mKL.

It is SPOGW with one switch changed (kl), written as such, so the two can never drift apart."""

from __future__ import annotations

from spogw.methods.config import KLMode, Method
from spogw.methods.spogw import SPOGWConfig


class GRPOKLConfig(SPOGWConfig):
    kl: KLMode = "standard"


METHOD = Method(GRPOKLConfig, "GRPO with standard k3 KL on every sequence (isolates mKL)")
