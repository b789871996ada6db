"""Signals to a real `ptflow train` process: SIGTERM and Ctrl-C stop it cleanly, `kill -9` loses
nothing but the epoch in progress, and in every case `--resume` ends with the weights of the same
run left alone."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ptflow.training.checkpoint import read_checkpoint

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX signals")

N_EPOCHS = 20  # long enough that a signal sent after epoch 3 lands mid-training


def flags(data: Path, runs_dir: Path, name: str) -> list[str]:
    # The run left alone trains in this process, the stopped one in a child: the same thread count, named
    return ["--dataset", f"npz:{data}", "--runs_dir", str(runs_dir), "--run_name", name, "--n_epochs",
            str(N_EPOCHS), "--batch_size", "16", "--use_dropout", "--scheduler", "cosine", "--verbose", "1",
            "--num_threads", "1"]


@pytest.fixture(scope="module")
def left_alone(tmp_path_factory, npz_data) -> Path:
    from helpers import run_cli

    runs_dir = tmp_path_factory.mktemp("alone")
    assert run_cli("train", *flags(npz_data, runs_dir, "alone")) == 0
    return runs_dir / "alone"


def start_and_signal(data: Path, runs_dir: Path, signum: int) -> subprocess.CompletedProcess:
    """Start `ptflow train`, send `signum` once epoch 3 is reported, wait for the process to end."""
    command = [sys.executable, "-m", "ptflow", "train", *flags(data, runs_dir, "run")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = ""
    for line in process.stdout:
        out += line
        if line.startswith("Epoch(3/"):
            process.send_signal(signum)
            break
    rest, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, out + rest, err)


def assert_same_weights(a: Path, b: Path) -> None:
    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    lines = [[{k: v for k, v in json.loads(line).items() if k != "seconds"}
              for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (a, b)]
    assert lines[0] == lines[1]


@pytest.mark.parametrize("signum, exit_code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly_and_resume_matches(tmp_path, npz_data, cli, left_alone, signum, exit_code):
    done = start_and_signal(npz_data, tmp_path, signum)
    run = tmp_path / "run"
    assert done.returncode == exit_code, done.stderr
    assert f"ptflow train --resume {run}" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "ptflow train: interrupted" and "Traceback" not in done.stderr
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "interrupted"
    epoch = read_checkpoint(run / "checkpoint.safetensors")[1]["epoch"]
    assert 3 <= epoch < N_EPOCHS
    assert len((run / "metrics.jsonl").read_text().splitlines()) == epoch

    code, out, err = cli("train", "--resume", run)
    assert code == 0, err
    assert_same_weights(left_alone, run)


def test_kill_9_leaves_the_last_checkpoint_intact(tmp_path, npz_data, cli, left_alone):
    done = start_and_signal(npz_data, tmp_path, signal.SIGKILL)
    run = tmp_path / "run"
    assert done.returncode == -signal.SIGKILL
    assert json.loads((run / "run.json").read_text())["status"] == "running"  # it had no chance to say
    code, out, _ = cli("runs", "--runs_dir", tmp_path)
    assert code == 0 and "crashed" in out  # its process is gone
    # epoch 3 was printed before its checkpoint was written: the kill may have come in between
    assert read_checkpoint(run / "checkpoint.safetensors")[1]["epoch"] >= 2  # loads: not torn

    code, out, err = cli("train", "--resume", "run", "--runs_dir", tmp_path)
    assert code == 0, err
    assert_same_weights(left_alone, run)
    assert not list(run.glob(".*.tmp"))
