"""Batched inference with a loaded model: one function for evaluate, predict and serve.

Inputs are either raw uint8 pixels or floats already on the model's scale (0..1 pixels, raw
tabular features); `Preprocess` inside the loaded model tells them apart by dtype.
"""

from __future__ import annotations

import numpy as np
import torch

from ptflow.constants import EVAL_BATCH_SIZE
from ptflow.models.calibration import apply_temperature
from ptflow.models.files import LoadedModel


@torch.inference_mode()
def predict_proba(loaded: LoadedModel, x: np.ndarray | torch.Tensor,
                  batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """Class probabilities (N, n_classes) as float32, in large batches to bound memory, softened by
    the model's temperature when it has one (--calibrate)."""
    device = next(loaded.model.parameters()).device
    x = torch.as_tensor(x)
    out = []
    for start in range(0, len(x), batch_size):
        x_i = x[start:start + batch_size].to(device, non_blocking=True)
        # softmax, not exp: a model may end in logits or in log-probabilities (softmax is the same on both)
        scores = loaded.model(loaded.preprocess(x_i)).float()
        out.append(apply_temperature(scores, loaded.temperature).cpu())
    if not out:
        return np.zeros((0, len(loaded.classes)), np.float32)
    return torch.cat(out).numpy()


def prediction_rows(names: list[str], probs: np.ndarray, classes: list[str]) -> list[dict]:
    """One row per input: its name, the most probable class (index and name) and every probability."""
    return [{"input": name, "label": int(p.argmax()), "class": classes[int(p.argmax())],
             "probabilities": {c: round(float(v), 6) for c, v in zip(classes, p)}}
            for name, p in zip(names, probs)]
