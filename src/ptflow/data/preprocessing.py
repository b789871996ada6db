"""How raw inputs become model inputs, with statistics fitted on the train split alone."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Preprocessing:
    """How raw inputs become model inputs: x * scale, then (x - mean) / std if fitted.

    Images are uint8 and scale by 1/255 (the article's pixels / 255); tabular data is used as is.
    mean/std are per channel for images and per feature for tabular data.
    """

    scale: float
    mean: list[float] | None = None
    std: list[float] | None = None

    def to_dict(self) -> dict:
        return {"scale": self.scale, "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(float(d["scale"]), d.get("mean"), d.get("std"))


def fit_preprocessing(x_train: np.ndarray, normalize: str) -> Preprocessing:
    scale = 1 / 255 if x_train.dtype == np.uint8 else 1.0
    if normalize == "none":
        return Preprocessing(scale)
    axes = (0, 2, 3) if x_train.ndim == 4 else (0,)
    mean, std = mean_std(x_train, axes, scale)
    std = np.where(std > 1e-8, std, 1.0)  # a constant feature would otherwise divide by zero
    return Preprocessing(scale, mean.tolist(), std.tolist())


def mean_std(x: np.ndarray, axes: tuple[int, ...], scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (or per-feature) mean and std in float64, a chunk at a time to bound memory."""
    total = np.zeros(x.shape[1], np.float64)
    total_sq = np.zeros(x.shape[1], np.float64)
    for start in range(0, len(x), 8192):
        chunk = x[start:start + 8192].astype(np.float64) * scale
        total += chunk.sum(axis=axes)
        total_sq += (chunk ** 2).sum(axis=axes)
    count = x.size / x.shape[1]
    mean = total / count
    return mean, np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
