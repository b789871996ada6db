"""`shapes`: 28x28 drawings of four shapes at random sizes, places and stroke widths.

A dataset plugin is a function ptflow calls with the --data_dir flag (unused here: the data is
drawn, not read) and that returns arrays in the npz layout: x (N, H, W) uint8, y (N,), and
optionally a test split and class names.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ["circle", "square", "triangle", "cross"]


def _draw(kind: int, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    r = rng.uniform(5, 11)
    cx, cy = rng.uniform(r + 1, size - r - 1, size=2)
    width = int(rng.integers(1, 4))
    box = [cx - r, cy - r, cx + r, cy + r]
    if kind == 0:
        draw.ellipse(box, outline=255, width=width)
    elif kind == 1:
        draw.rectangle(box, outline=255, width=width)
    elif kind == 2:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], outline=255, width=width)
    else:
        draw.line([(cx - r, cy - r), (cx + r, cy + r)], fill=255, width=width)
        draw.line([(cx - r, cy + r), (cx + r, cy - r)], fill=255, width=width)
    return np.asarray(image, dtype=np.uint8)


def shapes(data_dir: str | None = None, n_train: int = 2000, n_test: int = 500, seed: int = 0) -> dict:
    """The same drawings every time (seeded), so runs and resumes see the same data."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CLASSES), size=n_train + n_test)
    x = np.stack([_draw(int(k), rng) for k in y])
    return {"x": x[:n_train], "y": y[:n_train], "x_test": x[n_train:], "y_test": y[n_train:],
            "classes": np.array(CLASSES)}
