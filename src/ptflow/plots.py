"""The pictures: learning curves, sample grids, confusion matrices. PNG files, written atomically.

Each function returns the PNG's bytes and also writes them to `path` unless it is None (the
HTML report embeds the bytes). matplotlib is imported here only, with the Agg backend (no
display needed).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from ptflow.files import atomic_write_bytes


def _figure(**kwargs):
    """A figure of its own, from matplotlib's object API: drawing never touches pyplot's global
    backend, so a notebook's own inline plots keep working after ptflow draws."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def to_png(fig, path: str | Path | None = None) -> bytes:
    """The figure as PNG bytes (closed afterwards), also written to path unless it is None."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    if fig.canvas.manager is not None:  # made through pyplot (Optuna's views): let pyplot forget it
        import matplotlib.pyplot as plt

        plt.close(fig)
    png = buffer.getvalue()
    if path is not None:
        atomic_write_bytes(path, png)
    return png


def learning_curve(histories: dict[str, list[dict]], path: str | Path | None) -> bytes:
    """Train and validation loss per epoch; several runs overlay in one figure."""
    fig = _figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for name, history in histories.items():
        epochs = [h["epoch"] for h in history]
        prefix = f"{name} " if len(histories) > 1 else ""
        line, = ax.plot(epochs, [h["train_loss"] for h in history], label=f"{prefix}train")
        ax.plot(epochs, [h["valid_loss"] for h in history], "--", color=line.get_color(), label=f"{prefix}valid")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (per sample)")
    if all(h["train_loss"] > 0 and h["valid_loss"] > 0 for hs in histories.values() for h in hs):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    return to_png(fig, path)


def to_display(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) uint8 -> (N, H, W) or (N, H, W, 3) for imshow; tabular data is not drawable."""
    return images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)


def image_grid(images: np.ndarray, titles: list[str], path: str | Path | None, colors: list[str] | None = None,
               columns: int = 10, suptitle: str | None = None) -> bytes:
    n = max(len(images), 1)
    rows = math.ceil(n / columns)
    fig = _figure(figsize=(columns * 1.2, rows * 1.4))
    axes = fig.subplots(rows, columns, squeeze=False)
    shown = to_display(images) if len(images) else []
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(shown[i], cmap="gray" if shown[i].ndim == 2 else None)
            ax.set_title(titles[i], fontsize=7, color=(colors[i] if colors else "black"))
    if suptitle:
        fig.suptitle(suptitle)
    return to_png(fig, path)


def samples_per_class(x: np.ndarray, y: np.ndarray, classes: list[str], path: str | Path, per_class: int = 10):
    """A grid with one row per class (at most 20 classes), for `ptflow data`."""
    picked, titles = [], []
    for label, name in list(enumerate(classes))[:20]:
        index = np.flatnonzero(y == label)[:per_class]
        picked += list(index)
        titles += [name] * len(index)
    image_grid(x[picked], titles, path, columns=per_class)


def confusion_matrix(matrix: np.ndarray, classes: list[str], path: str | Path | None) -> bytes:
    size = max(4.0, 0.5 * len(classes) + 2)
    fig = _figure(figsize=(size, size))
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=90 if len(classes) > 10 else 0)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= 20:
        threshold = matrix.max() / 2 if matrix.size else 0
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                    color="white" if count > threshold else "black")
    return to_png(fig, path)
