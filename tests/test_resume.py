"""Exact resume: a run stopped after epoch k and resumed ends exactly as the same run left alone.

"Exactly" means equal tensors (torch.equal): final weights, optimizer moments, best weights and
random generator states, and equal per-epoch metrics. The stops here are real signals (SIGINT
sent to this process) caught by the training loop's handler.
"""

import json
import os
import platform
import signal
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error, assert_same_run, epoch_metrics, make_images, signal_on_step

from ptflow.config import TrainConfig
from ptflow.training import interrupt, train
from ptflow.training.checkpoint import read_checkpoint, save_checkpoint


def options(data: Path, runs_dir: Path, name: str, **changes) -> dict:
    return {"dataset": f"npz:{data}", "runs_dir": str(runs_dir), "run_name": name, "n_epochs": 5,
            "batch_size": 32, "verbose": 0, **changes}


def as_flags(values: dict) -> list[str]:
    flags = []
    for key, value in values.items():
        if value is True:
            flags.append(f"--{key}")
        else:
            flags += [f"--{key}", ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return flags


def signal_after_epoch(k: int):
    """A train callback that sends this process SIGINT at the end of epoch k, like a Ctrl-C."""
    def callback(state, run_dir):
        if state.epoch == k:
            os.kill(os.getpid(), signal.SIGINT)
    return callback


def stopped_run(values: dict, k: int) -> Path:
    with pytest.raises(interrupt.Interrupted):
        train.train_model(TrainConfig.from_dict(values), callbacks=[signal_after_epoch(k)])
    run = Path(values["runs_dir"]) / values["run_name"]
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    return run


MODELS = {
    "batchnorm-adam-cosine": {"scheduler": "cosine"},
    "dropout-adamw-onecycle-early-stop": {"use_dropout": True, "dropout_p": 0.4, "optimizer": "adamw",
                                          "scheduler": "onecycle", "weight_decay": 0.01, "early_stop": 3},
    "cnn-sgd": {"model": "cnn", "channels": [4, 8], "optimizer": "sgd", "lr": 0.05},
}


@pytest.mark.parametrize("flags", MODELS.values(), ids=MODELS.keys())
def test_resumed_run_equals_the_run_left_alone(tmp_path, npz_data, cli, flags):
    reference = options(npz_data, tmp_path, "alone", **flags)
    train.train_model(TrainConfig.from_dict(reference))
    run = stopped_run(options(npz_data, tmp_path, "stopped", **flags), k=2)
    assert read_checkpoint(run / "checkpoint.safetensors")[1]["epoch"] == 2
    assert len(epoch_metrics(run)) == 2
    code, out, err = cli("train", "--resume", run)
    assert code == 0, err
    assert "Resuming" in out and "after epoch 2" in out
    assert_same_run(tmp_path / "alone", run)
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "finished" and status["resumed"][0]["after_epoch"] == 2


@pytest.mark.parametrize("flags", [{"use_dropout": True, "scheduler": "cosine"},
                                   {"model": "cnn", "augment_shift": 1, "augment_flip": True, "sampler": "balanced"}],
                         ids=["mlp", "cnn-augmented"])
def test_a_stop_mid_epoch_resumes_at_the_next_batch(tmp_path, npz_data, cli, monkeypatch, flags):
    train.train_model(TrainConfig.from_dict(options(npz_data, tmp_path, "alone", **flags)))

    # the third step of the third epoch
    monkeypatch.setattr(train, "epoch_bar_factory", signal_on_step(epoch=2, step=3))
    with pytest.raises(interrupt.Interrupted):
        train.train_model(TrainConfig.from_dict(options(npz_data, tmp_path, "stopped", **flags)))
    monkeypatch.undo()
    run = tmp_path / "stopped"
    meta = read_checkpoint(run / "checkpoint.safetensors")[1]
    assert meta["epoch"] == 2 and meta["position"]["batches"] == 3  # two epochs and three steps done
    code, out, err = cli("train", "--resume", run)
    assert code == 0, err
    assert "at batch 4 of epoch 3" in out
    assert_same_run(tmp_path / "alone", run)


def test_a_run_stopped_before_its_first_epoch_starts_again(tmp_path, npz_data, cli, monkeypatch):
    train.train_model(TrainConfig.from_dict(options(npz_data, tmp_path, "alone")))
    run = stopped_run(options(npz_data, tmp_path, "stopped"), k=1)
    (run / "checkpoint.safetensors").unlink()  # as if stopped during epoch 1
    code, out, err = cli("train", "--resume", "stopped", "--runs_dir", tmp_path)
    assert code == 0, err
    assert "from the start" in out
    assert_same_run(tmp_path / "alone", run)


def test_a_finished_run_trains_longer_with_a_larger_n_epochs(tmp_path, npz_data, cli):
    train.train_model(TrainConfig.from_dict(options(npz_data, tmp_path, "long", n_epochs=5)))
    train.train_model(TrainConfig.from_dict(options(npz_data, tmp_path, "short", n_epochs=3)))
    code, _, err = cli("train", "--resume", tmp_path / "short")
    assert code == 2 and "already finished" in err
    # the original command line with --resume added is accepted: unchanged values are no change
    code, _, err = cli("train", *as_flags(options(npz_data, tmp_path, "short", n_epochs=5)), "--resume", "short")
    assert code == 0, err
    assert_same_run(tmp_path / "long", tmp_path / "short")
    assert json.loads((tmp_path / "short" / "config.json").read_text())["n_epochs"] == 5


def snapshot(run: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir())}


