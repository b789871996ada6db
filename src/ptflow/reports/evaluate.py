"""`ptflow evaluate`: judge a saved model on its dataset's test split, with numbers and pictures.

The test split is rebuilt exactly as at training time (same dataset, ratios and seed, all stored
in the model file), so a held-out test split is the same examples the model never saw. Each
number comes with its 95% interval (metrics.py), and each example's prediction is kept in
predictions.npz, for `ptflow runs compare` to test two models on the same examples.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptflow import plots, predictions
from ptflow.config import EVAL_BATCH_SIZE
from ptflow.console import info, warn
from ptflow.data.bad_images import BadImages
from ptflow.data.imaging import interpolation_of
from ptflow.data.splits import Splits, load_splits
from ptflow.devices import resolve_device
from ptflow.errors import PtflowError, shown
from ptflow.files import atomic_write_bytes, refuse_target, write_json
from ptflow.models.files import LoadedModel, load_model
from ptflow.models.inference import predict_proba
from ptflow.reports.metrics import classification_report, format_report

PICTURES = ("samples.png", "mistakes.png")  # of image datasets only
OUTPUTS = ("evaluation.json", predictions.FILE, "confusion_matrix.png", "reliability.png", *PICTURES)


@dataclass(kw_only=True)
class Judgement:
    """A model's predictions on its test split, and the report made of them."""

    loaded: LoadedModel
    splits: Splits
    probs: np.ndarray  # |probs| = (n_test, n_classes)
    report: dict
    seconds: float  # inference time


def judge(model_fn: str, data_dir: str | None = None, device: str = "auto",
          batch_size: int = EVAL_BATCH_SIZE, trust_code: bool = False) -> Judgement:
    """Load the model, rebuild its test split, predict it and score the predictions."""
    loaded = load_model(model_fn, resolve_device(device), trust_code)
    return judge_loaded(loaded, data_dir, batch_size, trust_code)


def judge_loaded(loaded: LoadedModel, data_dir: str | None = None, batch_size: int = EVAL_BATCH_SIZE,
                 trust_code: bool = False) -> Judgement:
    """Rebuild a loaded model's test split as at training time, predict it and score the predictions."""
    splits = rebuild_splits(loaded, data_dir, trust_code)
    started = time.perf_counter()
    probs = predict_proba(loaded, splits.x_test, batch_size)
    seconds = time.perf_counter() - started
    report = classification_report(splits.y_test, probs, len(loaded.classes))
    report["temperature"] = loaded.temperature
    report["images_per_second"] = len(probs) / max(seconds, 1e-9)
    return Judgement(loaded=loaded, splits=splits, probs=probs, report=report, seconds=seconds)


def rebuild_splits(loaded: LoadedModel, data_dir: str | None = None, trust_code: bool = False) -> Splits:
    """The splits a model was trained with, rebuilt from the dataset, ratios and seed in its file."""
    config = loaded.meta["config"]
    splits = load_splits(config["dataset"], data_dir or config.get("data_dir"), config.get("target"),
                         config["train_ratio"], config["test_ratio"], config["seed"], trust_code=trust_code,
                         origin=loaded.meta["path"], bad_images=BadImages.of_run(config),
                         image_size=config.get("image_size"), crop_pct=config.get("crop_pct"), decode=("test",),
                         interpolation=interpolation_of(loaded.meta))
    if splits.fingerprint != loaded.meta.get("data_fingerprint"):
        warn(f"the data of {config['dataset']} differ from what the model was trained on")
    if splits.classes != loaded.classes:  # class i of the data would be judged as the model's class i
        raise PtflowError(f"{config['dataset']}: its {len(splits.classes)} classes are not the model's "
                          f"{len(loaded.classes)} ({_differ(splits.classes, loaded.classes)}): it cannot judge "
                          f"this model")
    return splits


def _differ(data: list[str], model: list[str]) -> str:
    """The first difference between two lists of class names, as a few words."""
    i = next((i for i, (a, b) in enumerate(zip(data, model)) if a != b), min(len(data), len(model)))
    theirs = shown(data[i]) if i < len(data) else "none"
    ours = shown(model[i]) if i < len(model) else "none"
    return f"class {i} is {theirs} in the data, {ours} in the model"


def evaluate_model(model_fn: str, data_dir: str | None = None, device: str = "auto", out_dir: str | None = None,
                   batch_size: int = EVAL_BATCH_SIZE, trust_code: bool = False) -> dict:
    out = Path(out_dir) if out_dir else Path(model_fn).with_name(Path(model_fn).stem + "-eval")
    for name in OUTPUTS:  # a FIFO or a device where a file goes is refused before any work
        refuse_target(out / name)
    judged = judge(model_fn, data_dir, device, batch_size, trust_code)
    report, classes, splits = judged.report, judged.loaded.classes, judged.splits
    info(format_report(report, classes, judged.loaded.temperature))
    info(f"\n{len(judged.probs)} test examples in {judged.seconds:.3f}s ({report['images_per_second']:,.0f}/s)")
    write_json(out / "evaluation.json", report)
    predictions.save(out / predictions.FILE, splits.y_test, judged.probs,
                     splits.test_fingerprint(), judged.loaded.meta.get("data_fingerprint"))
    plots.confusion_matrix(np.array(report["confusion_matrix"]), classes, out / "confusion_matrix.png")
    plots.reliability_diagram(report["reliability"], report["ece"], out / "reliability.png")
    if splits.is_image:
        write_pictures(splits.x_test, splits.y_test, judged.probs, classes, out)
    info(f"Wrote {out}/")
    return report


def most_confident_mistakes(y: np.ndarray, probs: np.ndarray, count: int) -> np.ndarray:
    """Indices of the wrong predictions, the most confident first."""
    y_pred = probs.argmax(1)
    wrong = np.flatnonzero(y_pred != y)
    return wrong[np.argsort(-probs[wrong, y_pred[wrong]])][:count]


def pictures(x: np.ndarray, y: np.ndarray, probs: np.ndarray, classes: list[str], count: int = 40) -> dict:
    """The article's notebook view (samples with predicted and true labels) and the worst mistakes, as PNGs."""
    y_pred = probs.argmax(1)
    titles = [f"{classes[p]} ({classes[t]})" for p, t in zip(y_pred[:count], y[:count])]
    colors = ["black" if p == t else "red" for p, t in zip(y_pred[:count], y[:count])]
    samples = plots.image_grid(x[:count], titles, None, colors, suptitle="predicted (true); red: wrong")
    worst = most_confident_mistakes(y, probs, count)
    titles = [f"{classes[y_pred[i]]} {probs[i, y_pred[i]]:.2f} ({classes[y[i]]})" for i in worst]
    mistakes = plots.image_grid(x[worst], titles, None, ["red"] * len(worst),
                                suptitle="most confident mistakes: predicted p (true)")
    return dict(zip(PICTURES, (samples, mistakes)))


def write_pictures(x: np.ndarray, y: np.ndarray, probs: np.ndarray, classes: list[str], out: Path,
                   count: int = 40) -> None:
    for name, png in pictures(x, y, probs, classes, count).items():
        atomic_write_bytes(out / name, png)
