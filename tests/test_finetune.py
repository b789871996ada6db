"""Fine-tuning controls (training/finetune.py): --ema, --freeze_backbone_epochs, --head_lr_mult,
--warmup_epochs and --drop_path, checked against invariants: the frozen backbone equals its
initial tensors bit for bit, the kept weights are the better of the raw and EMA ones by the
recorded validation losses, a resumed run equals the run left alone, the learning rates follow
their closed forms."""

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from helpers import assert_one_line_error, assert_refused_before_a_run, assert_same_run, signal_on_step
from safetensors.torch import load_file

from ptflow.config import TrainConfig
from ptflow.training import finetune, interrupt, train
from ptflow.training.checkpoint import read_checkpoint
from ptflow.training.loop import TrainState, record_epoch
from ptflow.training.steps import build_optimizer, build_scheduler


def options(data: Path, runs_dir: Path, name: str, **changes) -> dict:
    return {"dataset": f"npz:{data}", "runs_dir": str(runs_dir), "run_name": name, "n_epochs": 4,
            "batch_size": 32, "verbose": 0, "n_layers": 2, **changes}


def signal_after_epoch(k: int):
    def callback(state, run_dir):
        if state.epoch == k:
            os.kill(os.getpid(), signal.SIGINT)
    return callback


# --- EMA ------------------------------------------------------------------------------------------

def test_ema_weights_differ_from_raw_and_the_better_is_saved(tmp_path, npz_data, cli):
    code, out, err = cli("train", "--dataset", f"npz:{npz_data}", "--runs_dir", tmp_path, "--run_name", "ema",
                         "--n_epochs", "4", "--batch_size", "32", "--n_layers", "2", "--ema", "0.9")
    assert code == 0, err
    run = tmp_path / "ema"
    tensors, meta = read_checkpoint(run / "checkpoint.safetensors")
    raw = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    ema = {k[len("ema/module."):]: v for k, v in tensors.items() if k.startswith("ema/module.")}
    assert raw.keys() == ema.keys()
    assert any(not torch.equal(raw[k], ema[k]) for k in raw if raw[k].is_floating_point())
    history = meta["history"]
    losses = {(h["epoch"], "raw"): h["valid_loss"] for h in history}
    losses.update({(h["epoch"], "ema"): h["ema_valid_loss"] for h in history})
    status = json.loads((run / "run.json").read_text())
    best = min(losses.values())
    assert status["best_valid_loss"] == best
    assert losses[(status["best_epoch"], status["best_weights_from"])] == best
    saved = load_file(run / "model.safetensors")
    assert all(torch.equal(saved[k], tensors[f"best/{k}"]) for k in raw)  # the best snapshot is what is saved
    which = "EMA weights" if status["best_weights_from"] == "ema" else "raw weights"
    assert f"Best epoch {status['best_epoch']} ({which}" in out


def _toy_state(decay: float = 0.5) -> TrainState:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    optimizer = build_optimizer(model, "sgd", 0.1, 0.0)
    return TrainState(model, optimizer, None, torch.Generator(), ema=finetune.build_ema(model, decay))


def test_the_kept_weights_are_the_better_of_raw_and_ema():
    state = _toy_state()
    finetune.update_ema(state.ema, state.model)  # the first update copies
    with torch.no_grad():
        for p in state.model.parameters():
            p.add_(1.0)
    finetune.update_ema(state.ema, state.model)  # halfway: differs from both
    record_epoch(state, 1.0, valid_loss=0.9, valid_acc=0.5, seconds=0.0, ema=(0.8, 0.6))
    assert state.best_from == "ema" and state.best_loss == 0.8
    assert all(torch.equal(state.best_weights[k], v) for k, v in state.ema.module.state_dict().items())
    record_epoch(state, 1.0, valid_loss=0.7, valid_acc=0.7, seconds=0.0, ema=(0.75, 0.7))
    assert state.best_from == "raw" and state.best_epoch == 2
    assert all(torch.equal(state.best_weights[k], v) for k, v in state.model.state_dict().items())
    assert state.history[-1]["valid_loss"] == 0.7 and state.history[-1]["ema_valid_loss"] == 0.75


# --- exact resume ---------------------------------------------------------------------------------

