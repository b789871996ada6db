"""Everything downstream of training works with a timm model: evaluate, predict, the Python API,
serve (batched), ONNX and TorchScript export, calibration, folds, sweeps, exact resume and torchrun.

One tiny timm network (resnet10t at 32 x 32), trained once with --calibrate on a photo folder, is
the model every reader checks; the references are the API's probabilities (`ptflow.load`), the
run's own recorded test numbers and the run left alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("timm")

import torch  # noqa: E402
from helpers import assert_same_run, epoch_metrics, run_cli, signal_on_step, stop_after_epoch  # noqa: E402
from helpers.photos import write_photos  # noqa: E402

import ptflow  # noqa: E402
from ptflow.config import TrainConfig  # noqa: E402
from ptflow.models.files import load_model  # noqa: E402
from ptflow.training import interrupt, train  # noqa: E402
from ptflow.training.checkpoint import read_checkpoint  # noqa: E402

NAME = "timm:resnet10t"
FAST = ["--image_size", "32", "--batch_size", "8", "--verbose", "0", "--num_threads", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(tmp folder, photo folder, model file) of a resnet10t trained with --calibrate on 4 classes."""
    tmp = tmp_path_factory.mktemp("timm_downstream")
    photos = write_photos(tmp / "photos").root
    assert run_cli("train", "--dataset", f"folder:{photos}", "--model", NAME, "--runs_dir", tmp / "runs",
                   "--run_name", "base", "--n_epochs", "2", "--lr", "3e-3", "--calibrate", *FAST) == 0
    return tmp, photos, tmp / "runs" / "base" / "model.safetensors"


def some_photos(photos, n=6):
    """n photo files across the classes and the stored variants (JPEG, PNG, CMYK, gray)."""
    return sorted(photos.rglob("*.*"))[::48 // n][:n]


def predict_json(capsys, model_fn, *files) -> list[dict]:
    capsys.readouterr()
    assert run_cli("predict", "--model_fn", model_fn, "--format", "json", "--num_threads", "1", *files) == 0
    return json.loads(capsys.readouterr().out)


def as_array(rows: list[dict], classes: list[str]) -> np.ndarray:
    return np.array([[row["probabilities"][c] for c in classes] for row in rows])


def test_calibration_is_recorded_and_applied_by_the_api(trained):
    _, _, model_fn = trained
    model = ptflow.load(model_fn)
    loaded = load_model(model_fn)
    meta = loaded.meta["metrics"]
    assert loaded.temperature == meta["temperature"] and loaded.temperature > 0
    assert loaded.temperature != 1 and "valid_ece_calibrated" in meta  # fitted (on NLL), so applying it shows
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)  # raw pixels at the model's geometry
    with torch.inference_mode():
        logits = loaded.model(loaded.preprocess(x)).float()
    by_hand = torch.softmax(logits / loaded.temperature, dim=1).numpy()
    np.testing.assert_allclose(model.predict_proba(x.numpy()), by_hand, atol=1e-6)


def test_evaluate_reproduces_the_runs_test_numbers(trained, capsys):
    tmp, _, model_fn = trained
    out_dir = tmp / "eval"
    capsys.readouterr()
    assert run_cli("evaluate", "--model_fn", model_fn, "--out_dir", out_dir, "--num_threads", "1") == 0
    report = json.loads((out_dir / "evaluation.json").read_text())
    status = json.loads((tmp / "runs" / "base" / "run.json").read_text())
    assert report["accuracy"] == pytest.approx(status["test_acc"]) and report["n"] == status["test_n"]
    assert report["temperature"] == status["temperature"]
    assert "temperature" in capsys.readouterr().out


def test_predict_equals_the_python_api_on_every_kind_of_photo(trained, capsys):
    _, photos, model_fn = trained
    files = some_photos(photos)
    rows = predict_json(capsys, model_fn, *files)
    model = ptflow.load(model_fn)
    assert [row["input"] for row in rows] == [str(f) for f in files]
    np.testing.assert_allclose(as_array(rows, model.classes), model.predict_proba([str(f) for f in files]),
                               atol=1e-6)  # JSON rounds to 6 decimals
    for f, row in zip(files, rows):  # one file at a time gives the same as the batch
        np.testing.assert_allclose(list(row["probabilities"].values()), model.predict_proba(str(f))[0], atol=1e-6)