@pytest.fixture
def stopped(tmp_path, npz_data):
    data = tmp_path / "data.npz"
    data.write_bytes(npz_data.read_bytes())
    return stopped_run(options(data, tmp_path / "runs", "stopped", scheduler="cosine"), k=2)


@pytest.mark.parametrize("flags, expected", [
    (["--lr", "0.01"], "cannot change --lr (0.001 -> 0.01)"),
    (["--model", "cnn"], "cannot change --model"),
    (["--n_epochs", "8"], "learning-rate schedule was planned for 5 epochs"),
])
def test_resume_refuses_changes_that_make_another_experiment(stopped, cli, flags, expected):
    before = snapshot(stopped)
    code, _, err = cli("train", "--resume", stopped, *flags)
    assert code == 2 and expected in err
    assert_one_line_error(err)
    assert snapshot(stopped) == before  # nothing lost, nothing changed


def test_resume_refuses_changed_data(stopped, cli, tmp_path):
    before = snapshot(stopped)
    x, y = make_images(300, seed=5)
    np.savez(tmp_path / "data.npz", x=x, y=y, classes=np.array(["top", "middle", "bottom"]))
    code, _, err = cli("train", "--resume", stopped)
    assert code == 1 and "the data changed" in err
    assert_one_line_error(err)
    assert snapshot(stopped) == before


def rewrite_checkpoint(run: Path, change) -> None:
    tensors, meta = read_checkpoint(run / "checkpoint.safetensors")
    change(tensors, meta)
    save_checkpoint(run / "checkpoint.safetensors", tensors, meta)


def test_resume_refuses_changed_code_unless_allowed(stopped, cli, tmp_path, npz_data):
    def older_code(tensors, meta):
        meta["identity"]["code"].update(source="0" * 64, ptflow="0.0.9", git_commit="abc123")

    rewrite_checkpoint(stopped, older_code)
    before = snapshot(stopped)
    code, _, err = cli("train", "--resume", stopped)
    assert code == 1 and "ptflow 0.0.9 -> " in err and "source files changed" in err
    assert "--allow_changed_code" in err
    assert_one_line_error(err)
    assert snapshot(stopped) == before
    code, _, err = cli("train", "--resume", stopped, "--allow_changed_code")
    assert code == 0 and "changed code" in err
    values = options(tmp_path / "data.npz", tmp_path / "runs", "alone", scheduler="cosine")
    train.train_model(TrainConfig.from_dict(values))
    assert_same_run(tmp_path / "runs" / "alone", stopped)  # only the recorded identity was altered


def test_resume_refuses_a_checkpoint_of_another_architecture(stopped, cli):
    def wider(tensors, meta):
        meta["identity"]["model_args"]["hidden_sizes"][0] += 1

    rewrite_checkpoint(stopped, wider)
    code, _, err = cli("train", "--resume", stopped)
    assert code == 1 and "the model changed (hidden_sizes" in err
    assert_one_line_error(err)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing-rng", "missing-moment"])
def test_corrupt_checkpoint_is_a_clear_error(stopped, cli, damage):
    path = stopped / "checkpoint.safetensors"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-1000])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 64)
    elif damage == "missing-rng":
        rewrite_checkpoint(stopped, lambda tensors, meta: tensors.pop("rng/shuffle"))
    else:  # would load, and fail only at the next optimizer step
        rewrite_checkpoint(stopped, lambda tensors, meta: tensors.pop("optimizer/0/exp_avg"))
    before = snapshot(stopped)
    code, _, err = cli("train", "--resume", stopped)
    assert code == 1 and "checkpoint" in err
    assert_one_line_error(err)
    assert snapshot(stopped) == before


def test_unknown_or_live_runs_are_refused(stopped, cli, tmp_path):
    code, _, err = cli("train", "--resume", "no-such-run", "--runs_dir", tmp_path / "runs")
    assert code == 1 and "no run 'no-such-run'" in err
    assert_one_line_error(err)
    status = json.loads((stopped / "run.json").read_text())
    status.update(status="running", pid=os.getpid(), host=platform.node())  # this very process: alive
    (stopped / "run.json").write_text(json.dumps(status))
    code, _, err = cli("train", "--resume", stopped)
    assert code == 1 and "still running" in err


def test_checkpoint_is_safetensors_with_json_metadata(stopped):
    data = (stopped / "checkpoint.safetensors").read_bytes()
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    meta = json.loads(header["__metadata__"]["ptflow"])
    assert meta["format"] == "ptflow.checkpoint" and meta["epoch"] == 2 and meta["bad_epochs"] >= 0
    assert {"cpu", "shuffle"} <= {k.split("/")[1] for k in header if k.startswith("rng/")}
    assert any(k.startswith("optimizer/") and k.endswith("/exp_avg") for k in header)
    assert any(k.startswith("best/") for k in header)
    assert meta["scheduler"]["last_epoch"] == 2 * 6  # 192 training examples, batches of 32: 6 steps an epoch