RESUMED = {"ema": {"ema": 0.9, "scheduler": "cosine", "warmup_epochs": 1},
           "freeze-head-lr": {"freeze_backbone_epochs": 3, "head_lr_mult": 5.0, "optimizer": "adamw",
                              "weight_decay": 0.05},
           "cnn-ema-freeze": {"model": "cnn", "channels": [4, 8], "ema": 0.7, "freeze_backbone_epochs": 1,
                              "head_lr_mult": 2.0, "scheduler": "cosine", "warmup_epochs": 2}}


@pytest.mark.parametrize("flags", RESUMED.values(), ids=RESUMED.keys())
def test_resume_after_two_of_four_epochs_equals_the_run_left_alone(tmp_path, npz_data, cli, flags):
    train.train_model(TrainConfig.from_dict(options(npz_data, tmp_path, "alone", **flags)))
    with pytest.raises(interrupt.Interrupted):
        train.train_model(TrainConfig.from_dict(options(npz_data, tmp_path, "stopped", **flags)),
                          callbacks=[signal_after_epoch(2)])
    for flag, value in flags.items():  # hyperparameters: fixed on resume
        if flag in ("ema", "head_lr_mult", "freeze_backbone_epochs", "warmup_epochs"):
            code, _, err = cli("train", "--resume", tmp_path / "stopped", f"--{flag}", str(type(value)(value / 2)))
            assert code == 2 and f"cannot change --{flag}" in err, err
            assert_one_line_error(err)
    code, _, err = cli("train", "--resume", tmp_path / "stopped")
    assert code == 0, err
    assert_same_run(tmp_path / "alone", tmp_path / "stopped")


def test_a_stop_mid_epoch_with_ema_in_the_frozen_phase_resumes_exactly(tmp_path, npz_data, cli, monkeypatch):
    flags = {"ema": 0.8, "freeze_backbone_epochs": 2, "n_epochs": 3}
    train.train_model(TrainConfig.from_dict(options(npz_data, tmp_path, "alone", **flags)))
    monkeypatch.setattr(train, "epoch_bar_factory", signal_on_step(epoch=1, step=3))  # inside frozen epoch 2
    with pytest.raises(interrupt.Interrupted):
        train.train_model(TrainConfig.from_dict(options(npz_data, tmp_path, "stopped", **flags)))
    monkeypatch.undo()
    code, out, err = cli("train", "--resume", tmp_path / "stopped")
    assert code == 0, err
    assert "at batch 4 of epoch 2" in out
    assert_same_run(tmp_path / "alone", tmp_path / "stopped")


# --- frozen backbone ------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_the_backbone_stays_bit_for_bit_until_the_frozen_epochs_end(tmp_path, npz_data, monkeypatch, model):
    initial = {}
    freeze = finetune.freeze_backbone

    def first_seen(net, frozen):  # called at each epoch's start: the first call sees the initial weights
        if not initial:
            initial.update({k: v.clone() for k, v in net.state_dict().items()})
        freeze(net, frozen)

    monkeypatch.setattr(finetune, "freeze_backbone", first_seen)
    seen = []

    def after_epoch(state, run_dir):
        head = {n for n, p in state.model.named_parameters() if id(p) in finetune.head_parameter_ids(state.model)}
        weights = state.model.state_dict()
        backbone = [k for k in weights if k not in head]
        seen.append((all(torch.equal(weights[k], initial[k]) for k in backbone),
                     any(not torch.equal(weights[k], initial[k]) for k in head),
                     len(state.optimizer.state)))

    # AdamW's decoupled decay would move a frozen weight if the optimizer touched it at all
    values = options(npz_data, tmp_path, model, model=model, channels=[4, 8], n_epochs=3, freeze_backbone_epochs=2,
                     optimizer="adamw", weight_decay=0.5)
    train.train_model(TrainConfig.from_dict(values), callbacks=[after_epoch])
    assert [untouched for untouched, _, _ in seen] == [True, True, False]
    assert all(head_moved for _, head_moved, _ in seen)
    assert seen[0][2] == seen[1][2] == 2 < seen[2][2]  # optimizer state for the head's weight and bias only


# --- learning rates -------------------------------------------------------------------------------

