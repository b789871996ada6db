"""The CPU thread count is a run setting: matrix products split over another number of threads add
their terms in another order, so bit-exact resume holds only on the same count.

Invariants: a run records the count it trained on (torch's default when --num_threads is not
given); `--resume` trains on the recorded count whatever the machine's default is now, and ends
equal to the run left alone; a count given on purpose with --resume is used, with one warning
that exactness is lost; bad counts are one-line usage errors for every command that takes them;
training leaves the caller's own count as it was.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ptflow
from ptflow.config import MAX_THREADS, TrainConfig
from ptflow.training import interrupt, train


@pytest.fixture(autouse=True)
def restore_threads():
    """These tests change this process's count on purpose (as another machine's default would be)."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def threads_seen(monkeypatch) -> list[int]:
    """The thread count each training loop ran on, in this process."""
    seen = []
    original = train.fit

    def fit(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(train, "fit", fit)
    return seen


def options(data: Path, runs_dir: Path, name: str, **changes) -> dict:
    return {"dataset": f"npz:{data}", "runs_dir": str(runs_dir), "run_name": name, "n_epochs": 3,
            "batch_size": 32, "use_dropout": True, "verbose": 0, **changes}


def stopped_after_epoch_1(values: dict) -> Path:
    """A run stopped by a Ctrl-C (SIGINT to this process) at the end of its first epoch."""
    def ctrl_c(state, run_dir):
        if state.epoch == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(interrupt.Interrupted):
        train.train_model(TrainConfig.from_dict(values), callbacks=[ctrl_c])
    return Path(values["runs_dir"]) / values["run_name"]


def recorded(run: Path) -> int | None:
    return json.loads((run / "config.json").read_text())["num_threads"]


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_a_run_records_the_count_it_trained_on(tmp_path, npz_data, threads_seen):
    torch.set_num_threads(1)  # this machine's default, as OMP_NUM_THREADS=1 would make it
    train.train_model(TrainConfig.from_dict(options(npz_data, tmp_path, "default")))
    train.train_model(TrainConfig.from_dict(options(npz_data, tmp_path, "asked", num_threads=2)))
    assert threads_seen == [1, 2]
    assert (recorded(tmp_path / "default"), recorded(tmp_path / "asked")) == (1, 2)
    assert torch.get_num_threads() == 1  # the caller's count, back after the run


def test_resume_trains_on_the_recorded_count_and_ends_as_the_run_left_alone(tmp_path, npz_data, cli, threads_seen):
    train.train_model(TrainConfig.from_dict(options(npz_data, tmp_path, "alone", num_threads=1)))
    torch.set_num_threads(1)
    run = stopped_after_epoch_1(options(npz_data, tmp_path, "stopped"))  # not given: torch's 1, recorded
    assert recorded(run) == 1
    torch.set_num_threads(2)  # the machine's default differs when it is resumed
    code, out, err = cli("train", "--resume", run)
    assert code == 0, err
    assert "warning" not in err
    assert threads_seen == [1, 1, 1]  # alone, stopped, resumed
    assert recorded(run) == 1 and same_weights(tmp_path / "alone", run)


def test_a_count_given_on_purpose_with_resume_is_used_with_one_warning(tmp_path, npz_data, cli, threads_seen):
    run = stopped_after_epoch_1(options(npz_data, tmp_path, "stopped", num_threads=1))
    code, out, err = cli("train", "--resume", run, "--num_threads", "2")
    assert code == 0, err
    assert err.count("warning:") == 1 and len(err.strip().splitlines()) == 1, err
    assert "--num_threads 1 and continues with 2" in err and "bit-exact resume needs the same --num_threads" in err
    assert threads_seen == [1, 2] and recorded(run) == 2


def test_the_recorded_count_given_again_or_a_config_files_none_keep_resume_exact(tmp_path, npz_data, cli):
    run = stopped_after_epoch_1(options(npz_data, tmp_path, "stopped", num_threads=1))
    config = tmp_path / "original.toml"
    config.write_text(f'dataset = "npz:{npz_data}"\nbatch_size = 32\n')  # num_threads: none, torch's default
    code, _, err = cli("train", "--resume", run, "--config", config, "--num_threads", "1")
    assert code == 0 and "warning" not in err, err
    assert recorded(run) == 1


@pytest.mark.parametrize("value", ["0", "-1", str(MAX_THREADS + 1), "two", "1.5"])
@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "report"])
def test_a_bad_count_is_one_line_for_every_command(cli, tmp_path, command, value):
    target = {"train": ["--dataset", "digits", "--runs_dir", tmp_path],
              "evaluate": ["--model_fn", tmp_path / "none.safetensors"],
              "predict": ["--model_fn", tmp_path / "none.safetensors"],
              "report": ["missing-run", "--runs_dir", tmp_path]}[command]
    code, out, err = cli(command, *target, "--num_threads", value)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "--num_threads" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists() and list(tmp_path.iterdir()) == []


def test_a_bad_count_in_a_config_file_or_from_python_is_one_clear_error(tmp_path, cli):
    config = tmp_path / "c.toml"
    config.write_text('num_threads = "many"\n')
    code, _, err = cli("train", "--config", config, "--runs_dir", tmp_path / "runs")
    assert code == 2 and "num_threads must be an integer" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ptflow.UsageError, match="--num_threads must be in 1.."):
        ptflow.train("digits", num_threads=0, runs_dir=str(tmp_path / "runs"))


def test_evaluate_runs_on_the_count_asked_for(tmp_path, npz_data, cli, monkeypatch):
    train.train_model(TrainConfig.from_dict(options(npz_data, tmp_path, "run", n_epochs=1)))
    from ptflow.reports import evaluate

    seen = []
    original = evaluate.evaluate_model
    monkeypatch.setattr(evaluate, "evaluate_model",
                        lambda *a, **k: (seen.append(torch.get_num_threads()), original(*a, **k)))
    torch.set_num_threads(2)
    code, _, err = cli("evaluate", "--model_fn", tmp_path / "run" / "model.safetensors", "--num_threads", "1",
                       "--out_dir", tmp_path / "eval")
    assert code == 0, err
    assert seen == [1]


def test_the_launcher_leaves_the_warning_to_the_process_that_trains(tmp_path, npz_data, cli, monkeypatch):
    """`--resume --nproc_per_node N` resolves the run twice (the launcher checks, then the main
    process decides): the warning is said once, by the process that trains."""
    from ptflow.training import launch

    run = stopped_after_epoch_1(options(npz_data, tmp_path, "stopped", num_threads=1))
    started = []
    monkeypatch.setattr(launch, "launch_workers", lambda plan, worker_args, run_dir: started.append(worker_args) or 0)
    code, _, err = cli("train", "--resume", run, "--num_threads", "2", "--nproc_per_node", "2")
    assert code == 0 and err == "", err
    assert "--num_threads=2" in started[0]  # the processes get it, and warn
