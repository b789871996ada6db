"""Several processes, without starting any: how batches and evaluation are shared out, the
torchrun command line ptflow builds, and the usage errors said once, before anything starts.
(tests/test_ddp.py runs the real multi-process jobs.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from ptflow.cli.commands import build_parser
from ptflow.cli.train import LAUNCH_OPTIONS, worker_flags
from ptflow.training import launch, loop
from ptflow.training.steps import batch_starts, shard

# Fewer than two training examples per process are refused before training (ddp.check_data).
SHAPES = [(n, batch, world) for n in range(2, 70) for batch in (2, 4, 6, 8, 16) for world in (1, 2, 3, 4)
          if batch % world == 0 and n >= 2 * world]


def test_each_batch_is_cut_into_one_slice_per_process_that_cover_it_once():
    for n, batch, world in SHAPES:
        check_batches(n, batch, world)


def check_batches(n: int, batch: int, world: int) -> None:
    starts = batch_starts(n, batch, world)
    covered = []
    for start in starts:
        stop = min(start + batch, n)
        slices = [shard(start, stop, rank, world) for rank in range(world)]
        for lo, hi, _ in slices:
            covered += range(lo, hi)
        assert [lo for lo, _, _ in slices[1:]] == [hi for _, hi, _ in slices[:-1]]  # contiguous, in rank order
        assert min(hi - lo for lo, hi, _ in slices) >= min(2, batch // world)  # BatchNorm needs two each
        # DDP averages the processes' scaled mean losses: that must be the mean loss of the whole batch.
        losses = torch.arange(start, stop, dtype=torch.float64).sin()
        ddp_mean = sum(w * losses[lo - start:hi - start].mean() for lo, hi, w in slices) / world
        assert float(ddp_mean) == pytest.approx(float(losses.mean()), rel=1e-12)
    assert covered == list(range(len(covered)))  # every example once, in the shared order
    dropped = n - len(covered)
    assert dropped == 0 or (len(starts) >= 1 and dropped < 2 * world)  # only a last batch too small to share


def test_one_process_drops_only_a_last_batch_of_one_example_as_before():
    for n in range(1, 100):
        old = list(range(0, n, 8))
        if len(old) > 1 and n - old[-1] == 1:
            old.pop()
        assert batch_starts(n, 8) == old
        assert all(shard(s, min(s + 8, n), 0, 1) == (s, min(s + 8, n), 1.0) for s in old)


@pytest.mark.parametrize("world", [2, 3, 5])
def test_processes_evaluate_disjoint_batches_whose_sums_make_the_whole(world):
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 4)
    x, y = torch.randn(203, 6), torch.randint(0, 4, (203,))
    whole_loss, whole_acc = loop.evaluate(model, model, x, y, batch_size=16)
    # Without a process group the all-reduce adds nothing: each call returns one process's share.
    parts = [loop.evaluate(model, model, x, y, batch_size=16, rank=r, world=world) for r in range(world)]
    assert sum(loss for loss, _ in parts) == pytest.approx(whole_loss, rel=1e-12)
    assert round(sum(acc for _, acc in parts) * len(x)) == round(whole_acc * len(x))


def test_torchrun_command_lines():
    worker = ["train", "--n_epochs=2"]
    assert launch.Plan(2).torchrun_args(worker) == [
        "--nproc_per_node=2", "--nnodes=1", "--max_restarts=0", "--standalone", "--module", "ptflow", *worker]
    assert launch.Plan(4, nnodes=2, rdzv_endpoint="10.0.0.1:29400", max_restarts=3).torchrun_args(worker)[2:6] == [
        "--max_restarts=3", "--rdzv_backend=c10d", "--rdzv_endpoint=10.0.0.1:29400", "--rdzv_id=ptflow"]
    assert launch.Plan(1, nnodes=2, node_rank=1, rdzv_endpoint="h:1").torchrun_args(worker)[3:6] == [
        "--rdzv_backend=static", "--rdzv_endpoint=h:1", "--node_rank=1"]


@pytest.mark.parametrize("plan, message", [
    (launch.Plan(0), "--nproc_per_node must be >= 1"),
    (launch.Plan(2, nnodes=2), "--nnodes > 1 needs --rdzv_endpoint"),
    (launch.Plan(2, nnodes=2, rdzv_endpoint="h:1", node_rank=2), "--node_rank must be in 0..1"),
    (launch.Plan(2, nnodes=2, rdzv_endpoint="nohost"), "HOST:PORT"),
    (launch.Plan(2, max_restarts=-1), "--max_restarts must be >= 0"),
])
def test_impossible_launches_are_refused(plan, message):
    from ptflow.errors import UsageError

    with pytest.raises(UsageError, match=message):
        plan.check()


def test_the_processes_get_the_same_train_options_and_none_of_the_launcher_flags():
    parser = build_parser()
    given = ["train", "--dataset", "npz:x.npz", "--lr", "3e-4", "--hidden_sizes", "50,30", "--use_dropout",
             "--gpu_id", "-1", "--model_args", '{"a": [1, "b"]}', "--log", "tensorboard", "--preset", "fast",
             "--num_threads", "3",
             "--nproc_per_node", "2", "--max_restarts", "1", "--dist_timeout", "20"]
    args = parser.parse_args(given)
    again = parser.parse_args(["train", *worker_flags(args, "run-1")])
    expected = {k: v for k, v in vars(args).items() if k not in ("handler", *LAUNCH_OPTIONS)}
    assert {k: v for k, v in vars(again).items() if k not in ("handler", *LAUNCH_OPTIONS)} == {
        **expected, "run_name": "run-1"}
    assert all(getattr(again, k) is None for k in LAUNCH_OPTIONS)


@pytest.mark.parametrize("flags, message", [
    (["--nproc_per_node", "2", "--batch_size", "33"], "--batch_size 33 is the global batch and must divide evenly"),
    (["--nproc_per_node", "2", "--sync_bn"], "--sync_bn needs GPUs"),
    (["--max_restarts", "1"], "--max_restarts needs --nproc_per_node"),
    (["--nproc_per_node", "2", "--nnodes", "2"], "--nnodes > 1 needs --rdzv_endpoint"),
    (["--nproc_per_node", "2", "--lr", "-1"], "--lr must be > 0"),
    (["--nproc_per_node", "2", "--dist_timeout", "0"], "--dist_timeout must be > 0"),
])
def test_launch_errors_are_one_line_before_any_process_starts(cli, tmp_path, flags, message):
    code, out, err = cli("train", "--dataset", "digits", "--runs_dir", tmp_path, "--device", "cpu", *flags)
    assert code == 2 and err.startswith("ptflow train: error: ") and len(err.strip().splitlines()) == 1
    assert message in err
    assert not list(tmp_path.iterdir())


def test_an_existing_run_folder_is_refused_before_any_process_starts(cli, tmp_path):
    (tmp_path / "taken").mkdir()
    code, _, err = cli("train", "--runs_dir", tmp_path, "--run_name", "taken", "--nproc_per_node", "2")
    assert code == 1 and "run folder" in err and "already exists" in err


def test_print_config_with_launcher_flags_starts_nothing(cli):
    code, out, _ = cli("train", "--dataset", "digits", "--nproc_per_node", "2", "--print_config", "yaml")
    assert code == 0 and 'dataset: "digits"' in out and "nproc_per_node" not in out


def test_torchrun_restarts_need_a_run_name_to_find_the_run_again(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")  # as torchrun --max_restarts 1 sets them
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "1")
    code, _, err = cli("train", "--dataset", "digits", "--runs_dir", tmp_path)
    assert code == 2 and "pass --run_name" in err


def test_launcher_flags_inside_torchrun_are_refused(cli, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    code, _, err = cli("train", "--dataset", "digits", "--nproc_per_node", "2")
    assert code == 2 and "torchrun started this one" in err


def test_sweeps_take_no_launcher_flags(cli):
    code, _, err = cli("sweep", "--trials", "1", "--nproc_per_node", "2")
    assert code == 2 and "unrecognized arguments: --nproc_per_node" in err


def test_sync_bn_is_a_hyperparameter_that_resume_keeps():
    from ptflow.config import HYPERPARAMETER, fields_where

    assert "sync_bn" in fields_where(role=HYPERPARAMETER, resume=False)
    assert json.loads(json.dumps({"sync_bn": True}))  # a plain bool in config.json


def test_a_sweep_under_torchrun_is_refused(cli, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")  # as torchrun sets it in each process
    code, _, err = cli("sweep", "--trials", "1", "--param", "lr=float:0.001:0.01", "--dataset", "digits")
    assert code == 2 and "start several sweep commands on one --storage" in err


# --- how a failed job is told: one "error:" line, none when torchrun recovers it ----------------

class FakeFailure:
    """What torchrun's ChildFailedError holds per process: torchrun times failures in whole seconds."""

    def __init__(self, exitcode: int, pid: int, timestamp: int = 1000):
        self.exitcode, self.pid, self.timestamp = exitcode, pid, timestamp


