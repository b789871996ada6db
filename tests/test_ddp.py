"""Data-parallel training on several processes (torch.distributed, gloo on the CPU, through torchrun).

Every job here is real: `ptflow train --nproc_per_node 2` (or two torchrun launchers) in a new
session, with a hard timeout that kills the whole process group, so a hang fails the test in
seconds instead of stalling CI. The data is small and deliberately uneven: 201 training, 51
validation and 63 test examples, none divisible by the 2 processes or by the batches.

The invariants checked:
- a 2-process run writes one run folder, and its metrics are those of a single-process
  evaluation of the model file it saved (so no example is counted twice or dropped);
- without BatchNorm, its weights are close to a 1-process run with the same global batch;
- stopped by SIGTERM and resumed, or restarted by torchrun after a `kill -9`, or run as two
  "machines" meeting at a c10d rendezvous, it ends with the same weights, bit for bit, as the
  2-process run left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_same_run, epoch_metrics, free_port, make_images
from safetensors.torch import load_file

from ptflow.config import TrainConfig
from ptflow.data.splits import load_splits
from ptflow.models.files import load_model
from ptflow.training import loop, steps, train
from ptflow.training.checkpoint import read_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals and /proc")]

JOB_TIMEOUT = 120  # seconds a whole job may take before its process group is killed and the test fails
DIST_TIMEOUT = 30  # --dist_timeout: how long a process waits for a lost peer
N_EPOCHS = 8


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    x, y = make_images(315, seed=5)
    path = tmp_path_factory.mktemp("ddp") / "uneven.npz"
    np.savez(path, x=x, y=y)
    splits = load_splits(f"npz:{path}")
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (201, 51, 63)  # all odd
    return path


def flags(data: Path, runs_dir: Path, name: str, *extra: str) -> list[str]:
    # batch 16: 8 per process, 12 full steps and a last one of 9 examples (4 and 5 per process);
    # validation batches of 32: the first to process 0, the 19 left to process 1. One thread per
    # process, named: runs compared bit for bit must train on the same count, whoever starts them.
    return ["--dataset", f"npz:{data}", "--runs_dir", str(runs_dir), "--run_name", name, "--n_epochs",
            str(N_EPOCHS), "--batch_size", "16", "--scheduler", "cosine", "--verbose", "1",
            "--dist_timeout", str(DIST_TIMEOUT), "--num_threads", "1", *extra]


@contextlib.contextmanager
def job(*command: str, env: dict | None = None):
    """A job in its own session; killed with its whole process group after JOB_TIMEOUT."""
    process = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, env={**os.environ, **(env or {})})
    expired = threading.Event()

    def kill():
        expired.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    timer = threading.Timer(JOB_TIMEOUT, kill)
    timer.start()
    try:
        yield process
    finally:
        timer.cancel()
        kill_group = process.poll() is None
        if kill_group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        assert not expired.is_set(), f"{' '.join(command)} hung: killed after {JOB_TIMEOUT} s"


def ptflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "ptflow", *args]


def run_job(*command: str) -> subprocess.CompletedProcess:
    with job(*command) as process:
        out, err = process.communicate()
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def until_epoch(process: subprocess.Popen, epoch: int) -> str:
    """Read the job's output up to the line of `epoch`."""
    out = ""
    for line in process.stdout:
        out += line
        if line.startswith(f"Epoch({epoch}/"):
            return out
    raise AssertionError(f"the job ended before epoch {epoch}: {out[-2000:]}")


def worker(launcher: subprocess.Popen, rank: int) -> int:
    """The pid of the launcher's child process of this RANK (from its environment)."""
    children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
    for pid in children:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return int(pid)
    raise AssertionError(f"no process of rank {rank} among {children}")


@pytest.fixture(scope="module")
def alone(tmp_path_factory, data) -> Path:
    """The reference: a 2-process run (BatchNorm mlp) left alone."""
    runs_dir = tmp_path_factory.mktemp("alone")
    done = run_job(*ptflow("train", *flags(data, runs_dir, "alone", "--nproc_per_node", "2")))
    assert done.returncode == 0, done.stderr
    return runs_dir / "alone"


