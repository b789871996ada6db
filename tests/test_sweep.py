"""`ptflow sweep` on tiny data: leaderboard, a best command that reproduces the best trial,
resume, pruning, failures that do not stop a sweep, and bad specs caught before anything runs."""

import json
import os
import shlex
import socket
import subprocess
import sys

import pytest
from helpers import assert_one_line_error

optuna = pytest.importorskip("optuna")

from ptflow.cli import build_parser  # noqa: E402
from ptflow.config import TrainConfig  # noqa: E402
from ptflow.errors import PtflowError, UsageError  # noqa: E402
from ptflow.sweep.report import train_command  # noqa: E402
from ptflow.sweep.space import parse_spec  # noqa: E402

SPACE = ["--param", "lr=loguniform:1e-3:3e-2", "--param", "n_layers=int:2:4",
         "--param", "use_dropout=choice:true,false"]


def data_flags(npz_data, runs_dir, epochs=2):
    return ["--dataset", f"npz:{npz_data}", "--n_epochs", str(epochs), "--batch_size", "32", "--runs_dir", runs_dir]


def load(runs_dir, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{runs_dir}/sweeps.db")


def status(study, number):
    run_dir = study.trials[number].user_attrs["run_dir"]
    return json.loads(open(os.path.join(run_dir, "run.json")).read())


def test_sweep_ranks_by_validation_and_its_best_command_reproduces_the_best_trial(cli, npz_data, tmp_path):
    code, out, err = cli("sweep", "--trials", "3", *SPACE, "--study", "s", "--pruner", "none",
                         *data_flags(npz_data, tmp_path))
    assert code == 0, err
    study = load(tmp_path, "s")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    table = out[out.index("trial  "):].splitlines()
    assert "best valid loss" in table[0] and len([row for row in table[1:4] if "complete" in row]) == 3
    assert table[1].split()[0] == str(study.best_trial.number)  # best first
    # Only the winner is judged on the test split; the others never saw it.
    for trial in study.trials:
        tested = status(study, trial.number)["test_acc"]
        assert (tested is not None) == (trial.number == study.best_trial.number)
        assert status(study, trial.number)["best_valid_loss"] == trial.value

    command = out.split("Best configuration:\n")[1].splitlines()[0].strip()
    words = shlex.split(command)
    assert words[:2] == ["ptflow", "train"] and "--run_name" not in words and "--verbose" not in words
    code, _, err = cli(*words[1:], "--run_name", "again", "--verbose", "0")
    assert code == 0, err
    again = json.loads((tmp_path / "again" / "run.json").read_text())
    assert again["best_valid_loss"] == study.best_value  # same seed, same numbers on CPU
    assert again["test_acc"] == status(study, study.best_trial.number)["test_acc"]

    report = (tmp_path / "s.html").read_text()
    assert report.count("data:image/png;base64,") == 3 and "<pre>ptflow train" in report
    assert 'src="http' not in report  # self-contained


def test_ended_trials_keep_their_model_but_not_their_checkpoint(cli, npz_data, tmp_path):
    code, _, err = cli("sweep", "--trials", "2", "--param", "lr=choice:0.03,0.00001", "--study", "c",
                       "--prune_after", "1", "--prune_warmup", "0", *data_flags(npz_data, tmp_path, 3))
    assert code == 0, err
    study = load(tmp_path, "c")
    for trial in study.trials:
        run_dir = trial.user_attrs["run_dir"]
        assert not os.path.exists(os.path.join(run_dir, "checkpoint.safetensors"))
        finished = trial.state == optuna.trial.TrialState.COMPLETE
        assert os.path.exists(os.path.join(run_dir, "model.safetensors")) == finished
        code, _, err = cli("train", "--resume", run_dir, "--n_epochs", "5", "--runs_dir", tmp_path)
        assert code == 1 and "kept no checkpoint" in err, err
        assert_one_line_error(err)


def test_same_seed_same_trials_and_resume_adds_new_ones(cli, npz_data, tmp_path):
    flags = ["--pruner", "none", *data_flags(npz_data, tmp_path, epochs=1)]
    assert cli("sweep", "--trials", "2", *SPACE, "--study", "a", *flags)[0] == 0
    assert cli("sweep", "--trials", "2", *SPACE, "--study", "b", *flags)[0] == 0
    a, b = load(tmp_path, "a"), load(tmp_path, "b")
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    # Resuming needs only the study's name: its search space and flags are stored with it.
    code, out, err = cli("sweep", "--trials", "1", "--study", "a", "--runs_dir", tmp_path)
    assert code == 0, err
    a = load(tmp_path, "a")
    assert len(a.trials) == 3 and a.trials[2].state == optuna.trial.TrialState.COMPLETE
    assert a.trials[2].params != a.trials[0].params  # a resumed study does not repeat its first draws
    assert json.loads((tmp_path / "a-trial002" / "config.json").read_text())["n_epochs"] == 1
    assert "2 trials so far" in out


@pytest.mark.parametrize("flags, message", [
    (["--n_epochs", "3"], "n_epochs"),
    (["--param", "lr=float:0.001:0.01"], "searches"),
])
def test_resume_with_another_experiment_is_refused(cli, npz_data, tmp_path, flags, message):
    assert cli("sweep", "--trials", "1", *SPACE, "--study", "a", *data_flags(npz_data, tmp_path, 1))[0] == 0
    code, _, err = cli("sweep", "--trials", "1", "--study", "a", "--runs_dir", tmp_path, *flags)
    assert code == 2 and message in err
    assert_one_line_error(err)
    assert len(load(tmp_path, "a").trials) == 1


@pytest.mark.parametrize("spec", [
    "lr", "lr=uniform:1e-4:1e-2", "learning_rate=float:0:1", "seed=int:0:3", "lr=loguniform:1e-2:1e-4",
    "lr=loguniform:0:1", "n_layers=float:1:3", "lr=int:1:3", "n_layers=int:0:3", "n_layers=int:2:8:4",
    "use_dropout=choice:yes,no", "batch_size=choice:32,abc", "dropout_p=float:0:1",
    "optimizer=choice:adam,rmsprop", "channels=choice:16,32/x", "lr=choice:0.1,0.1",
])
def test_bad_specs_exit_2_before_anything_is_written(cli, tmp_path, spec):
    code, _, err = cli("sweep", "--trials", "2", "--param", spec, "--dataset", "digits", "--runs_dir", tmp_path)
    assert code == 2
    assert_one_line_error(err)
    assert not tmp_path.exists() or not list(tmp_path.iterdir())


@pytest.mark.parametrize("args", [
    ["--param", "lr=loguniform:1e-4:1e-2", "--lr", "0.01"],  # fixed and searched at once
    ["--param", "lr=loguniform:1e-4:1e-2", "--run_name", "x"],
    ["--param", "lr=loguniform:1e-4:1e-2", "--study", "a/b"],
    [],  # nothing to search
])
def test_contradictory_sweep_flags_exit_2(cli, tmp_path, args):
    code, _, err = cli("sweep", "--trials", "1", *args, "--dataset", "digits", "--runs_dir", tmp_path)
    assert code == 2
    assert_one_line_error(err)


@pytest.mark.parametrize("url, status", [("sqlite:////nonexistent-dir/sweeps.db", 1), ("not a url", 2)])
def test_unusable_storage_is_one_line(cli, tmp_path, url, status):
    code, _, err = cli("sweep", "--trials", "1", "--param", "lr=loguniform:1e-4:1e-2", "--storage", url,
                       "--dataset", "digits", "--runs_dir", tmp_path)
    assert code == status
    assert_one_line_error(err)


def test_a_failing_trial_does_not_stop_the_sweep(cli, npz_data, tmp_path, monkeypatch):
    import ptflow.training.train

    real_fit, calls = ptflow.training.train.fit, []

    def fit(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise PtflowError("the disk is on fire")
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(ptflow.training.train, "fit", fit)
    code, out, err = cli("sweep", "--trials", "3", *SPACE, "--study", "f", *data_flags(npz_data, tmp_path, 1))
    assert code == 0, err
    study = load(tmp_path, "f")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert "trial 1 failed: the disk is on fire" in err and "Traceback" not in err
    assert status(study, 1)["status"] == "failed"
    assert study.trials[1].user_attrs["error"] == "the disk is on fire"


def test_pruned_trials_stop_early_and_their_runs_say_pruned(cli, npz_data, tmp_path):
    code, out, err = cli("sweep", "--trials", "4", "--param", "lr=choice:0.03,0.00001", "--study", "p",
                         "--prune_after", "1", "--prune_warmup", "0", *data_flags(npz_data, tmp_path, 3))
    assert code == 0, err
    study = load(tmp_path, "p")
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, [t.state for t in study.trials]
    for trial in pruned:
        assert status(study, trial.number)["status"] == "pruned"
        lines = open(os.path.join(trial.user_attrs["run_dir"], "metrics.jsonl")).read().splitlines()
        assert len(lines) == trial.last_step < 3
        assert f"trial {trial.number} pruned at epoch {trial.last_step}" in out


def test_a_trial_left_running_by_a_dead_process_is_failed_and_the_sweep_goes_on(cli, npz_data, tmp_path):
    assert cli("sweep", "--trials", "1", *SPACE, "--study", "k", *data_flags(npz_data, tmp_path, 1))[0] == 0
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study = load(tmp_path, "k")
    orphan = study.ask()  # as a worker would leave it, killed mid-trial
    run_dir = tmp_path / "k-trial001"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"status": "running"}))
    for key, value in {"host": socket.gethostname(), "pid": dead.pid, "run_dir": str(run_dir)}.items():
        orphan.set_user_attr(key, value)
    code, _, err = cli("sweep", "--trials", "1", "--study", "k", "--runs_dir", tmp_path)
    assert code == 0, err
    study = load(tmp_path, "k")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert "trial 1 was left running" in err


