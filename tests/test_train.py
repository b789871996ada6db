"""End to end through the CLI on tiny data: run folders, determinism, save -> load, evaluate, predict."""

import json

import numpy as np
import pytest
import torch

from ptflow.data.splits import load_splits
from ptflow.models.files import load_model, read_model_file
from ptflow.models.inference import predict_proba


def test_train_writes_a_complete_run_folder(trained):
    run = trained["run"]
    for name in ("config.json", "run.json", "metrics.jsonl", "env.json", "model.safetensors", "learning_curve.png"):
        assert (run / name).is_file(), name
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "finished" and 0 <= status["test_acc"] <= 1
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == list(range(1, 11))
    # the restored weights are those of the lowest validation loss
    assert status["best_valid_loss"] == min(e["valid_loss"] for e in epochs)
    env = json.loads((run / "env.json").read_text())
    assert env["seed"] == 0 and len(env["data_fingerprint"]) == 64


def test_same_seed_same_numbers(tmp_path, npz_data, cli):
    histories = []
    for name in ("a", "b"):
        code, _, _ = cli("train", "--dataset", f"npz:{npz_data}", "--n_epochs", "2", "--batch_size", "32",
                         "--runs_dir", tmp_path, "--run_name", name, "--verbose", "0")
        assert code == 0
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        histories.append([{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines])
    assert histories[0] == histories[1]
    a, _ = read_model_file(tmp_path / "a" / "model.safetensors")
    b, _ = read_model_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_compile_trains_the_same_model(tmp_path, npz_data, cli, monkeypatch):
    """--compile goes through a compiled module and saves the plain one, with the same numbers.

    The "eager" backend keeps the test fast: it checks ptflow's plumbing around torch.compile
    (the compiled module is called, state.model is saved), not the compiler itself.
    """
    compile_ = torch.compile
    compiled = []

    def eager_compile(model, **kwargs):
        compiled.append(model)
        return compile_(model, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", eager_compile)
    for name, flags in (("plain", ()), ("compiled", ("--compile",))):
        code, _, err = cli("train", "--dataset", f"npz:{npz_data}", "--n_epochs", "2", "--batch_size", "32",
                           "--runs_dir", tmp_path, "--run_name", name, "--verbose", "0", *flags)
        assert code == 0, err
    assert len(compiled) == 1
    plain, _ = read_model_file(tmp_path / "plain" / "model.safetensors")
    compiled_weights, _ = read_model_file(tmp_path / "compiled" / "model.safetensors")
    assert plain.keys() == compiled_weights.keys()  # no "_orig_mod." prefixes in the saved file
    assert all(torch.allclose(plain[k], compiled_weights[k], atol=1e-6) for k in plain)


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_save_then_load_gives_identical_outputs(trained, npz_data, fmt):
    loaded = load_model(trained[fmt])
    splits = load_splits(f"npz:{npz_data}")
    probs = predict_proba(loaded, splits.x_test)
    reference = predict_proba(load_model(trained["safetensors"]), splits.x_test)
    np.testing.assert_array_equal(probs, reference)
    assert loaded.classes == ["top", "middle", "bottom"]
    assert loaded.meta["config"]["n_epochs"] == 10


def test_pth_is_the_articles_layout_and_loads_weights_only(trained):
    blob = torch.load(trained["pth"], weights_only=True)
    assert set(blob) >= {"model", "opt", "config"}
    assert isinstance(blob["config"], dict) and blob["config"]["n_layers"] == 5


def test_evaluate_prints_accuracy_and_writes_pictures(trained, cli, tmp_path):
    code, out, _ = cli("evaluate", "--model_fn", trained["safetensors"], "--out_dir", tmp_path / "eval")
    assert code == 0
    reported = float(out.splitlines()[0].split(":")[1].split()[0])
    status = json.loads((trained["run"] / "run.json").read_text())
    assert reported == pytest.approx(status["test_acc"], abs=1e-4)
    for name in ("confusion_matrix.png", "reliability.png", "samples.png", "mistakes.png", "evaluation.json",
                 "predictions.npz"):
        assert (tmp_path / "eval" / name).is_file()
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert np.array(report["confusion_matrix"]).sum() == 60


def test_predict_formats_agree(trained, npz_data, cli, tmp_path):
    splits = load_splits(f"npz:{npz_data}")
    np.savez(tmp_path / "few.npz", x=splits.x_test[:4])
    code, out, _ = cli("predict", "--model_fn", trained["pth"], tmp_path / "few.npz", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    expected = predict_proba(load_model(trained["pth"]), splits.x_test[:4]).argmax(1)
    assert [r["label"] for r in rows] == expected.tolist()
    code, out, _ = cli("predict", "--model_fn", trained["pth"], tmp_path / "few.npz", "--format", "csv")
    assert out.splitlines()[0].startswith("input,label,class,p_top")
    assert [int(line.split(",")[1]) for line in out.splitlines()[1:]] == expected.tolist()


def test_predict_image_files(trained, npz_data, cli, tmp_path):
    from PIL import Image

    splits = load_splits(f"npz:{npz_data}")
    Image.fromarray(splits.x_test[0, 0]).save(tmp_path / "one.png")
    code, out, _ = cli("predict", "--model_fn", trained["safetensors"], tmp_path)
    assert code == 0 and "one.png" in out


def test_trained_fixture_learned_its_task(trained):
    status = json.loads((trained["run"] / "run.json").read_text())
    assert status["test_acc"] >= 0.9  # three easy classes: the tests below read a real model


def test_predict_mixes_raw_pixels_and_scaled_values(trained, npz_data, cli, tmp_path):
    """uint8 images and float CSV rows in one call: each is read on its own scale."""
    splits = load_splits(f"npz:{npz_data}")
    np.savez(tmp_path / "pixels.npz", x=splits.x_test[:3])
    np.savetxt(tmp_path / "scaled.csv", splits.x_test[:3].reshape(3, -1) / 255.0, delimiter=",")
    code, out, _ = cli("predict", "--model_fn", trained["pth"], tmp_path / "pixels.npz", tmp_path / "scaled.csv",
                       "--format", "json")
    assert code == 0
    rows = json.loads(out)
    pixels, scaled = rows[:3], rows[3:]
    for a, b in zip(pixels, scaled):
        assert a["label"] == b["label"]
        for c in a["probabilities"]:
            assert a["probabilities"][c] == pytest.approx(b["probabilities"][c], abs=1e-5)
