"""Data augmentation, on the device, one training batch at a time.

Random shifts: each image moves by up to `max_shift` pixels in each direction, filled with
zeros, a fresh draw per image and epoch. For handwriting this is the augmentation that pays
(digits are centred only roughly), and it costs one gather on uint8 data.

Random horizontal flips: each image is mirrored left to right with probability 1/2, a fresh
draw per image and epoch. For photos of things (clothes, objects) a mirrored image is as real as
the original; for handwriting it is not (a mirrored 2 is no digit), so it is off by default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def draw_shifts(n: int, max_shift: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """One (dy, dx) per example of an epoch, |shifts| = (2, n), each in 0..2*max_shift.

    Drawn from the run's own generator (so a resumed run draws the same shifts) once per
    epoch: on a GPU a copy per batch from host memory would wait for every queued kernel.
    """
    return torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator).to(device)


def random_shift(x: torch.Tensor, max_shift: int, shifts: torch.Tensor) -> torch.Tensor:
    """|x| = (batch, channels, height, width) -> the same shape, image i moved by shifts[:, i] - max_shift."""
    batch, _, height, width = x.shape
    dy, dx = shifts
    padded = F.pad(x, (max_shift,) * 4)
    # Every crop as a view: (batch, channels, size, size, height, width); pick one per image.
    crops = padded.unfold(2, height, 1).unfold(3, width, 1)
    return crops[torch.arange(batch, device=x.device), :, dy, dx]


def draw_flips(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """One coin per example of an epoch, |flips| = (n,) bool: drawn once per epoch, as the shifts are."""
    return (torch.rand(n, generator=generator) < 0.5).to(device)


def random_flip(x: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """|x| = (batch, channels, height, width) -> the same shape, image i mirrored where flips[i]."""
    return torch.where(flips[:, None, None, None], x.flip(-1), x)
