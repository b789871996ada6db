"""`ptflow data NAME`: the article's look at the data before training."""

from __future__ import annotations

from pathlib import Path

from ptflow import plots
from ptflow.console import info
from ptflow.data.splits import describe, load_splits


def run(name: str, data_dir: str | None = None, target: str | None = None, train_ratio: float = 0.8,
        test_ratio: float = 0.2, seed: int = 0, out: str | None = None) -> dict:
    splits = load_splits(name, data_dir, target, train_ratio, test_ratio, seed)
    summary = describe(splits)
    sizes = summary["sizes"]
    info(f"dataset      {name}")
    info(f"input shape  {tuple(summary['input_shape'])} ({summary['dtype']})")
    info(f"splits       train {sizes['train']}, validation {sizes['val']}, test {sizes['test']}")
    info(f"value range  {summary['value_range'][0]:g} .. {summary['value_range'][1]:g} (train split)")
    info(f"train mean   {_short(summary['train_mean'])}   (after scaling to the model's range)")
    info(f"train std    {_short(summary['train_std'])}")
    info(f"classes      {len(splits.classes)}")
    width = max(5, *(len(c) for c in splits.classes))
    info(f"  {'class':<{width}}  {'train':>7}  {'val':>7}  {'test':>7}")
    for i, cls in enumerate(splits.classes):
        counts = summary["class_counts"]
        info(f"  {cls:<{width}}  {counts['train'][i]:7d}  {counts['val'][i]:7d}  {counts['test'][i]:7d}")
    if splits.is_image:
        path = Path(out or f"{_stem(name)}-samples.png")
        plots.samples_per_class(splits.x_train, splits.y_train, splits.classes, path)
        info(f"sample grid  {path}")
    return summary


def _short(values: list[float]) -> str:
    shown = ", ".join(f"{v:.4f}" for v in values[:6])
    return f"[{shown}{', ...' if len(values) > 6 else ''}]"


def _stem(name: str) -> str:
    kind, _, path = name.partition(":")
    return Path(path).stem if path else kind
