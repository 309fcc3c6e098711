"""Optuna sweeps over an experiment's settings (`spogw sweep`; docs/sweeps.md): the sweep file
(config.py), the constrained search space (space.py), a trial's objective (objective.py) and the
worker loop over a shared study (study.py)."""