def test_param_specs_take_the_field_types():
    base = TrainConfig()
    channels = parse_spec("channels=choice:16/32,32/64", base)
    assert channels.choices == ("16/32", "32/64") and channels.to_config("16/32") == [16, 32]
    hidden = parse_spec("hidden_sizes=choice:none,64/32", base)
    assert hidden.to_config(None) is None and hidden.to_config("64/32") == [64, 32]
    assert parse_spec("use_dropout=choice:True,false", base).choices == (True, False)
    batch = parse_spec("batch_size=loguniform:16:256", base)
    assert batch.is_int and (batch.low, batch.high) == (16, 256)
    assert parse_spec("n_layers=int:2:8:2", base).step == 2
    assert str(parse_spec("lr=loguniform:1e-4:1e-2", base)) == "lr=loguniform:0.0001:0.01"
    with pytest.raises(UsageError, match="not tunable"):
        parse_spec("train_ratio=float:0.5:0.9", base)


def test_best_command_round_trips_through_the_parser():
    config = TrainConfig(dataset="csv:/data/my file.csv", target="label", lr=0.0012345678901234567,
                         hidden_sizes=[64, 32], use_dropout=True, runs_dir="out dir", verbose=0,
                         run_name="trial-1")
    words = shlex.split(train_command(config))
    args = build_parser().parse_args(words[1:])
    values = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    assert TrainConfig.from_dict({**values, "verbose": 0, "run_name": "trial-1"}) == config


