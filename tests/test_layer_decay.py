"""--layer_decay (training/finetune.py): layer-wise learning rates from timm's layer order.

Checked on timm's tiny test_resnet, whose layers from the input are its stem (conv1, bn1) and
layer1..layer4, then the head (fc): each layer's rate is lr * RATE ** (its distance from the
head), the head's lr * --head_lr_mult; schedules keep the ratios at every step; a stopped run
resumes to the run left alone; bad values and models without a layer order are one-line errors.
"""

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from helpers import assert_one_line_error, assert_refused_before_a_run, assert_same_run, stop_after_epoch

from ptflow.config import TrainConfig
from ptflow.errors import UsageError
from ptflow.training import finetune, interrupt, train
from ptflow.training.steps import build_optimizer, build_scheduler

MODEL = "timm:test_resnet"
# test_resnet's top-level modules holding parameters, by distance from the head
DEPTH = {"conv1": 5, "bn1": 5, "layer1": 4, "layer2": 3, "layer3": 2, "layer4": 1, "fc": 0}


def tiny_resnet() -> nn.Module:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=3, in_chans=1)


def lr_of_each_parameter(optimizer) -> dict[int, float]:
    return {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}


@pytest.mark.parametrize("head_lr_mult", [1.0, 3.0])
def test_each_layer_trains_at_lr_times_rate_to_its_distance_from_the_head(head_lr_mult):
    model = tiny_resnet()
    lr, rate = 0.01, 0.7
    optimizer = build_optimizer(model, "adamw", lr, 0.05, head_lr_mult=head_lr_mult, layer_decay=rate)
    rates = lr_of_each_parameter(optimizer)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(rates) == len(list(model.parameters()))
    for name, p in model.named_parameters():
        depth = DEPTH[name.split(".")[0]]
        expected = lr * head_lr_mult if depth == 0 else lr * rate ** depth
        assert rates[id(p)] == pytest.approx(expected, rel=1e-12), name
    assert [g["params"] for g in optimizer.param_groups][-1] == [model.fc.weight, model.fc.bias]
    # weight decay as without layer decay: the optimizer's, on every parameter (1-D ones included)
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.05}


@pytest.mark.parametrize("name, warmup", [("cosine", 5), ("cosine", 0), ("onecycle", 0), ("none", 5)])
def test_every_schedule_scales_every_layer_alike(name, warmup):
    model = tiny_resnet()
    optimizer = build_optimizer(model, "sgd", 0.1, 0.0, head_lr_mult=2.0, layer_decay=0.5)
    scales = [g["lr"] / 0.1 for g in optimizer.param_groups]
    scheduler = build_scheduler(optimizer, name, total_steps=20, warmup_steps=warmup)
    seen = set()
    for _ in range(15):
        optimizer.step()
        scheduler.step()
        base = optimizer.param_groups[-1]["lr"] / scales[-1]  # what --lr has become at this step
        seen.add(round(base, 12))
        for g, scale in zip(optimizer.param_groups, scales):
            assert g["lr"] == pytest.approx(base * scale, rel=1e-9)
        assert finetune.scheduled_lr(optimizer) == pytest.approx(base, rel=1e-9)  # what metrics.jsonl shows
    assert len(seen) > 1 or name == "none"  # the schedule did move the rates


def options(data: Path, runs_dir: Path, name: str, **changes) -> dict:
    return {"dataset": f"npz:{data}", "runs_dir": str(runs_dir), "run_name": name, "model": MODEL,
            "n_epochs": 3, "batch_size": 32, "verbose": 0, "num_threads": 1, "layer_decay": 0.6,
            "head_lr_mult": 2.0, "optimizer": "adamw", "weight_decay": 0.05, "scheduler": "cosine",
            "warmup_epochs": 1, "freeze_backbone_epochs": 1, **changes}


def test_a_layer_decay_run_resumes_to_the_run_left_alone(tmp_path, npz_data, cli):
    pytest.importorskip("timm")
    train.train_model(TrainConfig.from_dict(options(npz_data, tmp_path, "alone")))
    status = json.loads((tmp_path / "alone" / "run.json").read_text())
    scales = [g["lr_scale"] for g in status["lr_groups"]]
    assert scales == pytest.approx([0.6 ** 5, 0.6 ** 4, 0.6 ** 3, 0.6 ** 2, 0.6, 2.0])

    with pytest.raises(interrupt.Interrupted):
        train.train_model(TrainConfig.from_dict(options(npz_data, tmp_path, "stopped")),
                          callbacks=[stop_after_epoch(1)])
    code, _, err = cli("train", "--resume", tmp_path / "stopped", "--layer_decay", "0.8")
    assert code == 2 and "cannot change --layer_decay" in err, err
    assert_one_line_error(err)
    code, _, err = cli("train", "--resume", tmp_path / "stopped")
    assert code == 0, err
    assert_same_run(tmp_path / "alone", tmp_path / "stopped")


@pytest.mark.parametrize("flags, words", [
    (["--layer_decay", "0"], "--layer_decay must be a rate in (0, 1]"),
    (["--layer_decay", "-0.5"], "--layer_decay must be a rate in (0, 1]"),
    (["--layer_decay", "1.5"], "--layer_decay must be a rate in (0, 1]"),
    (["--layer_decay", "nan"], "--layer_decay must be a finite number"),
    (["--layer_decay", "x"], "--layer_decay"),
    (["--layer_decay", "0.7"], "the built-in network mlp declares no layer order"),
    (["--layer_decay", "0.7", "--model", "cnn"], "declares no layer order"),
])
def test_bad_values_are_one_line_errors(tmp_path, npz_data, cli, flags, words):
    assert_refused_before_a_run(cli, tmp_path, "--dataset", f"npz:{npz_data}", "--n_epochs", "2", *flags,
                                words=(words,))


def test_a_model_without_a_layer_order_is_refused_in_one_line():
    with pytest.raises(UsageError, match="group_matcher") as caught:
        finetune.param_groups(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), 0.1, 1.0, 0.7)
    assert "\n" not in str(caught.value)


def test_rate_one_is_off():
    model = tiny_resnet()
    optimizer = build_optimizer(model, "adam", 0.01, 0.0, layer_decay=1.0)
    assert len(optimizer.param_groups) == 1 and finetune.lr_groups_of(optimizer) == {}
