"""Honest numbers through the CLI: the temperature from --calibrate in predict, serve and export;
McNemar's test in `runs compare` (identical models, different models, different data); the
`runs` table and the learning-curve axis."""

import json
import re

import numpy as np
import pytest
import torch
from helpers.serving import wait_ready

from ptflow import predictions, stats
from ptflow.models.files import load_model, save_model
from ptflow.models.inference import predict_proba


def columns(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def train(cli, runs_dir, name, *flags, dataset="digits"):
    code, out, err = cli("train", "--dataset", dataset, "--batch_size", "64", "--runs_dir", runs_dir,
                         "--run_name", name, "--verbose", "0", *flags)
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    """Runs on the digits: two identical ones, a weaker one, a calibrated one, and one of the cnn on other data."""
    from helpers import run_cli

    root = tmp_path_factory.mktemp("numbers")
    common = ["--dataset", "digits", "--batch_size", "64", "--runs_dir", root, "--verbose", "0"]
    for name, flags in (("a", ["--n_epochs", "6"]), ("twin", ["--n_epochs", "6"]),
                        ("weak", ["--n_epochs", "1", "--lr", "1e-4", "--n_layers", "2"]),
                        ("calibrated", ["--n_epochs", "6", "--calibrate"])):
        assert run_cli("train", *common, "--run_name", name, *flags) == 0
    return root


def significance(out: str) -> dict[str, list[str]]:
    block = out.split("significance (")[1].split("\nWrote")[0].splitlines()[1:]
    return {columns(line)[0]: columns(line)[1:] for line in block[2:] if " vs " in line and "  " in line}


def test_identical_models_do_not_differ_and_a_weak_one_does(cli, digits_runs, tmp_path):
    code, out, err = cli("runs", "compare", "a", "twin", "weak", "--runs_dir", digits_runs, "-o", tmp_path / "c.png")
    assert code == 0, err
    rows = significance(out)
    same = rows["a vs twin"]  # the same seed and config: the same predictions on CPU
    assert same[:4] == ["359", "0", "0", "1"] and "no significant difference" in same[4]
    a, weak = (predictions.load(digits_runs / r / "predictions.npz") for r in ("a", "weak"))
    only_a, only_weak = int((a.correct & ~weak.correct).sum()), int((~a.correct & weak.correct).sum())
    different = rows["a vs weak"]
    assert different[1:3] == [str(only_a), str(only_weak)] and only_a > only_weak
    p = stats.mcnemar_exact(only_a, only_weak)
    assert p < 1e-3 and different[3] == stats.format_p(p) and different[4] == "a is more accurate (p < 0.05)"
    metrics = {columns(line)[0]: columns(line)[1:] for line in out.split("metrics\n")[1].splitlines()[2:10]}
    accuracy = json.loads((digits_runs / "a" / "run.json").read_text())["test_acc"]
    assert metrics["test acc (95% CI)"][0] == \
        f"{accuracy:.4f} {stats.format_interval(stats.wilson_interval(round(accuracy * 359), 359))}"


def test_compare_refuses_to_pair_runs_tested_on_different_data(cli, digits_runs, npz_data, tmp_path):
    other = tmp_path / "runs"
    train(cli, other, "toy", "--n_epochs", "1", dataset=f"npz:{npz_data}")
    code, out, err = cli("runs", "compare", digits_runs / "a", other / "toy", "-o", tmp_path / "c.png")
    assert code == 0, err
    assert "a vs toy: not compared: they were tested on different data (test-split fingerprints" in out
    (other / "toy" / "predictions.npz").write_bytes(b"not a zip")
    code, out, err = cli("runs", "compare", digits_runs / "a", other / "toy", "-o", tmp_path / "c.png")
    assert code == 1 and "not a readable ptflow predictions file" in err and "Traceback" not in err
    (other / "toy" / "predictions.npz").unlink()
    code, out, err = cli("runs", "compare", digits_runs / "a", other / "toy", "-o", tmp_path / "c.png")
    assert code == 0 and "toy: no test predictions (`ptflow evaluate --model_fn" in out


def test_evaluate_writes_the_same_predictions_as_training(cli, digits_runs, tmp_path):
    code, out, err = cli("evaluate", "--model_fn", digits_runs / "a" / "model.safetensors", "--out_dir", tmp_path)
    assert code == 0, err
    trained, evaluated = (predictions.load(p / "predictions.npz") for p in (digits_runs / "a", tmp_path))
    assert trained.fingerprint == evaluated.fingerprint and np.array_equal(trained.y_pred, evaluated.y_pred)
    assert np.allclose(trained.p_pred, evaluated.p_pred, atol=1e-5)
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["accuracy_ci95"] == list(stats.wilson_interval(int(evaluated.correct.sum()), 359))
    interval = stats.format_interval(report["accuracy_ci95"])
    assert out.startswith(f"Accuracy: {report['accuracy']:.4f}  95% CI {interval}")
    assert f"Macro-F1: {report['macro_f1']:.4f}" in out and f"Calibration: ECE {report['ece']:.4f}" in out
    assert sum(b["count"] for b in report["reliability"]) == 359


def test_calibrate_stores_a_temperature_that_predict_serve_and_export_apply(cli, digits_runs, tmp_path):
    status = json.loads((digits_runs / "calibrated" / "run.json").read_text())
    model_fn = digits_runs / "calibrated" / "model.safetensors"
    loaded = load_model(model_fn)
    temperature = loaded.meta["temperature"]
    assert temperature == status["temperature"] and temperature != pytest.approx(1.0, abs=0.05)
    assert status["valid_ece_calibrated"] < status["valid_ece"]  # fitted where it is measured: it must help there
    assert "temperature" not in load_model(digits_runs / "a" / "model.safetensors").meta  # optional key
    from sklearn.datasets import load_digits

    x = load_digits().images[:16].astype(np.float32) / 16  # the digits' own scale: 0..16 -> 0..1
    x = x[:, None]
    with torch.inference_mode():
        raw = torch.softmax(loaded.model(loaded.preprocess(torch.from_numpy(x))).double() / temperature, -1)
    probs = predict_proba(loaded, x)
    assert np.allclose(probs, raw.numpy(), atol=1e-5)
    np.savez(tmp_path / "x.npz", x=x)  # predict: the same probabilities
    code, out, err = cli("predict", "--model_fn", model_fn, tmp_path / "x.npz", "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert np.allclose([list(r["probabilities"].values()) for r in rows], probs, atol=1e-5)
    code, _, err = cli("export", "--model_fn", model_fn, "--format", "torchscript", "-o", tmp_path / "m.pt")
    assert code == 0, err
    from ptflow.models.export import run_torchscript

    assert np.allclose(run_torchscript((tmp_path / "m.pt").read_bytes(), x), probs, atol=1e-5)
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from ptflow.serve.app import create_app

    with TestClient(create_app(model_fn), base_url="http://localhost") as client:
        wait_ready(client)  # the model loads while /readyz says 503: polled with pauses, not 500 requests in a row
        answer = client.post("/v1/predict", json={"inputs": x[:4].reshape(4, -1).tolist()})
    assert answer.status_code == 200, answer.text
    served = [list(p["probabilities"].values()) for p in answer.json()["predictions"]]
    assert np.allclose(served, probs[:4], atol=1e-5)


def test_a_damaged_temperature_is_a_clear_error(cli, digits_runs, tmp_path):
    loaded = load_model(digits_runs / "calibrated" / "model.safetensors")
    for bad in (-1.0, 0, "hot", float("inf")):
        meta = {k: v for k, v in loaded.meta.items() if k not in ("path", "sha256")}
        save_model(tmp_path / "bad.safetensors", loaded.model, {**meta, "temperature": bad})
        code, _, err = cli("predict", "--model_fn", tmp_path / "bad.safetensors")
        assert code == 1 and "temperature must be a positive number" in err and "Traceback" not in err, err


def test_runs_table_shows_the_model_once_and_test_accuracy_with_its_interval(cli, npz_data, tmp_path):
    for name, model in (("m", "mlp"), ("c", "cnn")):
        train(cli, tmp_path, name, "--model", model, "--n_epochs", "1", dataset=f"npz:{npz_data}")
    code, out, err = cli("runs", "--runs_dir", tmp_path)
    assert code == 0, err
    header = columns(out.splitlines()[0])
    assert header.count("model") == 1 and header.count("dataset") == 1 and "test acc (95% CI)" in header
    for line in out.splitlines()[2:]:
        record = json.loads((tmp_path / line.split()[0] / "run.json").read_text())
        cell = columns(line)[header.index("test acc (95% CI)")]
        assert cell == f"{record['test_acc']:.4f} {stats.format_interval(record['test_acc_ci95'])}"


def test_learning_curves_of_short_runs_tick_whole_epochs():
    from ptflow.plots import learning_curve_figure

    history = [{"epoch": e, "train_loss": 1 / e, "valid_loss": 1.2 / e} for e in (1, 2, 3)]
    ax = learning_curve_figure({"run": history}).axes[0]
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
