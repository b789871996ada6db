"""`ptflow sweep --space finetune` (sweep/space.py): a tiny sweep of a timm network with the named
space runs, and every trial's recorded config lies in the space the study stored; flags and
--param take fields out of it; a model it cannot search is a one-line error before anything runs."""

import json
import os

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("timm")

from helpers import assert_one_line_error  # noqa: E402

from ptflow.config import TrainConfig  # noqa: E402
from ptflow.sweep.space import finetune_space, parse_space  # noqa: E402

MODEL = "timm:test_resnet"


def flags(npz_data, runs_dir, epochs=2):
    return ["--dataset", f"npz:{npz_data}", "--model", MODEL, "--n_epochs", str(epochs), "--batch_size", "32",
            "--num_threads", "1", "--runs_dir", runs_dir, "--pruner", "none"]


def inside(spec, value) -> bool:
    if spec.kind == "choice":
        return value in spec.choices
    return spec.low <= value <= spec.high and (not spec.is_int or (value - spec.low) % (spec.step or 1) == 0)


def test_a_tiny_finetune_sweep_runs_and_every_trial_lies_in_the_space(cli, npz_data, tmp_path):
    code, _, err = cli("sweep", "--trials", "2", "--space", "finetune", "--study", "ft", *flags(npz_data, tmp_path))
    assert code == 0, err
    code, _, err = cli("sweep", "--trials", "1", "--space", "finetune", "--study", "ft",  # the same space: resumed
                       *flags(npz_data, tmp_path))
    assert code == 0, err
    study = optuna.load_study(study_name="ft", storage=f"sqlite:///{tmp_path}/sweeps.db")
    specs = parse_space("finetune", [], TrainConfig.from_dict({"model": MODEL, "n_epochs": 2}))
    assert sorted(study.user_attrs["ptflow_params"]) == sorted(map(str, specs))
    assert {s.name for s in specs} == {"lr", "layer_decay", "freeze_backbone_epochs", "ema"}
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    for trial in study.trials:
        config = json.loads(open(os.path.join(trial.user_attrs["run_dir"], "config.json")).read())
        for spec in specs:  # what the trial trained with is what was drawn, and it lies in the space
            assert config[spec.name] == trial.params[spec.name] and inside(spec, config[spec.name]), spec.name
        status = json.loads(open(os.path.join(trial.user_attrs["run_dir"], "run.json")).read())
        assert ("lr_groups" in status) == (config["layer_decay"] < 1)


def test_flags_and_params_take_their_fields_out_of_the_space():
    base = TrainConfig.from_dict({"model": MODEL, "n_epochs": 10, "lr": 3e-4})
    specs = parse_space("finetune", ["ema=choice:0,0.9"], base, fixed={"lr"})
    assert sorted(map(str, specs)) == ["ema=choice:0.0,0.9", "freeze_backbone_epochs=int:0:3",
                                       "layer_decay=float:0.5:1.0"]
    # the head-only epochs stay below --n_epochs and at most half the run; one epoch freezes none
    assert "freeze_backbone_epochs=int:0:1" in finetune_space(TrainConfig.from_dict({"n_epochs": 3}))
    assert not any(s.startswith("freeze") for s in finetune_space(TrainConfig.from_dict({"n_epochs": 1})))


def test_a_model_without_a_layer_order_is_one_line_before_anything_runs(cli, npz_data, tmp_path):
    runs = tmp_path / "runs"
    code, _, err = cli("sweep", "--trials", "1", "--space", "finetune", "--dataset", f"npz:{npz_data}",
                       "--model", "mlp", "--runs_dir", runs)
    assert code == 2, err
    assert_one_line_error(err)
    assert "--space finetune" in err and "--layer_decay 1.0" in err
    assert not runs.exists()  # no storage, no run folder
    code, _, err = cli("sweep", "--trials", "1", "--space", "nope", "--dataset", f"npz:{npz_data}")
    assert code == 2 and "--space" in err, err
