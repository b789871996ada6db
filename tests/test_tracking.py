"""`--log tensorboard` and `--log mlflow`: what they record equals the run folder's own files."""

import json

import pytest


def train(cli, npz_data, runs_dir, *flags):
    code, _, err = cli("train", "--dataset", f"npz:{npz_data}", "--n_epochs", "2", "--batch_size", "32",
                       "--runs_dir", runs_dir, "--run_name", "tracked", "--verbose", "0", *flags)
    assert code == 0, err
    run = runs_dir / "tracked"
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return run, epochs


def test_tensorboard_gets_every_epoch_and_the_sample_grid(cli, npz_data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, epochs = train(cli, npz_data, tmp_path, "--log", "tensorboard")
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    logged = [(e.step, e.value) for e in events.Scalars("valid_loss")]
    assert logged == [(e["epoch"], pytest.approx(e["valid_loss"], rel=1e-6)) for e in epochs]
    image = events.Images("samples")[0]
    assert (image.width, image.height) == (8 * 8, 8 * 8)  # the first 64 training images of 8x8, 8 per row
    status = json.loads((run / "run.json").read_text())
    assert events.Scalars("final/test_acc")[0].value == pytest.approx(status["test_acc"])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside mlflow's own SQLAlchemy models
def test_mlflow_gets_params_metrics_and_the_model_file(cli, npz_data, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    run, epochs = train(cli, npz_data, tmp_path, "--log", "mlflow", "--lr", "0.002")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("ptflow")
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.info.run_name == "tracked" and logged.info.status == "FINISHED"
    assert logged.data.params["lr"] == "0.002" and logged.data.tags["ptflow.run_dir"] == str(run.resolve())
    history = client.get_metric_history(logged.info.run_id, "valid_loss")
    assert [(m.step, m.value) for m in history] == [(e["epoch"], e["valid_loss"]) for e in epochs]
    artifact = client.download_artifacts(logged.info.run_id, "model.safetensors", str(tmp_path))
    assert open(artifact, "rb").read() == (run / "model.safetensors").read_bytes()
    assert str(tmp_path) in experiment.artifact_location  # beside the store, not in ./mlruns


def test_a_missing_extra_is_a_one_line_error_before_any_run_folder(cli, npz_data, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    code, _, err = cli("train", "--dataset", f"npz:{npz_data}", "--runs_dir", tmp_path / "runs", "--log", "mlflow")
    assert code == 1 and "pip install 'ptflow[mlflow]'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flags", [["--log", "wandb"], ["--log", "mlflow,mlflow"], ["--mlflow_uri", "http://x"]])
def test_bad_tracking_flags_exit_2(cli, tmp_path, flags):
    code, _, err = cli("train", "--dataset", "digits", "--runs_dir", tmp_path, *flags)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())