def test_serve_answers_images_as_predict_does_and_batches_concurrent_requests(trained, capsys):
    pytest.importorskip("fastapi")
    import httpx
    from helpers.serving import LOCAL, metric

    from ptflow.serve.app import Settings, create_app

    _, photos, model_fn = trained
    files = some_photos(photos)
    reference = as_array(predict_json(capsys, model_fn, *files), ptflow.load(model_fn).classes)

    async def scenario():
        app = create_app(model_fn, Settings(max_wait_ms=200))  # room for decoding on a busy machine
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=LOCAL) as c:
                while (await c.get("/readyz")).status_code != 200:
                    await asyncio.sleep(0.01)
                info = (await c.get("/v1/model")).json()
                one = [("files", (f.name, f.read_bytes(), "application/octet-stream")) for f in files]
                together = await c.post("/v1/predict/image", files=one)
                apart = await asyncio.gather(*(c.post("/v1/predict/image", files=[part]) for part in one))
                return info, together, apart, (await c.get("/metrics")).text

    info, together, apart, metrics = asyncio.run(scenario())
    assert info["architecture"] == NAME and info["input_shape"] == [3, 32, 32]
    assert together.status_code == 200 and all(r.status_code == 200 for r in apart)
    classes = info["classes"]
    np.testing.assert_allclose(as_array(together.json()["predictions"], classes), reference, atol=2e-6)
    alone = [r.json()["predictions"][0] for r in apart]
    np.testing.assert_allclose(as_array(alone, classes), reference, atol=2e-6)
    assert metric(metrics, "ptflow_batch_size_count") < 1 + len(files)  # concurrent requests shared passes


@pytest.mark.filterwarnings("ignore:.*torch.jit.*:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:.*torch.jit.*:FutureWarning")
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_passes_its_parity_check_and_matches_the_api(trained, capsys, fmt):
    tmp, _, model_fn = trained
    if fmt == "onnx":
        pytest.importorskip("onnx")
        onnxruntime = pytest.importorskip("onnxruntime")
    out = tmp / f"model.{fmt}"
    capsys.readouterr()
    assert run_cli("export", "--model_fn", model_fn, "--format", fmt, "-o", out) == 0
    said = capsys.readouterr().out
    parity = re.search(r"max \|difference\| from PyTorch (\S+)", said)
    assert parity and float(parity.group(1)) <= 1e-4, said
    x = np.random.default_rng(0).integers(0, 256, (7, 3, 32, 32), dtype=np.uint8)
    reference = ptflow.load(model_fn).predict_proba(x)  # the temperature included
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        exported = session.run(["probabilities"], {"input": x})[0]
    else:
        with torch.inference_mode():
            exported = torch.jit.load(str(out))(torch.from_numpy(x)).numpy()
    assert np.abs(exported - reference).max() <= 1e-4


def test_folds_cross_validate_a_timm_model(trained):
    tmp, photos, _ = trained
    runs = tmp / "cv_runs"
    assert run_cli("train", "--dataset", f"folder:{photos}", "--model", NAME, "--runs_dir", runs,
                   "--run_name", "cv", "--n_epochs", "1", "--folds", "2", *FAST) == 0
    folds = [json.loads((runs / f"cv-fold{i}" / "run.json").read_text()) for i in (1, 2)]
    cv = json.loads((runs / "cv" / "run.json").read_text())["cv"]
    assert cv["valid_loss"] == [f["best_valid_loss"] for f in folds] and all(f["test_acc"] is None for f in folds)
    assert cv["valid_loss_mean"] == pytest.approx(np.mean(cv["valid_loss"]))
    assert load_model(runs / "cv" / "model.safetensors").meta["model_source"]["kind"] == "timm"


def fine_tune(photos, runs, name: str, **changes) -> dict:
    return {"dataset": f"folder:{photos}", "model": NAME, "runs_dir": str(runs), "run_name": name,
            "image_size": 32, "n_epochs": 2, "batch_size": 8, "verbose": 0, "num_threads": 1,
            "ema": 0.9, "warmup_epochs": 1, "scheduler": "cosine", "drop_path": 0.1, **changes}


