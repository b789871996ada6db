"""`ptflow train`: data -> model -> optimizer -> loop -> test -> save, in that order.

Takes a validated TrainConfig; everything below gets plain values from it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ptflow import plots, runs
from ptflow.checkpoint import save_model, versions
from ptflow.config import TrainConfig
from ptflow.console import epoch_bar_factory, info
from ptflow.data import Splits, fit_preprocessing, load_splits
from ptflow.devices import resolve_device
from ptflow.errors import PtflowError
from ptflow.files import write_json
from ptflow.models import MODELS, Preprocess, model_args
from ptflow.trainer import (LoopSettings, TrainState, build_optimizer, build_scheduler, evaluate, fit,
                            steps_per_epoch)


def to_device(splits: Splits, device: torch.device) -> dict[str, torch.Tensor]:
    """The splits as tensors on the device, images still uint8 (4x smaller than float32)."""
    arrays = {"x_train": splits.x_train, "y_train": splits.y_train, "x_val": splits.x_val,
              "y_val": splits.y_val, "x_test": splits.x_test, "y_test": splits.y_test}
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in arrays.items()}


def build_state(config: TrainConfig, splits: Splits, device: torch.device) -> tuple[TrainState, dict]:
    torch.manual_seed(config.seed)  # initial weights and dropout masks follow the seed
    args = model_args(config.model, splits.input_shape, len(splits.classes), n_layers=config.n_layers,
                      hidden_sizes=config.hidden_sizes, use_dropout=config.use_dropout,
                      dropout_p=config.dropout_p, channels=config.channels)
    model = MODELS[config.model](**args).to(device)
    if config.model == "cnn" and device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)  # oneDNN's fast layout for convolutions
    optimizer = build_optimizer(model, config.optimizer, config.lr, config.weight_decay)
    total_steps = config.n_epochs * steps_per_epoch(len(splits.y_train), config.batch_size)
    scheduler = build_scheduler(optimizer, config.scheduler, config.lr, total_steps)
    generator = torch.Generator().manual_seed(config.seed)
    return TrainState(model, optimizer, scheduler, generator), args


def run(config: TrainConfig, callbacks: list[Callable[[TrainState, Path], None]] = ()) -> dict:
    """Train one model as the config says; returns the run's summary (also in run.json).

    Each callback is called as callback(state, run_dir) after every epoch (sweeps prune there).
    """
    started = time.time()
    device = resolve_device(config.device_name())
    splits = load_splits(config.dataset, config.data_dir, config.target, config.train_ratio,
                         config.test_ratio, config.seed)
    info(f"Train: {tuple(splits.x_train.shape)}  Valid: {tuple(splits.x_val.shape)}  "
         f"Test: {tuple(splits.x_test.shape)}  classes: {len(splits.classes)}  device: {device}")
    prep = fit_preprocessing(splits.x_train, config.normalize)
    preprocess = Preprocess(splits.input_shape, prep.scale, prep.mean, prep.std).to(device)
    state, args = build_state(config, splits, device)
    if config.verbose >= 1:
        info(str(state.model))
    run_dir = runs.create(config.runs_dir, config.dataset, config.model, config.run_name)
    runs.write_status(run_dir, status="running", started=started, dataset=config.dataset, model=config.model)
    write_json(run_dir / "config.json", config.to_dict())
    write_json(run_dir / "env.json", runs.environment(config.seed, splits.fingerprint, str(device)))
    data = to_device(splits, device)
    forward_model = torch.compile(state.model) if config.compile else None

    def on_epoch_end(s: TrainState) -> None:
        runs.append_metrics(run_dir, s.history[-1])
        for callback in callbacks:
            callback(s, run_dir)

    settings = LoopSettings(config.n_epochs, config.batch_size, config.early_stop, config.precision, config.verbose)
    try:
        fit(state, preprocess, data, settings, forward_model,
            on_epoch_end=on_epoch_end,
            progress_factory=epoch_bar_factory(config.n_epochs, config.verbose))
    except BaseException as exc:
        runs.write_status(run_dir, status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                          finished=time.time(), error=type(exc).__name__)
        raise
    if state.best_weights is None:
        runs.write_status(run_dir, status="failed", finished=time.time(), error="diverged")
        raise PtflowError("training diverged (the validation loss was never finite); try a lower --lr")
    return _finish(config, splits, prep, args, state, preprocess, data, run_dir, started)


def _finish(config, splits, prep, args, state, preprocess, data, run_dir: Path, started: float) -> dict:
    """Judge on the test split (once, selecting nothing), then save the model and the plots."""
    test_loss, test_acc = evaluate(lambda x: state.model(preprocess(x)), state.model, data["x_test"],
                                   data["y_test"], precision=config.precision)
    best = state.history[state.best_epoch - 1]
    metrics = {"best_epoch": state.best_epoch, "best_valid_loss": state.best_loss,
               "valid_acc": best["valid_acc"], "test_loss": test_loss, "test_acc": test_acc,
               "epochs_run": state.epoch, "seconds": round(time.time() - started, 2)}
    meta = {"model": config.model, "model_args": args, "classes": splits.classes,
            "input_shape": list(splits.input_shape), "preprocessing": prep.to_dict(),
            "image_style": splits.image_style, "dataset": config.dataset,
            "data_fingerprint": splits.fingerprint, "config": config.to_dict(), "metrics": metrics,
            "versions": versions(), "run": str(run_dir)}
    save_model(run_dir / "model.safetensors", state.model, meta)
    if config.model_fn:
        save_model(config.model_fn, state.model, meta, state.optimizer)
    plots.learning_curve({run_dir.name: state.history}, run_dir / "learning_curve.png")
    runs.write_status(run_dir, status="finished", finished=time.time(), **metrics)
    info(f"Best epoch {state.best_epoch}: valid_loss={state.best_loss:.4e}  valid_acc={best['valid_acc']:.4f}")
    info(f"Test accuracy: {test_acc:.4f}")
    info(f"Saved {config.model_fn or run_dir / 'model.safetensors'} (run folder {run_dir})")
    return metrics
