"""The Python API: train and use ptflow models from a notebook or a script.

    import ptflow

    result = ptflow.train(dataset="digits", model="cnn", n_epochs=5)   # the flags, as keywords
    result.run_dir, result.metrics["test_acc"]

    model = ptflow.load("runs/.../model.safetensors")
    model.predict(x)          # class indices into model.classes
    model.predict_proba(x)    # (N, n_classes) probabilities
    model.evaluate()          # the test split, as `ptflow evaluate` computes it
    model.torch_module        # the plain nn.Module

Everything goes through the same code as the command line: the same validation, run folders,
model files and preprocessing, so the API and the CLI give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptflow.config import EVAL_BATCH_SIZE, TrainConfig, preset_values
from ptflow.errors import PtflowError


@dataclass
class TrainResult:
    """What `ptflow.train` returns: the run folder, its headline metrics and the trained model."""

    run_dir: Path
    metrics: dict  # best_epoch, best_valid_loss, valid_acc, test_loss, test_acc, epochs_run, seconds
    model: "Model"
    config: TrainConfig


def train(dataset: str | Any | None = None, model: str | Any | None = None, n_epochs: int | None = None, *,
          preset: str | None = None, **options) -> TrainResult:
    """Train one model, exactly as `ptflow train` with the same options as keywords.

    `dataset` and `model` take what the flags take (a built-in name, a plugin's name, an import
    path "pkg.module:Name"), or the function or class itself, which is recorded by its import path
    (so define it in a module, not in a notebook cell, for its model file to load elsewhere).
    None keeps the default, or the preset's value. Unknown options and bad values raise
    `ptflow.UsageError` with the flag's message.
    """
    given = {"dataset": _named(dataset), "model": _named(model), "n_epochs": n_epochs}
    values = {**preset_values(preset), **{k: v for k, v in given.items() if v is not None}, **options}
    config = TrainConfig.from_dict(values)
    from ptflow.training import folds
    from ptflow.training import train as training

    # --folds K cross-validates first, as `ptflow train` does; summary["cv"] then holds the folds
    summary = folds.cross_validate(config) if config.folds and config.fold is None else training.train_model(config)
    run_dir = Path(summary.pop("run_dir"))
    loaded = load(run_dir / "model.safetensors", device=config.device_name(), trust_code=True)
    return TrainResult(run_dir, summary, loaded, config)


def _named(value):
    """A class or function given to train() as its import path; a name (or None) as it is."""
    if value is None or isinstance(value, str):
        return value
    if callable(value) and hasattr(value, "__module__") and hasattr(value, "__qualname__"):
        return f"{value.__module__}:{value.__qualname__}"
    raise PtflowError(f"expected a name or a class/function, got {type(value).__name__}")


def load(path: str | Path, device: str = "cpu", trust_code: bool = False) -> "Model":
    """A model file, ready to predict. A model whose architecture the file names by import path
    (not built in, not an installed plugin) runs that code: pass trust_code=True only for files
    from people you trust."""
    from ptflow.devices import resolve_device
    from ptflow.models.files import load_model

    return Model(load_model(path, resolve_device(device), trust_code), trust_code)


class Model:
    """A trained classifier and everything needed to use it: classes, input shape, preprocessing.

    Inputs, to predict() and predict_proba(), may be:
    - a numpy array or torch tensor: a batch (N, *input_shape), flat (N, C*H*W), (N, H, W) for
      one-channel images, or a single example; uint8 means raw pixels (0..255), floats mean
      values already on the model's scale (pixels / 255, or raw tabular features);
    - a PIL image, an image file, a folder of images, an .npz (array x) or a .csv of rows,
      read as `ptflow predict` reads them; or a list of images or paths.
    """

    def __init__(self, loaded, trust_code: bool = False):
        self._loaded = loaded
        self._trust_code = trust_code

    @property
    def classes(self) -> list[str]:
        return list(self._loaded.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._loaded.input_shape

    @property
    def meta(self) -> dict:
        """The description stored in the model file: architecture, config, metrics, versions..."""
        return self._loaded.meta

    @property
    def torch_module(self):
        """The plain nn.Module (eval mode). It takes preprocessed floats: see `preprocess`."""
        return self._loaded.model

    @property
    def preprocess(self):
        """The nn.Module that turns raw inputs into the torch_module's inputs (scale, standardise)."""
        return self._loaded.preprocess

    def predict_proba(self, x, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
        """Class probabilities, (N, n_classes) float32."""
        from ptflow.models.inference import predict_proba

        return predict_proba(self._loaded, self._inputs(x), batch_size)

    def predict(self, x, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
        """The most probable class of each input, as indices into `classes`, (N,) int64."""
        return self.predict_proba(x, batch_size).argmax(1)

    def evaluate(self, data_dir: str | None = None, batch_size: int = EVAL_BATCH_SIZE) -> dict:
        """The model's test split rebuilt as at training time, and its accuracy, macro-F1 (each with
        its 95% interval), calibration, per-class precision/recall/F1 and confusion matrix (what
        `ptflow evaluate` prints)."""
        from ptflow.reports.evaluate import judge_loaded

        return judge_loaded(self._loaded, data_dir, batch_size, self._trust_code).report

    def test_split(self, data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(x_test, y_test) as the model was tested: its dataset, ratios and seed, rebuilt.
        x_test holds raw inputs (uint8 pixels for images), ready for predict()."""
        from ptflow.reports.evaluate import rebuild_splits

        splits = rebuild_splits(self._loaded, data_dir, self._trust_code)
        return splits.x_test, splits.y_test

    def _inputs(self, x) -> np.ndarray:
        from ptflow.data.inputs import check_inputs

        if isinstance(x, (str, Path)) or _is_image(x) or (isinstance(x, list) and x and
                                                          all(isinstance(i, (str, Path)) or _is_image(i) for i in x)):
            return self._read(x if isinstance(x, list) else [x])
        if hasattr(x, "detach"):  # a torch tensor
            x = x.detach().cpu().numpy()
        x = np.asarray(x)
        if x.dtype.kind not in "iuf":
            raise PtflowError(f"expected numbers, images or file paths, got an array of {x.dtype}")
        return check_inputs(self._batch(x), self.input_shape, "input")

    def _batch(self, x: np.ndarray) -> np.ndarray:
        """A single example gets its batch dimension; a batch stays as it is."""
        shape = self.input_shape
        single = (x.shape == tuple(shape) or (len(shape) == 3 and shape[0] == 1 and x.shape == tuple(shape[1:]))
                  or (x.ndim == 1 and x.size == int(np.prod(shape))))
        return x[None] if single else x

    def _read(self, items: list) -> np.ndarray:
        from ptflow.data.imaging import style_of, to_input
        from ptflow.data.inputs import collect_inputs

        style = style_of(self.meta)
        scale = self.meta["preprocessing"]["scale"]
        arrays = []
        for item in items:
            if _is_image(item):
                arrays.append(to_input(item, self.input_shape, style)[None])
            else:
                arrays.append(collect_inputs([str(item)], self.input_shape, style, scale)[1])
        if len({a.dtype for a in arrays}) > 1:  # raw pixels beside model-scale floats: bring all to the scale
            arrays = [a.astype(np.float32) * scale if a.dtype == np.uint8 else a for a in arrays]
        return np.concatenate(arrays)

    def __repr__(self) -> str:
        return (f"ptflow.Model({self.meta['model']}, {len(self.classes)} classes, input {tuple(self.input_shape)}, "
                f"from {self.meta.get('path')})")


def _is_image(x) -> bool:
    """A PIL image, recognised without importing PIL for callers that never use one."""
    return type(x).__module__.startswith("PIL.") and hasattr(x, "convert")