def test_a_stopped_timm_fine_tune_resumes_to_the_run_left_alone(trained, capsys):
    tmp, photos, _ = trained
    runs = tmp / "resume_runs"
    train.train_model(TrainConfig.from_dict(fine_tune(photos, runs, "alone")))

    with pytest.raises(interrupt.Interrupted):
        train.train_model(TrainConfig.from_dict(fine_tune(photos, runs, "stopped")),
                          callbacks=[stop_after_epoch(1)])
    run = runs / "stopped"
    assert read_checkpoint(run / "checkpoint.safetensors")[1]["epoch"] == 1 and len(epoch_metrics(run)) == 1
    capsys.readouterr()
    assert run_cli("train", "--resume", run) == 0
    assert "after epoch 1" in capsys.readouterr().out
    assert_same_run(runs / "alone", run)  # model, checkpoint (EMA and optimizer included), metrics


def test_a_stop_mid_epoch_while_the_backbone_is_frozen_resumes_exactly(trained, capsys, monkeypatch):
    """Stopped at step 2 of epoch 1, with the backbone frozen for that epoch: the resumed run
    unfreezes at the same step as the run left alone, and the EMA continues from the same state."""
    tmp, photos, _ = trained
    runs = tmp / "frozen_runs"
    changes = {"freeze_backbone_epochs": 1, "head_lr_mult": 5.0}
    train.train_model(TrainConfig.from_dict(fine_tune(photos, runs, "alone", **changes)))
    monkeypatch.setattr(train, "epoch_bar_factory", signal_on_step(epoch=0, step=2))  # epochs from 0 here
    with pytest.raises(interrupt.Interrupted):
        train.train_model(TrainConfig.from_dict(fine_tune(photos, runs, "stopped", **changes)))
    monkeypatch.undo()
    run = runs / "stopped"
    meta = read_checkpoint(run / "checkpoint.safetensors")[1]
    assert meta["epoch"] == 0 and meta["position"]["batches"] == 2
    capsys.readouterr()
    assert run_cli("train", "--resume", run) == 0
    assert "at batch 3 of epoch 1" in capsys.readouterr().out
    assert_same_run(runs / "alone", run)


def test_a_sweep_over_a_timm_models_fine_tuning_options(trained, capsys):
    optuna = pytest.importorskip("optuna")
    tmp, photos, _ = trained
    runs = tmp / "sweep_runs"
    capsys.readouterr()
    assert run_cli("sweep", "--trials", "2", "--param", "lr=loguniform:1e-4:1e-2", "--param", "ema=choice:0,0.9",
                   "--study", "ft", "--pruner", "none", "--dataset", f"folder:{photos}", "--model", NAME,
                   "--runs_dir", runs, "--n_epochs", "1", *FAST) == 0
    out = capsys.readouterr().out
    study = optuna.load_study(study_name="ft", storage=f"sqlite:///{runs}/sweeps.db")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for trial in study.trials:
        run_dir = trial.user_attrs["run_dir"]
        config = json.loads(open(os.path.join(run_dir, "config.json")).read())
        assert config["model"] == NAME and config["lr"] == trial.params["lr"] and config["ema"] == trial.params["ema"]
        assert json.loads(open(os.path.join(run_dir, "run.json")).read())["best_valid_loss"] == trial.value
    command = out.split("Best configuration:\n")[1].splitlines()[0]
    assert f"--model {NAME}" in command


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="torchrun's gloo jobs are tested on Linux")
def test_a_fine_tune_under_torchrun_saves_the_model_its_numbers_describe(trained):
    """Two processes fine-tune from the base model's weights, with the backbone frozen for the
    first epoch and an EMA: the job ends cleanly, and a single-process evaluation of the model
    file it saved gives the test accuracy and count the run recorded (no example counted twice or dropped)."""
    tmp, photos, model_fn = trained
    runs = tmp / "torchrun_runs"
    done = subprocess.run([sys.executable, "-m", "ptflow", "train", "--dataset", f"folder:{photos}", "--model", NAME,
                           "--runs_dir", str(runs), "--run_name", "two", "--n_epochs", "2", "--nproc_per_node", "2",
                           "--pretrained_path", str(model_fn), "--freeze_backbone_epochs", "1", "--ema", "0.9",
                           "--image_size", "32", "--batch_size", "16", "--verbose", "0"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    status = json.loads((runs / "two" / "run.json").read_text())
    assert status["status"] == "finished" and status["pretrained"]["loaded"] > 0
    assert run_cli("evaluate", "--model_fn", runs / "two" / "model.safetensors", "--out_dir", tmp / "two_eval",
                   "--num_threads", "1") == 0
    report = json.loads((tmp / "two_eval" / "evaluation.json").read_text())
    assert report["accuracy"] == pytest.approx(status["test_acc"]) and report["n"] == status["test_n"]