def test_head_lr_mult_makes_two_groups_that_every_schedule_scales_alike():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    optimizer = build_optimizer(model, "adam", 0.01, 0.0, head_lr_mult=10)
    backbone, head = optimizer.param_groups
    assert backbone["lr"] == 0.01 and head["lr"] == pytest.approx(0.1)
    assert {id(p) for p in head["params"]} == {id(model[2].weight), id(model[2].bias)}
    for name in ("cosine", "onecycle"):
        optimizer = build_optimizer(model, "adam", 0.01, 0.0, head_lr_mult=10)
        scheduler = build_scheduler(optimizer, name, total_steps=20, warmup_steps=0)
        for _ in range(7):
            optimizer.step()
            scheduler.step()
        backbone, head = optimizer.param_groups
        assert head["lr"] == pytest.approx(10 * backbone["lr"]) and backbone["lr"] != 0.01, name


def test_get_classifier_names_the_head_where_the_model_has_one():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)  # a Linear inside the body, after the head: not the head
            self.classifier = nn.Conv2d(3, 2, 1)

        def get_classifier(self):
            return self.classifier

    net = Net()
    assert finetune.head_module(net) is net.classifier


def test_warmup_then_cosine_follows_its_closed_form_and_resumes_exactly():
    lr, warmup, total = 0.1, 4, 12
    param = nn.Parameter(torch.zeros(1))

    def schedule():
        optimizer = torch.optim.SGD([param], lr=lr)
        return optimizer, build_scheduler(optimizer, "cosine", total_steps=total, warmup_steps=warmup)

    optimizer, scheduler = schedule()
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    for k in range(warmup):  # linear from lr / warmup up to lr
        assert rates[k] == pytest.approx(lr * (1 / warmup + (1 - 1 / warmup) * k / warmup)), k
    for k in range(warmup, total):  # then cosine from lr towards 0 over the remaining steps
        assert rates[k] == pytest.approx(lr * (1 + math.cos(math.pi * (k - warmup) / (total - warmup))) / 2), k
    # the state as a checkpoint stores it (JSON), restored into a fresh schedule after 6 steps
    optimizer, scheduler = schedule()
    for _ in range(6):
        optimizer.step()
        scheduler.step()
    saved = json.loads(json.dumps(scheduler.state_dict()))
    optimizer, scheduler = schedule()
    scheduler.load_state_dict(saved)
    optimizer.param_groups[0]["lr"] = scheduler.get_last_lr()[0]  # what the optimizer's own state restores
    resumed = []
    for _ in range(6, total):
        resumed.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert resumed == rates[6:]


# --- drop path and refusals -----------------------------------------------------------------------

def test_drop_path_reaches_models_that_are_not_built_in():
    config = TrainConfig.from_dict({"model": "my_pkg.nets:Net", "drop_path": 0.1})
    assert finetune.model_kwargs_for(config) == {"drop_path_rate": 0.1}
    assert finetune.model_kwargs_for(TrainConfig.from_dict({"model": "my_pkg.nets:Net"})) == {}


@pytest.mark.parametrize("flags, words", [
    (["--ema", "1"], "--ema"),
    (["--ema", "-0.1"], "--ema"),
    (["--ema", "nan"], "--ema"),
    (["--head_lr_mult", "0"], "--head_lr_mult"),
    (["--head_lr_mult", "inf"], "--head_lr_mult"),
    (["--freeze_backbone_epochs", "3"], "--freeze_backbone_epochs"),
    (["--freeze_backbone_epochs", "-1"], "--freeze_backbone_epochs"),
    (["--warmup_epochs", "5"], "--warmup_epochs"),
    (["--warmup_epochs", "1", "--scheduler", "onecycle"], "onecycle"),
    (["--drop_path", "0.1"], "no drop path"),
    (["--drop_path", "1"], "--drop_path"),
])
def test_bad_values_are_one_line_errors(tmp_path, npz_data, cli, flags, words):
    assert_refused_before_a_run(cli, tmp_path, "--dataset", f"npz:{npz_data}", "--n_epochs", "3", *flags,
                                words=(words,))


def test_a_model_without_a_head_is_a_usage_error():
    from ptflow.errors import UsageError

    with pytest.raises(UsageError, match="classifier head"):
        finetune.param_groups(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()), 0.1, head_lr_mult=2)
