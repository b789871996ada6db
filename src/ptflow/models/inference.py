"""Batched inference with a loaded model: one function for evaluate, predict and serve.

Inputs are either raw uint8 pixels or floats already on the model's scale (0..1 pixels, raw
tabular features); `Preprocess` inside the loaded model tells them apart by dtype.
"""

from __future__ import annotations

import numpy as np
import torch

from ptflow.config import EVAL_BATCH_SIZE
from ptflow.errors import PtflowError
from ptflow.models.files import LoadedModel


def check_inputs(x: np.ndarray, input_shape: tuple[int, ...], source: str = "input") -> np.ndarray:
    """Reshape to (N, *input_shape): accepts flat vectors, and (N, H, W) for one-channel images."""
    size = int(np.prod(input_shape))
    if x.ndim >= 1 and x.shape[1:] == tuple(input_shape):
        pass
    elif x.ndim == 2 and x.shape[1] == size:
        x = x.reshape(len(x), *input_shape)
    elif len(input_shape) == 3 and input_shape[0] == 1 and x.shape[1:] == tuple(input_shape[1:]):
        x = x[:, None]
    else:
        raise PtflowError(f"{source}: shape {tuple(x.shape[1:])} per example does not fit the model's "
                          f"input {tuple(input_shape)} (or {size} flat values)")
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise PtflowError(f"{source}: contains NaN or infinite values")
    return x


@torch.inference_mode()
def predict_proba(loaded: LoadedModel, x: np.ndarray | torch.Tensor,
                  batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """Class probabilities (N, n_classes) as float32, in large batches to bound memory."""
    device = next(loaded.model.parameters()).device
    x = torch.as_tensor(x)
    out = []
    for start in range(0, len(x), batch_size):
        x_i = x[start:start + batch_size].to(device, non_blocking=True)
        out.append(loaded.model(loaded.preprocess(x_i)).float().exp().cpu())
    if not out:
        return np.zeros((0, len(loaded.classes)), np.float32)
    return torch.cat(out).numpy()
