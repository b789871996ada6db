"""What training does about imbalanced classes: `--class_weights` and `--sampler`.

- `--class_weights balanced` weighs each training example's loss by n / (K * count of its class),
  counted on the training split only (scikit-learn's "balanced"; K: the classes the training split
  has). The weights average 1 over the training split, so the learning rate means what it did,
  and an epoch's mean weighted loss is exactly the mean over classes of each class's mean loss.
- `--sampler balanced` draws each epoch's n training indices with replacement, each with
  probability proportional to 1 / count of its class, so every class is drawn about equally
  often. It draws from the loop's shuffling generator, as the random order does: every process
  of a torchrun job draws the same order and takes its slice, and the generator's state in the
  checkpoint makes --resume exact.

Validation and test losses stay unweighted and unresampled: the same per-example loss in every
run, so `ptflow runs`, sweeps and early stopping compare like with like (as Keras's
`class_weight`, which weighs training only, and timm's plain validation loss). Balanced accuracy
(scoring.py) is the number that shows what the rare classes gained.
"""

from __future__ import annotations

import numpy as np
import torch


def class_weights(y_train: np.ndarray, n_classes: int) -> np.ndarray:
    """n / (K * count_c) per class, from the training labels; 0 for a class they lack (it is
    never a training target, and scikit-learn's K counts only the classes present)."""
    counts = np.bincount(np.asarray(y_train, dtype=np.int64), minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = len(y_train) / (present.sum() * counts[present])
    return weights


def loss_weights(mode: str, y_train: np.ndarray, n_classes: int, device: torch.device) -> torch.Tensor | None:
    """The loss's per-class weights on the device, or None for the plain loss (--class_weights none)."""
    if mode == "none":
        return None
    return torch.tensor(class_weights(y_train, n_classes), dtype=torch.float32, device=device)


def epoch_order(y: torch.Tensor, generator: torch.Generator, sampler: str) -> torch.Tensor:
    """The indices of one epoch's training examples, drawn from `generator` (a CPU generator).

    random: a permutation, each example once. balanced: len(y) draws with replacement, a class
    first (uniform over the classes present), then an example of it (uniform): so each example's
    probability is 1 / (K * count of its class). Two steps, not torch.multinomial over the
    examples, which takes at most 2**24 categories.
    """
    n = len(y)
    if sampler == "random":
        return torch.randperm(n, generator=generator)
    labels = y.cpu()  # one copy per epoch (a sync on a GPU), like the loss read at each epoch's end
    by_class = torch.argsort(labels, stable=True)  # |by_class| = (n,), example indices grouped by class
    counts = torch.bincount(labels)
    present = torch.nonzero(counts).flatten()  # |present| = (K,)
    starts = torch.cumsum(counts, 0) - counts
    classes = present[torch.randint(len(present), (n,), generator=generator)]
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    within = torch.minimum((u * counts[classes]).long(), counts[classes] - 1)  # float rounding never reaches count
    return by_class[starts[classes] + within]
