"""Tuned recipes for MNIST-like images (`--preset NAME`): train option values, measured by bench/recipes.py."""

from __future__ import annotations

from ptflow.errors import UsageError

PRESETS = {
    "fast": {"about": ">= 99% on MNIST in seconds on a CPU",
             "model": "cnn", "channels": [16, 32, 64], "batch_size": 128, "optimizer": "adam", "lr": 0.01,
             "scheduler": "onecycle", "n_epochs": 2},
    # The article's MLP (n_layers 5, BatchNorm), tuned by `ptflow sweep` on validation loss (bench/RESULTS.md)
    "mlp": {"about": "the article's MLP at >= 98.6% on MNIST (99.15% in the sweep)",
            "model": "mlp", "n_layers": 5, "use_dropout": False, "batch_size": 256, "optimizer": "adamw",
            "lr": 0.0029, "weight_decay": 0.065, "scheduler": "cosine", "n_epochs": 30, "augment_shift": 2},
    "accurate": {"about": ">= 99.5% on MNIST in about a minute on a CPU",
                 "model": "cnn", "channels": [16, 32, 64], "batch_size": 128, "optimizer": "adamw", "lr": 0.01,
                 "weight_decay": 0.05, "scheduler": "onecycle", "n_epochs": 12, "augment_shift": 2},
}


def preset_values(name: str | None) -> dict:
    if name is None:
        return {}
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; expected one of {', '.join(sorted(PRESETS))}")
    return {k: v for k, v in PRESETS[name].items() if k != "about"}
