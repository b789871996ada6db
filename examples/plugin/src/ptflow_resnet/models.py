"""ResNetSmall: a residual convnet for 28x28-ish images, sized to train in minutes on a CPU.

ptflow calls it as ResNetSmall(input_shape=[C, H, W], n_classes=N, **model_args) and trains it
with cross-entropy on its output, so it returns plain logits.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input (projected when the shape changes), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False), nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False), nn.BatchNorm2d(out_channels),
        )
        self.skip = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                      nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class ResNetSmall(nn.Module):
    """Stem (conv, pool: 28 -> 14 px), then one stage per width, each halving the size after the
    first, global average pooling and a linear head. Pooling in the stem puts the costly 3x3
    convolutions at a quarter of the pixels: on a CPU that is most of the time saved."""

    def __init__(self, input_shape: list[int], n_classes: int, widths: list[int] = (32, 64, 128),
                 blocks_per_stage: int = 1, dropout_p: float = 0.1):
        super().__init__()
        channels = input_shape[0]
        self.stem = nn.Sequential(nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(2))
        stages, previous = [], widths[0]
        for i, width in enumerate(widths):
            for j in range(blocks_per_stage):
                stride = 2 if i > 0 and j == 0 else 1
                stages.append(BasicBlock(previous, width, stride))
                previous = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout_p),
                                  nn.Linear(previous, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # |x| = (batch, C, H, W) -> |logits| = (batch, n_classes)
        return self.head(self.stages(self.stem(x)))