class FakeChildFailedError:
    def __init__(self, **by_rank: FakeFailure):
        self.failures = {int(rank[1:]): failure for rank, failure in by_rank.items()}

    def get_first_failure(self):  # as torchrun picks it: the smallest timestamp, ties to the lowest rank
        rank = min(self.failures, key=lambda r: self.failures[r].timestamp)
        return rank, self.failures[rank]


@pytest.mark.parametrize("survivor", [1, -15], ids=["exited on losing it", "stopped by torchrun"])
def test_the_launcher_names_the_process_that_was_killed_not_those_that_lost_it(tmp_path, capsys, survivor):
    failed = FakeChildFailedError(r0=FakeFailure(survivor, 100), r1=FakeFailure(-9, 101))
    assert launch._report(failed, launch.Plan(2), tmp_path / "run") == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and len(err.strip().splitlines()) == 1
    assert "process 1 of 2 (pid 101) was killed by SIGKILL (no --max_restarts)" in err


@pytest.mark.parametrize("codes", [(143, 143), (143, -15), (-15, 130)])
def test_a_job_stopped_by_a_signal_ends_with_its_status_and_no_error(tmp_path, capsys, codes):
    failed = FakeChildFailedError(r0=FakeFailure(codes[0], 100), r1=FakeFailure(codes[1], 101))
    assert launch._report(failed, launch.Plan(2), tmp_path / "run") == max(c for c in codes if c > 0)
    assert capsys.readouterr().err == ""


