"""`ptflow train --folds K`: K-fold cross-validation, then the final model.

On small data one validation split can mislead by several points: which examples land in it
matters as much as the hyperparameters. Cross-validation trains K models, each validated on a
different Kth of the training data (stratified: every fold has each class in proportion; seeded:
the same --seed gives the same folds), and reports each fold's best validation loss and accuracy,
their mean and their standard deviation. The test split is held out before the folds are cut and
is never part of them.

Then the final model is trained as the flags say (the usual train/validation split), judged on
the test split and saved: the fold models estimate how well the recipe generalises, the final
model is the one to use. Fold models are not averaged into an ensemble, so a model file is
always one network that predict, serve and export handle alike.

Each fold is an ordinary run, `<name>-fold1` ... `<name>-foldK`, beside the final run `<name>`,
whose run.json keeps the cross-validation summary under "cv".
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from ptflow import stats
from ptflow.config import TrainConfig
from ptflow.console import info
from ptflow.training import runs, train

FoldCallback = Callable[[int, list[dict]], None]  # (folds done, each done fold's metrics)


def cross_validate(config: TrainConfig, on_fold_end: FoldCallback | None = None, evaluate_test: bool = True,
                   trust_code: bool = True, show_summary: bool = True) -> dict:
    """Train the K folds, then the final model; returns the final run's metrics with "cv" added.

    on_fold_end(i, results) is called after fold i (sweeps prune there); evaluate_test=False
    leaves the final model unjudged (sweep trials: only the winner meets the test split), and
    show_summary=False leaves the folds' table unprinted (a sweep says it in one line a trial).
    """
    name = config.run_name or runs.default_name(config.runs_dir, config.dataset, config.model)
    results = []
    for fold in range(1, config.folds + 1):
        if config.verbose >= 1:
            info(f"\nFold {fold}/{config.folds}: validated on fold {fold}, trained on the others")
        # A fold's model is an estimate, not a product: no --model_fn copy and no temperature.
        fold_config = dataclasses.replace(config, fold=fold, run_name=f"{name}-fold{fold}", model_fn=None,
                                          calibrate=False)
        results.append(train.train_model(fold_config, evaluate_test=False, resume_hint=False, trust_code=trust_code))
        if on_fold_end is not None:
            on_fold_end(fold, results)
    cv = summary(results, [f"{name}-fold{i}" for i in range(1, config.folds + 1)])
    if show_summary:  # the result of cross-validation: printed even with --verbose 0
        info(format_summary(cv, config.seed))
    if config.verbose >= 1:
        info(f"\nFinal model: trained on the train split (--train_ratio {config.train_ratio}), validated on the rest")
    metrics = train.train_model(dataclasses.replace(config, run_name=name), evaluate_test=evaluate_test,
                                trust_code=trust_code)
    runs.write_status(Path(metrics["run_dir"]), cv=cv)
    return {**metrics, "cv": cv}


def summary(results: list[dict], names: list[str]) -> dict:
    """Each fold's best validation loss and accuracy, their mean and sample standard deviation."""
    losses = [r["best_valid_loss"] for r in results]
    accuracies = [r["valid_acc"] for r in results]
    loss_mean, loss_std = stats.mean_std(losses)
    acc_mean, acc_std = stats.mean_std(accuracies)
    return {"folds": len(results), "runs": names, "valid_loss": losses, "valid_acc": accuracies,
            "best_epoch": [r["best_epoch"] for r in results], "valid_loss_mean": loss_mean,
            "valid_loss_std": loss_std, "valid_acc_mean": acc_mean, "valid_acc_std": acc_std}


def format_summary(cv: dict, seed: int) -> str:
    lines = [f"\nCross-validation: {cv['folds']} stratified folds (seed {seed}), best epoch of each",
             f"  {'fold':>4}  {'valid loss':>10}  {'valid acc':>9}  {'epoch':>5}"]
    for i, (loss, acc, epoch) in enumerate(zip(cv["valid_loss"], cv["valid_acc"], cv["best_epoch"]), 1):
        lines.append(f"  {i:>4}  {loss:>10.4f}  {acc:>9.4f}  {epoch:>5}")
    lines.append(f"  {'mean':>4}  {cv['valid_loss_mean']:>10.4f}  {cv['valid_acc_mean']:>9.4f}")
    lines.append(f"  {'std':>4}  {cv['valid_loss_std']:>10.4f}  {cv['valid_acc_std']:>9.4f}")
    return "\n".join(lines)