def test_help_does_not_import_optuna_torch_or_trackers():
    code = ("import sys; from ptflow.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('optuna', 'torch', 'mlflow', 'tensorboard') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_config_file_fixes_the_rest_of_the_sweep(cli, npz_data, tmp_path):
    config = tmp_path / "base.toml"
    config.write_text(f'dataset = "npz:{npz_data}"\nn_epochs = 1\nbatch_size = 32\n')
    code, _, err = cli("sweep", "--trials", "1", "--param", "lr=loguniform:1e-3:1e-2", "--study", "c",
                       "--config", config, "--runs_dir", tmp_path / "runs")
    assert code == 0, err
    trial = json.loads((tmp_path / "runs" / "c-trial000" / "config.json").read_text())
    assert (trial["n_epochs"], trial["batch_size"]) == (1, 32) and 1e-3 <= trial["lr"] <= 1e-2


def test_a_trial_of_another_machine_is_failed_once_its_heartbeat_is_stale(cli, npz_data, tmp_path, monkeypatch):
    import time

    import ptflow.sweep.study

    monkeypatch.setattr(ptflow.sweep.study, "HEARTBEAT_GRACE", 1)
    assert cli("sweep", "--trials", "1", *SPACE, "--study", "h", *data_flags(npz_data, tmp_path, 1))[0] == 0
    study = load(tmp_path, "h")
    orphan = study.ask()
    orphan.set_user_attr("host", "another-machine")  # its pid means nothing here: only the heartbeat tells
    study._storage.record_heartbeat(orphan._trial_id)  # what the worker's heartbeat thread did, once
    time.sleep(2.5)  # SQLite keeps heartbeats to the second
    code, _, err = cli("sweep", "--trials", "1", "--study", "h", "--runs_dir", tmp_path)
    assert code == 0, err
    assert [t.state.name for t in load(tmp_path, "h").trials] == ["COMPLETE", "FAIL", "COMPLETE"]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # heartbeat
def test_a_worker_that_loses_the_race_to_create_a_study_is_held_to_the_winners_config(tmp_path, monkeypatch):
    from ptflow.sweep import study as sweep_study
    from ptflow.sweep.space import parse_specs

    rdb = sweep_study.open_storage(f"sqlite:///{tmp_path}/sweeps.db")
    specs = parse_specs(["lr=loguniform:1e-3:1e-2"], TrainConfig())
    real_create = optuna.create_study

    def create_study(**kwargs):  # another worker creates the study between this one's look and its create
        monkeypatch.setattr(optuna, "create_study", real_create)
        sweep_study.load_or_create(rdb, "r", TrainConfig(n_epochs=3), {"n_epochs"}, specs)
        return real_create(**kwargs)

    monkeypatch.setattr(optuna, "create_study", create_study)
    with pytest.raises(UsageError, match="n_epochs=3"):
        sweep_study.load_or_create(rdb, "r", TrainConfig(n_epochs=4), {"n_epochs"}, specs)
    assert load(tmp_path, "r").user_attrs["ptflow_config"]["n_epochs"] == 3  # the winner's, not overwritten


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # heartbeat
def test_a_study_just_created_by_another_worker_is_waited_for_not_called_foreign(tmp_path):
    import threading

    from ptflow.sweep import study as sweep_study
    from ptflow.sweep.space import parse_specs

    rdb = sweep_study.open_storage(f"sqlite:///{tmp_path}/sweeps.db")
    specs = parse_specs(["lr=loguniform:1e-3:1e-2"], TrainConfig())
    study = optuna.create_study(storage=rdb, study_name="w")  # created; its config is recorded a moment later

    def record():
        study.set_user_attr("ptflow_config", TrainConfig(n_epochs=3).to_dict())
        study.set_user_attr("ptflow_params", [str(s) for s in specs])

    timer = threading.Timer(0.5, record)
    timer.start()
    base, stored = sweep_study.load_or_create(rdb, "w", TrainConfig(), set(), specs)
    timer.join()
    assert base.n_epochs == 3 and [str(s) for s in stored] == [str(s) for s in specs]


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_ctrl_c_says_how_to_continue_the_sweep_not_the_trial(npz_data, tmp_path):
    import signal
    import time

    command = [sys.executable, "-m", "ptflow", "sweep", "--trials", "3", "--param", "lr=float:0.001:0.01",
               "--study", "int", "--pruner", "none", *data_flags(npz_data, tmp_path, 400)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "int-trial000" / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):  # trial 0 is training
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "ptflow sweep --study int --trials N" in out + err
    assert "ptflow train --resume" not in out + err and "Traceback" not in err
    trial = load(tmp_path, "int").trials[0]
    assert trial.state == optuna.trial.TrialState.FAIL


def test_pruning_reads_the_better_of_the_raw_and_the_ema_validation_loss():
    """With --ema the run keeps the better of the two weights, so the pruner is told that one."""
    from types import SimpleNamespace

    from ptflow.sweep.search import pruning_callback

    class Trial:  # what the callback calls on an Optuna trial
        def __init__(self):
            self.reports = []

        def report(self, value, step):
            self.reports.append((value, step))

        def should_prune(self):
            return False

    trial = Trial()
    callback = pruning_callback(trial)
    callback(SimpleNamespace(epoch=1, history=[{"valid_loss": 0.9, "ema_valid_loss": 0.7}]), None)
    callback(SimpleNamespace(epoch=2, history=[{}, {"valid_loss": 0.5, "ema_valid_loss": 0.6}]), None)
    callback(SimpleNamespace(epoch=3, history=[{}, {}, {"valid_loss": 0.4}]), None)  # no EMA
    assert trial.reports == [(0.7, 1), (0.5, 2), (0.4, 3)]
