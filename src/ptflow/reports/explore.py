"""`ptflow data NAME`: the article's look at the data before training."""

from __future__ import annotations

from pathlib import Path

from ptflow import plots
from ptflow.console import info
from ptflow.data.bad_images import BadImages
from ptflow.data.splits import describe, load_splits

MAX_ROWS = 30  # class rows printed in full; with more classes, the largest and smallest ten
# An imbalance ratio (largest class / smallest, training split) from which the imbalance flags are
# suggested. At 3:1 a constant guess of the larger of two classes already scores 75% accuracy,
# so accuracy stops telling a model from a guess; balanced sets sit far below (MNIST 1.24,
# Fashion-MNIST and CIFAR-10 1.0), so they are never told to change anything.
IMBALANCED = 3.0


def explore_dataset(name: str, data_dir: str | None = None, target: str | None = None, train_ratio: float = 0.8,
                    test_ratio: float = 0.2, seed: int = 0, out: str | None = None, bad_images: str = "fail",
                    max_bad_fraction: float = 0.01) -> dict:
    """Print what a training run would see of dataset `name`; bad_images as `ptflow train --bad_images`."""
    bad = BadImages(bad_images, max_bad_fraction)
    splits = load_splits(name, data_dir, target, train_ratio, test_ratio, seed, bad_images=bad,
                         decode=())  # image files: listed; the statistics and samples decode a few
    summary = describe(splits)
    summary["bad_images"] = bad.skipped
    sizes = summary["sizes"]
    info(f"dataset      {name}")
    info(f"input shape  {tuple(summary['input_shape'])} ({summary['dtype']})")
    info(f"splits       train {sizes['train']}, validation {sizes['val']}, test {sizes['test']}")
    info(f"value range  {summary['value_range'][0]:g} .. {summary['value_range'][1]:g} (train split)")
    info(f"train mean   {_short(summary['train_mean'])}   (after scaling to the model's range)")
    info(f"train std    {_short(summary['train_std'])}")
    if bad_images == "skip":  # what training with --bad_images skip would leave out, file by file
        info(f"unreadable   {len(bad.skipped)} image file(s) of {bad.total} skipped")
        for item in bad.skipped:
            info(f"  {item['file']}: {item['reason']}")
    info(f"classes      {len(splits.classes)}")
    _class_table(splits.classes, summary["class_counts"])
    summary["imbalance_ratio"] = imbalance_ratio(summary["class_counts"]["train"])
    for line in imbalance_lines(summary["imbalance_ratio"]):
        info(line)
    if splits.is_image:
        path = Path(out or f"{_stem(name)}-samples.png")
        index, titles = plots.pick_per_class(splits.y_train, splits.classes)
        plots.image_grid(splits.take("train", index), titles, path, columns=plots.PER_CLASS)
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


def imbalance_ratio(train_counts: list[int]) -> float:
    """The largest class's training examples over the smallest's; inf when a class has none."""
    smallest = min(train_counts)
    return max(train_counts) / smallest if smallest else float("inf")


def imbalance_lines(ratio: float) -> list[str]:
    """The ratio, and from IMBALANCED on, the flags that train for every class and the number that judges it."""
    if ratio == float("inf"):
        return ["imbalance    a class has no training examples: the model cannot learn it"]
    lines = [f"imbalance    {ratio:.2f} (largest class / smallest, train split)"]
    if ratio >= IMBALANCED:
        lines += ["  imbalanced: train with --class_weights balanced (weigh the loss by 1 / class count)",
                  "  or --sampler balanced (draw every class equally often); judge by balanced accuracy"]
    return lines


def _short(values: list[float]) -> str:
    shown = ", ".join(f"{v:.4f}" for v in values[:6])
    return f"[{shown}{', ...' if len(values) > 6 else ''}]"


def _stem(name: str) -> str:
    kind, _, path = name.partition(":")
    return Path(path).stem if path else kind