def test_a_two_process_run_writes_one_run_whose_metrics_are_a_single_process_evaluation(alone, data):
    assert [p.name for p in alone.parent.iterdir()] == ["alone"]  # one run folder, written by process 0 only
    record = json.loads((alone / "run.json").read_text())
    env = json.loads((alone / "env.json").read_text())
    assert record["status"] == "finished"
    assert (record["world_size"], record["backend"]) == (env["world_size"], env["backend"]) == (2, "gloo")
    checkpoint_meta = read_checkpoint(alone / "checkpoint.safetensors")[1]
    assert checkpoint_meta["world_size"] == 2 and "rng/rank1/cpu" in checkpoint_meta["tensors"]

    # The model file is a plain single-process one: loaded here, in a process with no process group.
    loaded = load_model(alone / "model.safetensors")
    model, preprocess = loaded.model, loaded.preprocess
    assert not torch.distributed.is_initialized()
    splits = load_splits(f"npz:{data}")
    config = TrainConfig.from_dict(loaded.meta["config"])
    for split, loss_key, acc_key in (("val", "best_valid_loss", "valid_acc"), ("test", "test_loss", "test_acc")):
        x, y = torch.from_numpy(getattr(splits, f"x_{split}")), torch.from_numpy(getattr(splits, f"y_{split}"))
        loss, acc = loop.evaluate(lambda v: model(preprocess(v)), model, x, y,
                                  batch_size=steps.eval_batch_size(config.batch_size))
        # The same evaluation batches, each evaluated by one process: the accuracy is exact; the
        # loss differs at most in the last bits of adding the two processes' float64 sums.
        assert acc == record[acc_key], split
        assert loss == pytest.approx(record[loss_key], rel=1e-12, abs=0), split


@pytest.mark.parametrize("frozen", [0, 3], ids=["all-training", "backbone-frozen-3-epochs"])
def test_without_batchnorm_two_processes_train_as_one_with_the_same_global_batch(tmp_path, data, frozen):
    """Also with the backbone frozen for 3 epochs: DDP is wrapped for the frozen epochs and again
    when they end (one wrapper for all parameters fails at the first frozen step; one for the
    head alone would leave the backbone's gradients unaveraged afterwards)."""
    extra = ("--use_dropout", "--dropout_p", "0")  # no BatchNorm, no random masks: only the arithmetic differs
    extra += ("--freeze_backbone_epochs", str(frozen)) if frozen else ()
    done = run_job(*ptflow("train", *flags(data, tmp_path, "two", "--nproc_per_node", "2", *extra)))
    assert done.returncode == 0, done.stderr
    one = train.train_model(TrainConfig.from_dict({
        "dataset": f"npz:{data}", "runs_dir": str(tmp_path), "run_name": "one", "n_epochs": N_EPOCHS,
        "batch_size": 16, "scheduler": "cosine", "verbose": 0, "use_dropout": True, "dropout_p": 0.0,
        "freeze_backbone_epochs": frozen}))
    two = json.loads((tmp_path / "two" / "run.json").read_text())
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    # Not bit for bit: each process averages its 8 examples' gradients and DDP averages the two
    # means, where one process averages 16 at once; float32 sums in another order differ in the
    # last bits (~1e-7 relative), and Adam's steps carry that through 8 epochs x 13 steps: measured
    # 9e-8 at most here, on weights of order 0.1-1, so 1e-5 leaves a margin of 100.
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5, worst
    assert two["best_epoch"] == one["best_epoch"] and two["test_acc"] == one["test_acc"]
    assert two["best_valid_loss"] == pytest.approx(one["best_valid_loss"], rel=1e-4)
    # Every training example counted once in the reported training loss, per epoch.
    for x, y in zip(epoch_metrics(tmp_path / "one"), epoch_metrics(tmp_path / "two")):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-4)


def stop_with_sigterm(tmp_path: Path, data: Path, target: str) -> tuple[Path, int, str]:
    """Start a 2-process job, SIGTERM the launcher or one process after epoch 3; check it stopped
    cleanly; the run folder, the epoch of its checkpoint and the job's output."""
    with job(*ptflow("train", *flags(data, tmp_path, "run", "--nproc_per_node", "2"))) as process:
        until_epoch(process, 3)
        os.kill(process.pid if target == "launcher" else worker(process, 1), signal.SIGTERM)
        out, err = process.communicate()
    run = tmp_path / "run"
    assert process.returncode == 143, err  # the same status from every process, passed on by the launcher
    assert err.count("ptflow train: interrupted") == 1 and "Traceback" not in err  # said once, by process 0
    assert f"ptflow train --resume {run} --nproc_per_node 2" in out, (out, err)
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    epoch = read_checkpoint(run / "checkpoint.safetensors")[1]["epoch"]
    assert 3 <= epoch < N_EPOCHS and len(epoch_metrics(run)) == epoch
    return run, epoch, out


def test_a_sigterm_to_one_process_stops_all_and_resume_continues_bit_for_bit(tmp_path, data, alone):
    run, epoch, _ = stop_with_sigterm(tmp_path, data, "rank 1")
    # The signal lands mid-epoch (the position is saved) or between epochs, as the timing falls.
    position = read_checkpoint(run / "checkpoint.safetensors")[1].get("position")
    done = run_job(*ptflow("train", "--resume", str(run), "--nproc_per_node", "2"))
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr  # the same processes, on the thread count the run recorded
    resumed = (f"Resuming {run} at batch {position['batches'] + 1} of epoch {epoch + 1}" if position
               else f"Resuming {run} after epoch {epoch}")
    assert resumed in done.stdout
    assert_same_run(alone, run)


