"""The networks: plain nn.Modules, shapes in, log-probabilities out.

registry.py names them (`mlp`, `cnn`); a model file stores the name and the constructor's
keyword arguments, so the registry rebuilds it. Both return log-softmax scores, as the article's
network does; the loss is cross-entropy, which takes log-probabilities and logits alike.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn as nn
import torch.nn.functional as F

from ptflow.errors import UsageError


class Block(nn.Module):
    """The article's block: Linear -> LeakyReLU -> BatchNorm1d (or Dropout)."""

    def __init__(self, input_size: int, output_size: int, use_batch_norm: bool = True, dropout_p: float = 0.3):
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
                 use_batch_norm: bool = True, dropout_p: float = 0.3):
        super().__init__()
        sizes = [input_size, *hidden_sizes]
        blocks = [Block(a, b, use_batch_norm, dropout_p) for a, b in zip(sizes, sizes[1:])]
        self.layers = nn.Sequential(*blocks, nn.Linear(sizes[-1], output_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # |x| = (batch_size, *input_shape): images are flattened to (batch_size, input_size)
        logits = self.layers(x.flatten(1))
        return F.log_softmax(logits, dim=-1)  # |y| = (batch_size, output_size)


class ConvNet(nn.Module):
    """A small convnet: stages of Conv3x3 -> MaxPool -> BatchNorm -> ReLU, then a two-layer head.

    Pooling comes right after the convolution: BatchNorm and ReLU then touch a quarter of the
    pixels, and on CPU those memory-bound layers, not the convolutions, were most of the time.
    """

    returns_log_probs = True  # so training uses NLL, not a second log-softmax

    def __init__(self, input_shape: list[int], output_size: int, channels: list[int] = (16, 32, 64),
                 hidden_size: int = 128, dropout_p: float = 0.3):
        super().__init__()
        c, h, w = input_shape
        stages = []
        for out_channels in channels:
            stage = [nn.Conv2d(c, out_channels, 3, padding=1, bias=False)]
            if min(h, w) >= 2:  # tiny inputs (8x8 digits) run out of pixels to pool
                stage.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            stages.append(nn.Sequential(*stage, nn.BatchNorm2d(out_channels), nn.ReLU()))
            c = out_channels
        self.features = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c * h * w, hidden_size), nn.ReLU(),
            nn.Dropout(dropout_p), nn.Linear(hidden_size, output_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # |x| = (batch_size, channels, height, width)
        return F.log_softmax(self.head(self.features(x)), dim=-1)


def get_hidden_sizes(input_size: int, output_size: int, n_layers: int) -> list[int]:
    """The article's arithmetic progression: n_layers - 1 hidden sizes in equal steps.

    784 -> 10 with n_layers=5 gives [630, 476, 322, 168].
    """
    step = int((input_size - output_size) / n_layers)
    return [input_size - step * i for i in range(1, n_layers)]


def mlp_args(input_shape: tuple[int, ...], n_classes: int, *, n_layers: int = 5,
             hidden_sizes: list[int] | None = None, use_dropout: bool = False, dropout_p: float = 0.3) -> dict:
    input_size = int(torch.Size(input_shape).numel())
    return {
        "input_size": input_size,
        "output_size": n_classes,
        "hidden_sizes": list(hidden_sizes or get_hidden_sizes(input_size, n_classes, n_layers)),
        "use_batch_norm": not use_dropout,
        "dropout_p": dropout_p,
    }


def cnn_args(input_shape: tuple[int, ...], n_classes: int, *, channels: list[int] = (16, 32, 64),
             dropout_p: float = 0.3) -> dict:
    if len(input_shape) != 3:
        raise UsageError(f"--model cnn needs image data (C, H, W); this dataset's inputs are {tuple(input_shape)}")
    return {"input_shape": list(input_shape), "output_size": n_classes, "channels": list(channels),
            "dropout_p": dropout_p}


# How each built-in network is built from the train flags. The keyword-only parameters are named
# as the flags, and they are all the flags it reads: a report shows a run only those that apply.
BUILDERS = {"mlp": mlp_args, "cnn": cnn_args}


def builtin_args(name: str, input_shape: tuple[int, ...], n_classes: int, **flags) -> dict:
    """Constructor arguments of the built-in network `name` from the train flags; JSON, stored in the model file."""
    if name not in BUILDERS:
        raise ValueError(f"not a built-in network: {name!r}")
    own = train_flags(name)
    return BUILDERS[name](input_shape, n_classes, **{k: v for k, v in flags.items() if k in own})


def train_flags(name: str) -> set[str]:
    """The train flags network `name` is built from: none for a model that is not built in (--model_args)."""
    if name not in BUILDERS:
        return set()
    parameters = inspect.signature(BUILDERS[name]).parameters.values()
    return {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def model_flags() -> set[str]:
    """Every train flag that builds some built-in network (n_layers, channels...)."""
    return set().union(*map(train_flags, BUILDERS))


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
