"""What every network is joined to: `Preprocess`, raw inputs to model inputs.

The built-in networks have a module each (mlp.py, cnn.py), named in registry.py; a model file
stores the name and the constructor's keyword arguments, so the registry rebuilds it.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class Preprocess(nn.Module):
    """Raw inputs (uint8 pixels or float features) -> model inputs: x * scale, then standardised.

    Kept apart from the classifier so the classifier's weights stay the article's, and joined to
    it for export so exported models take raw pixels.
    """

    def __init__(self, input_shape: tuple[int, ...], scale: float, mean=None, std=None):
        super().__init__()
        self.scale = float(scale)
        self.standardize = mean is not None
        shape = (-1, 1, 1) if len(input_shape) == 3 else (-1,)  # per channel, or per feature
        self.register_buffer("mean", torch.tensor(mean or [0.0]).reshape(shape), persistent=False)
        self.register_buffer("std", torch.tensor(std or [1.0]).reshape(shape), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # uint8 is raw pixels; floats are already on the model's scale (0..1 pixels, raw features).
        # In place only on tensors made here: one float copy of the batch, never the caller's input.
        if x.dtype == torch.uint8:
            x = x.float().mul_(self.scale)
            return x.sub_(self.mean).div_(self.std) if self.standardize else x
        x = x.float()
        return (x - self.mean) / self.std if self.standardize else x
