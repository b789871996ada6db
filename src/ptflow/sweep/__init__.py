"""Hyperparameter search: `ptflow sweep`, every trial a training run (Optuna).

`search.py` runs a study, `space.py` parses `--param` specs, `study.py` keeps studies in a
shared database, `report.py` writes the leaderboard.
"""
