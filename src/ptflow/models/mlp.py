"""`--model mlp`: the article's ImageClassifier, Blocks of shrinking width, then Linear and log-softmax.

Built from the train flags it names in `mlp_args` (n_layers or hidden_sizes, use_dropout,
dropout_p), whose defaults and help are TrainConfig's (config.py); `MODEL` tells the registry how.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ptflow.models.registry import BuiltinModel


class Block(nn.Module):
    """The article's block: Linear -> LeakyReLU -> BatchNorm1d (or Dropout)."""

    def __init__(self, input_size: int, output_size: int, use_batch_norm: bool, dropout_p: float | None):
        super().__init__()
        regularizer = nn.BatchNorm1d(output_size) if use_batch_norm else nn.Dropout(dropout_p)
        # Named `block` so the state-dict keys match the article's files. The activation works in
        # place on the Linear's fresh output (its backward needs only the result): one activation
        # buffer less per block, same numbers.
        self.block = nn.Sequential(nn.Linear(input_size, output_size), nn.LeakyReLU(inplace=True), regularizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # |x| = (batch_size, input_size) -> (batch_size, output_size)
        return self.block(x)


class MLP(nn.Module):
    """The article's ImageClassifier: Blocks of shrinking width, then Linear and log-softmax."""

    returns_log_probs = True  # so training uses NLL, as the article does, not a second log-softmax

    def __init__(self, input_size: int, output_size: int, hidden_sizes: list[int],
                 use_batch_norm: bool = True, dropout_p: float | None = None):
        # dropout_p is needed only without BatchNorm; its default is --dropout_p's (mlp_args passes it)
        super().__init__()
        if not use_batch_norm and dropout_p is None:
            raise ValueError("an MLP without BatchNorm needs dropout_p")
        sizes = [input_size, *hidden_sizes]
        blocks = [Block(a, b, use_batch_norm, dropout_p) for a, b in zip(sizes, sizes[1:])]
        self.layers = nn.Sequential(*blocks, nn.Linear(sizes[-1], output_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # |x| = (batch_size, *input_shape): images are flattened to (batch_size, input_size)
        logits = self.layers(x.flatten(1))
        return F.log_softmax(logits, dim=-1)  # |y| = (batch_size, output_size)


def get_hidden_sizes(input_size: int, output_size: int, n_layers: int) -> list[int]:
    """The article's arithmetic progression: n_layers - 1 hidden sizes in equal steps.

    784 -> 10 with n_layers=5 gives [630, 476, 322, 168].
    """
    step = int((input_size - output_size) / n_layers)
    return [input_size - step * i for i in range(1, n_layers)]


def mlp_args(input_shape: tuple[int, ...], n_classes: int, *, n_layers: int, hidden_sizes: list[int] | None,
             use_dropout: bool, dropout_p: float) -> dict:
    input_size = math.prod(input_shape)
    return {
        "input_size": input_size,
        "output_size": n_classes,
        "hidden_sizes": list(hidden_sizes or get_hidden_sizes(input_size, n_classes, n_layers)),
        "use_batch_norm": not use_dropout,
        "dropout_p": dropout_p,
    }


MODEL = BuiltinModel(MLP, mlp_args, batch_norm=True, batch_norm_unless="use_dropout")