def test_a_sigterm_to_the_launcher_stops_every_process_cleanly(tmp_path, data, cli):
    run, epoch, _ = stop_with_sigterm(tmp_path, data, "launcher")  # as Ctrl-C does: torchrun passes it on
    code, out, err = cli("train", "--resume", run)  # one process may go on, but not exactly
    assert code == 0, err
    assert "ran on 2 process(es) and continues on 1: the numbers will differ" in err
    assert json.loads((run / "run.json").read_text())["world_size"] == 1


def test_a_killed_process_is_restarted_and_the_job_ends_as_if_undisturbed(tmp_path, data, alone):
    command = ptflow("train", *flags(data, tmp_path, "run", "--nproc_per_node", "2", "--max_restarts", "1"))
    with job(*command) as process:
        until_epoch(process, 3)
        os.kill(worker(process, 1), signal.SIGKILL)
        out, err = process.communicate()
    assert process.returncode == 0, err
    assert "error:" not in err and "Traceback" not in err, err  # recovered: a note at most, no error
    run = tmp_path / "run"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # the restarted job went on in the same folder
    assert json.loads((run / "run.json").read_text())["resumed"][0]["after_epoch"] >= 2  # epoch 3's may be lost
    assert_same_run(alone, run)


def test_without_restarts_a_killed_process_ends_the_job_with_a_clear_message(tmp_path, data):
    command = ptflow("train", *flags(data, tmp_path, "run", "--nproc_per_node", "2", "--n_epochs", "200"))
    with job(*command) as process:
        until_epoch(process, 2)
        os.kill(worker(process, 1), signal.SIGKILL)
        killed = time.monotonic()
        out, err = process.communicate()
    assert time.monotonic() - killed < DIST_TIMEOUT  # a dead peer is noticed at once, not at the timeout
    assert process.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("ptflow train: error: process 1 of 2") and "killed by SIGKILL" in last, err
    assert f"ptflow train --resume {tmp_path / 'run'} --nproc_per_node 2" in last
    assert err.count("error:") == 1 and "Traceback" not in err, err  # the survivor's lost peer is no second error
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "failed"


def test_a_loss_after_the_last_restart_ends_the_job_with_one_error_line(tmp_path, data):
    command = ptflow("train", *flags(data, tmp_path, "run", "--nproc_per_node", "2", "--n_epochs", "200",
                                     "--max_restarts", "1"))
    with job(*command) as process:
        until_epoch(process, 2)
        os.kill(worker(process, 1), signal.SIGKILL)
        for line in process.stdout:  # the restarted job resumes, then trains an epoch
            if line.startswith("Resuming"):
                break
        until_epoch(process, int(line.split("after epoch ")[1]) + 1)
        os.kill(worker(process, 1), signal.SIGKILL)
        out, err = process.communicate()
    assert process.returncode == 1, err
    assert err.count("error:") == 1 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("ptflow train: error: process 1 of 2") and "killed by SIGKILL after 1 restart(s)" in last


def alive(pid: int) -> bool:
    """Whether a process is running (not gone, and not a zombie waiting for its parent to read it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_processes_die_with_a_launcher_killed_with_kill_9(tmp_path, data, alone):
    """Nothing is left to stop them after `kill -9` of the launcher (torchrun's agent runs in it):
    the kernel sends each its SIGTERM (PR_SET_PDEATHSIG), and they stop together, resumably. It
    sends it again as each of the launcher's threads ends, later on a busy machine: none of those
    may kill a process before it has recorded the stop and said how to continue."""
    with job(*ptflow("train", *flags(data, tmp_path, "run", "--nproc_per_node", "2"))) as process:
        until_epoch(process, 3)
        workers = [worker(process, rank) for rank in (0, 1)]
        os.kill(process.pid, signal.SIGKILL)
        deadline = time.monotonic() + DIST_TIMEOUT
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        orphans = [pid for pid in workers if alive(pid)]
        out, err = process.communicate()
    assert orphans == [], f"processes {orphans} outlived their launcher"
    run = tmp_path / "run"
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    assert f"Continue with: ptflow train --resume {run} --nproc_per_node 2" in out, (out, err)
    done = run_job(*ptflow("train", "--resume", str(run), "--nproc_per_node", "2"))
    assert done.returncode == 0, done.stderr
    assert_same_run(alone, run)


def test_two_machines_meet_at_a_c10d_rendezvous_and_train_as_two_processes(tmp_path, data, alone):
    """Two torchrun launchers, one process each, as two machines would run them (on the thread
    count that flags() names, as the run left alone)."""
    endpoint = f"127.0.0.1:{free_port()}"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint, "--rdzv_id", "test",
                "-m", "ptflow", "train", *flags(data, tmp_path, "run")]
    with job(*torchrun) as first, job(*torchrun) as second:
        outs = [p.communicate() for p in (first, second)]
    assert first.returncode == second.returncode == 0, outs
    assert sum("Test accuracy" in out for out, _ in outs) == 1  # only rank 0 prints
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert_same_run(alone, tmp_path / "run")