def test_processes_say_a_failure_torchrun_recovers_or_reports_as_a_note(monkeypatch):
    from ptflow.errors import PtflowError
    from ptflow.training import distributed
    from ptflow.training.distributed import Job, LostPeer, lost_peer_error

    job = Job(rank=1, world_size=2, max_restarts=2, restart_count=1)  # one restart left: nothing is final yet
    monkeypatch.setattr(distributed, "_job", job)  # as inside distributed.joined(job)
    lost, own = lost_peer_error(RuntimeError("Connection closed by peer")), PtflowError("cannot write x")
    monkeypatch.setattr(distributed, "_job", Job())
    assert isinstance(lost, LostPeer)
    assert launch.note_for(lost, job) is None and launch.note_for(own, job) is None  # no torchrun agent: errors
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "ptflow")
    assert launch.note_for(own, job) == ("process 1 of 2: cannot write x; torchrun restarts every process "
                                         "(restart 2 of 2)")
    assert launch.note_for(lost, job).startswith("process 1 of 2 lost the others") and "(restart 2 of 2)" in \
        launch.note_for(lost, job)
    job = Job(rank=1, world_size=2, max_restarts=2, restart_count=2)  # none left: torchrun reports who failed
    assert launch.note_for(lost, job) == str(lost) and "error" not in launch.note_for(lost, job)
    assert launch.note_for(own, job) is None  # the process's own failure is the job's error


# --- a launcher killed with -9 --------------------------------------------------------------------

# A process of a 2-process job (its one peer agrees with it, no process group needed), started by
# a launcher with several threads, as torchrun's agent has: it stops gracefully on its launcher's
# death, then takes a second to record the stop, while the launcher's other threads end. The
# SIGTERM it sends itself there is one the kernel may send (only sometimes, on an idle machine).
STOPPING_PROCESS = """
import os, signal, sys, time
from ptflow.training import distributed as dist, interrupt, launch
dist.is_distributed = lambda: True
dist.agree_max = lambda value: value
launch.die_with_launcher()
try:
    with interrupt.stop_gracefully():
        print("ready", flush=True)
        while True:
            time.sleep(0.001)
            interrupt.check()
except interrupt.Interrupted as exc:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(1)
    print("recorded", exc.exit_code, flush=True)
    sys.exit(exc.exit_code)
"""
LAUNCHER = """
import subprocess, sys, threading, time
for _ in range(16):
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
subprocess.Popen([sys.executable, "-c", sys.argv[1]])
time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_process_records_its_stop_through_every_death_signal_of_a_launcher_killed_with_kill_9():
    """The kernel sends the death signal again for each thread of the dying launcher that takes the
    process over (measured here: 1 to 13 with these 16 threads), spread out on a busy machine; none
    may kill the process before it has recorded its stop."""
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, STOPPING_PROCESS], stdout=subprocess.PIPE,
                                text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert launcher.stdout.readline() == "ready\n"
        launcher.kill()
        out = launcher.stdout.read()  # to the end: the stopping process holds the pipe until it exits
    finally:
        launcher.kill()
        launcher.wait()
    assert out == "recorded 143\n"
