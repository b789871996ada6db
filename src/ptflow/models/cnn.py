"""`--model cnn`: a small convnet for images, stages of Conv3x3 -> MaxPool -> BatchNorm -> ReLU.

Built from the train flags it names in `cnn_args` (channels, dropout_p), whose defaults and help
are TrainConfig's (config.py); `MODEL` tells the registry how, and that it needs images.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ptflow.models.registry import BuiltinModel


class ConvNet(nn.Module):
    """A small convnet: stages of Conv3x3 -> MaxPool -> BatchNorm -> ReLU, then a two-layer head.

    Pooling comes right after the convolution: BatchNorm and ReLU then touch a quarter of the
    pixels, and on CPU those memory-bound layers, not the convolutions, were most of the time.
    """

    returns_log_probs = True  # so training uses NLL, not a second log-softmax

    def __init__(self, input_shape: list[int], output_size: int, channels: list[int], dropout_p: float,
                 hidden_size: int = 128):
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


def cnn_args(input_shape: tuple[int, ...], n_classes: int, *, channels: list[int], dropout_p: float) -> dict:
    return {"input_shape": list(input_shape), "output_size": n_classes, "channels": list(channels),
            "dropout_p": dropout_p}


MODEL = BuiltinModel(ConvNet, cnn_args, batch_norm=True, needs_images=True)
