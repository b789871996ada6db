"""`ptflow data NAME`: the article's look at the data before training."""

from __future__ import annotations

from pathlib import Path

from ptflow import plots
from ptflow.console import info
from ptflow.data.splits import describe, load_splits

MAX_ROWS = 30  # class rows printed in full; with more classes, the largest and smallest ten


def explore_dataset(name: str, data_dir: str | None = None, target: str | None = None, train_ratio: float = 0.8,
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
    _class_table(splits.classes, summary["class_counts"])
    if splits.is_image:
        path = Path(out or f"{_stem(name)}-samples.png")
        plots.samples_per_class(splits.x_train, splits.y_train, splits.classes, path)
        info(f"sample grid  {path}")
    return summary


def _class_table(classes: list[str], counts: dict[str, list[int]]) -> None:
    """One row per class, or, beyond MAX_ROWS classes, the ten with most and fewest training examples."""
    rows = list(range(len(classes)))
    if len(classes) > MAX_ROWS:
        rows = sorted(rows, key=lambda i: (-counts["train"][i], i))
        rows = rows[:10] + [None] + rows[-10:]
        info(f"  the 10 largest and 10 smallest classes by training examples ({len(classes) - 20:,} more)")
    width = min(40, max(5, *(len(classes[i]) for i in rows if i is not None)))
    info(f"  {'class':<{width}}  {'train':>7}  {'val':>7}  {'test':>7}")
    for i in rows:
        if i is None:
            info(f"  {'...':<{width}}")
            continue
        name = classes[i] if len(classes[i]) <= width else classes[i][:width - 3] + "..."
        info(f"  {name:<{width}}  {counts['train'][i]:7d}  {counts['val'][i]:7d}  {counts['test'][i]:7d}")


def _short(values: list[float]) -> str:
    shown = ", ".join(f"{v:.4f}" for v in values[:6])
    return f"[{shown}{', ...' if len(values) > 6 else ''}]"


def _stem(name: str) -> str:
    kind, _, path = name.partition(":")
    return Path(path).stem if path else kind
