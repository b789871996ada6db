"""Imbalanced classes: `ptflow data` measures the imbalance, `--class_weights balanced` weighs the
loss by scikit-learn's rule on the training split, `--sampler balanced` draws every class about
equally often from the loop's seeded generator (so --resume is exact and every process of a
torchrun job draws the same order), and balanced accuracy is scikit-learn's, in runs and evaluate.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_one_line_error, assert_same_run, make_images, stop_after_epoch

from ptflow.config import TrainConfig
from ptflow.data.splits import load_splits
from ptflow.reports.explore import IMBALANCED, imbalance_ratio
from ptflow.training import imbalance, interrupt, steps, train

COUNTS = (240, 60, 30)  # examples of each class: 8 to 1


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory) -> Path:
    x, y = make_images(1200, seed=7)
    keep = np.concatenate([np.flatnonzero(y == k)[:count] for k, count in enumerate(COUNTS)])
    keep = np.random.default_rng(0).permutation(keep)
    path = tmp_path_factory.mktemp("imbalanced") / "imbalanced.npz"
    np.savez(path, x=x[keep], y=y[keep], classes=np.array(["common", "rare", "rarest"]))
    return path


def options(data: Path, runs_dir: Path, name: str, **changes) -> dict:
    return {"dataset": f"npz:{data}", "runs_dir": str(runs_dir), "run_name": name, "n_epochs": 4,
            "batch_size": 32, "verbose": 0, "num_threads": 1, "sampler": "balanced",
            "class_weights": "balanced", **changes}


def test_data_shows_the_imbalance_and_suggests_the_flags(cli, imbalanced, npz_data, tmp_path):
    train_counts = np.bincount(load_splits(f"npz:{imbalanced}").y_train)
    ratio = train_counts.max() / train_counts.min()
    assert ratio >= IMBALANCED
    code, out, err = cli("data", f"npz:{imbalanced}", "--out", tmp_path / "a.png")
    assert code == 0, err
    assert f"imbalance    {ratio:.2f} (largest class / smallest, train split)" in out
    assert "--class_weights balanced" in out and "--sampler balanced" in out and "balanced accuracy" in out

    code, out, err = cli("data", f"npz:{npz_data}", "--out", tmp_path / "b.png")  # about 1:1: no advice
    assert code == 0, err
    assert "imbalance    1." in out and "--class_weights" not in out
    assert imbalance_ratio([5, 0, 3]) == float("inf")


def test_class_weights_are_sklearns_balanced_weights_of_the_train_split(imbalanced, tmp_path, monkeypatch):
    from sklearn.utils.class_weight import compute_class_weight

    y_train = load_splits(f"npz:{imbalanced}").y_train
    expected = compute_class_weight("balanced", classes=np.arange(3), y=y_train)
    assert np.allclose(imbalance.class_weights(y_train, 3), expected, rtol=1e-12)
    counts = np.bincount(y_train)
    assert np.allclose(expected, len(y_train) / (3 * counts))  # n / (K * count_c), by hand
    # A class the training split lacks: never a target, weight 0; K counts the classes present.
    assert imbalance.class_weights(np.array([0, 0, 1]), 3).tolist() == [0.75, 1.5, 0.0]

    used = []  # what training weighs its loss with: the train split's weights, not the whole data's
    real_fit = train.fit
    monkeypatch.setattr(train, "fit", lambda state, prep, data, settings, *a, **k: (
        used.append(settings.class_weights), real_fit(state, prep, data, settings, *a, **k))[1])
    train.train_model(TrainConfig.from_dict(options(imbalanced, tmp_path, "w", n_epochs=1)))
    assert used[0].dtype == torch.float32 and np.allclose(used[0].numpy(), expected, rtol=1e-6)


def test_the_weighted_loss_of_a_whole_split_is_the_mean_of_the_per_class_losses():
    generator = torch.Generator().manual_seed(0)
    y = torch.tensor([0] * 50 + [1] * 10 + [2] * 4)
    log_probs = torch.log_softmax(torch.randn(len(y), 3, generator=generator, dtype=torch.float64), 1)
    weights = torch.tensor(imbalance.class_weights(y.numpy(), 3))
    loss = steps.training_loss(F.nll_loss, log_probs, y, weights)
    per_example = F.nll_loss(log_probs, y, reduction="none")
    per_class = torch.stack([per_example[y == k].mean() for k in range(3)])
    assert loss.item() == pytest.approx(per_class.mean().item(), rel=1e-12)
    assert torch.equal(steps.training_loss(F.nll_loss, log_probs, y, None), F.nll_loss(log_probs, y))  # as before


def test_the_balanced_sampler_draws_every_class_about_equally_often():
    y = torch.tensor([0] * 2400 + [1] * 500 + [2] * 100)[torch.randperm(3000, generator=torch.Generator())]
    order = imbalance.epoch_order(y, torch.Generator().manual_seed(0), "balanced")
    assert len(order) == len(y) and order.min() >= 0 and order.max() < len(y)
    drawn = torch.bincount(y[order], minlength=3)
    sd = (3000 * (1 / 3) * (2 / 3)) ** 0.5  # a binomial's: about 26 draws
    assert (drawn - 1000).abs().max() < 4 * sd, drawn.tolist()  # uniform over classes, not 80/17/3%
    rarest = torch.bincount(order[y[order] == 2], minlength=len(y))[y == 2]
    assert rarest.min() >= 1 and rarest.max() <= 30  # its 100 examples ~10 times each, none left out
    again = imbalance.epoch_order(y, torch.Generator().manual_seed(0), "balanced")
    assert torch.equal(order, again)  # seeded: every process draws this order
    plain = imbalance.epoch_order(y, torch.Generator().manual_seed(0), "random")
    assert torch.equal(plain, torch.randperm(len(y), generator=torch.Generator().manual_seed(0)))  # as before


@pytest.fixture(scope="module")
def runs(tmp_path_factory, imbalanced) -> Path:
    """A run with both flags left alone, and the same run stopped after epoch 2 (not yet resumed)."""
    root = tmp_path_factory.mktemp("runs")
    train.train_model(TrainConfig.from_dict(options(imbalanced, root, "alone")))
    with pytest.raises(interrupt.Interrupted):
        train.train_model(TrainConfig.from_dict(options(imbalanced, root, "stopped")), callbacks=[stop_after_epoch(2)])
    return root


def test_a_balanced_run_resumes_bit_for_bit_and_keeps_its_flags(cli, runs):
    run = runs / "stopped"
    config = json.loads((run / "config.json").read_text())
    assert (config["sampler"], config["class_weights"], config["num_threads"]) == ("balanced", "balanced", 1)
    for flag, value in (("--sampler", "random"), ("--class_weights", "none")):  # another experiment
        code, _, err = cli("train", "--resume", run, flag, value)
        assert code == 2 and f"cannot change {flag}" in err
        assert_one_line_error(err)
    code, out, err = cli("train", "--resume", run)
    assert code == 0, err
    assert "after epoch 2" in out
    assert_same_run(runs / "alone", run)  # weights, optimizer, generators and every epoch's metrics


def test_balanced_accuracy_is_sklearns_in_the_run_evaluate_and_the_report(cli, runs, tmp_path):
    from sklearn.metrics import balanced_accuracy_score

    run = runs / "alone"
    record = json.loads((run / "run.json").read_text())
    saved = np.load(run / "predictions.npz")  # the test predictions training scored
    expected = balanced_accuracy_score(saved["y_true"], saved["y_pred"])
    assert record["test_balanced_accuracy"] == pytest.approx(expected, abs=1e-12)
    low, high = record["test_balanced_accuracy_ci95"]
    assert low <= expected <= high

    code, printed, err = cli("evaluate", "--model_fn", run / "model.safetensors", "--out_dir", tmp_path / "eval")
    assert code == 0, err
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert report["balanced_accuracy"] == record["test_balanced_accuracy"]
    assert report["balanced_accuracy_ci95"] == record["test_balanced_accuracy_ci95"]
    assert f"Balanced accuracy: {expected:.4f}  95% CI [{low:.4f}, {high:.4f}]  (bootstrap" in printed

    code, shown, err = cli("runs", "show", "alone", "--runs_dir", runs)
    assert code == 0 and f"{expected:.4f} [" in next(line for line in shown.splitlines() if "balanced acc" in line)
    code, _, err = cli("report", "alone", "--runs_dir", runs, "--out", tmp_path / "report.html")
    assert code == 0, err
    assert f"<td>balanced accuracy (mean recall)</td><td>{expected:.4f}</td>" in \
        (tmp_path / "report.html").read_text().replace("\n", "")


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun's gloo processes, as tests/test_ddp.py")
def test_two_processes_draw_one_balanced_order_and_train_as_one(imbalanced, tmp_path):
    """Each process slices the same balanced order: without BatchNorm or dropout masks, a 2-process
    run's weights equal a 1-process run's up to float32 summation order (test_ddp.py's bound)."""
    from safetensors.torch import load_file

    # batch 20: 211 training examples make 10 full batches and one of 11, which neither process
    # count drops (a last batch leaving a process under 2 examples is dropped: steps.batch_starts).
    flags = options(imbalanced, tmp_path, "two", batch_size=20, use_dropout=True, dropout_p=0.0)
    command = [sys.executable, "-m", "ptflow", "train", "--nproc_per_node", "2", "--dist_timeout", "30"]
    for key, value in flags.items():
        command += [f"--{key}"] if value is True else [f"--{key}", str(value)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, start_new_session=True)
    assert done.returncode == 0, done.stderr
    train.train_model(TrainConfig.from_dict({**flags, "run_name": "one"}))
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5, worst  # another order per process would differ by the size of a step (~1e-3)
    two = json.loads((tmp_path / "two" / "run.json").read_text())
    assert two["world_size"] == 2 and two["status"] == "finished"
