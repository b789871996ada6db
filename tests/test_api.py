"""The Python API: ptflow.train and ptflow.load give the numbers the command line gives."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import make_images
from PIL import Image

import ptflow


@pytest.fixture(scope="module")
def result(tmp_path_factory, npz_data):
    runs = tmp_path_factory.mktemp("api") / "runs"
    return ptflow.train(dataset=f"npz:{npz_data}", n_epochs=4, batch_size=32, runs_dir=str(runs), verbose=0)


def test_train_returns_the_run_folder_its_metrics_and_the_saved_model(result):
    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["status"] == "finished"
    assert result.metrics["test_acc"] == run["test_acc"] and result.metrics["best_epoch"] == run["best_epoch"]
    assert result.config.n_epochs == 4 and result.model.classes == ["top", "middle", "bottom"]
    x_test, y_test = result.model.test_split()
    # The model in hand is the saved file: its test accuracy is the one training measured.
    assert float((result.model.predict(x_test) == y_test).mean()) == pytest.approx(run["test_acc"])


def test_api_probabilities_equal_the_cli_predict_output(result, tmp_path, cli):
    x, _ = make_images(5, seed=9)
    paths = []
    for i, image in enumerate(x):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(image).save(paths[-1])
    code, out, _ = cli("predict", "--model_fn", result.run_dir / "model.safetensors", *paths, "--format", "json")
    assert code == 0
    from_cli = np.array([list(row["probabilities"].values()) for row in json.loads(out)])
    from_api = result.model.predict_proba([str(p) for p in paths])
    np.testing.assert_allclose(from_api, from_cli, atol=1e-6)  # the CLI rounds to 6 decimals
    # a folder, a single path and PIL images are the same inputs
    np.testing.assert_array_equal(result.model.predict_proba(tmp_path), from_api)
    np.testing.assert_allclose(result.model.predict_proba(paths[0]), from_api[:1], atol=1e-6)  # batch of 1
    np.testing.assert_array_equal(result.model.predict_proba([Image.open(p) for p in paths]), from_api)


def test_arrays_tensors_and_single_examples_are_the_same_inputs(result):
    x, _ = make_images(6, seed=4)
    batch = result.model.predict_proba(x)  # (N, H, W) uint8 pixels of a one-channel model
    assert batch.shape == (6, 3) and np.allclose(batch.sum(1), 1, atol=1e-5)
    np.testing.assert_array_equal(result.model.predict_proba(x[:, None]), batch)  # (N, C, H, W)
    np.testing.assert_array_equal(result.model.predict_proba(x.reshape(6, -1)), batch)  # flat rows
    np.testing.assert_array_equal(result.model.predict_proba(torch.from_numpy(x)), batch)
    np.testing.assert_allclose(result.model.predict_proba(x[0]), batch[:1], atol=1e-6)  # one example
    # floats are values already divided by 255, as in `ptflow predict` and the server
    np.testing.assert_allclose(result.model.predict_proba(x / 255.0), batch, atol=1e-6)
    np.testing.assert_array_equal(result.model.predict(x), batch.argmax(1))


def test_torch_module_and_preprocess_reproduce_predict_proba(result):
    x, _ = make_images(4, seed=5)
    with torch.no_grad():
        scores = result.model.torch_module(result.model.preprocess(torch.from_numpy(x[:, None])))
    np.testing.assert_allclose(torch.softmax(scores, -1).numpy(), result.model.predict_proba(x), atol=1e-6)
    assert isinstance(result.model.torch_module, torch.nn.Module) and not result.model.torch_module.training


def test_evaluate_equals_the_evaluate_command(result, tmp_path, cli):
    code, _, _ = cli("evaluate", "--model_fn", result.run_dir / "model.safetensors", "--out_dir", tmp_path)
    assert code == 0
    from_cli = json.loads((tmp_path / "evaluation.json").read_text())
    report = result.model.evaluate()
    assert report["accuracy"] == from_cli["accuracy"]
    assert report["confusion_matrix"] == from_cli["confusion_matrix"]


def test_a_wrong_shape_is_a_clear_error(result):
    with pytest.raises(ptflow.PtflowError, match=r"shape \(5,\) per example does not fit the model's input"):
        result.model.predict(np.zeros((2, 5)))
    with pytest.raises(ptflow.PtflowError, match="expected numbers, images or file paths"):
        result.model.predict(np.array(["a", "b"]))
    with pytest.raises(ptflow.PtflowError, match="no such file or folder"):
        result.model.predict("/no/such/image.png")


def test_options_are_validated_as_the_flags_are(tmp_path):
    with pytest.raises(ptflow.UsageError, match="unknown config key"):
        ptflow.train(dataset="digits", n_epoch=3)
    with pytest.raises(ptflow.UsageError, match="--n_epochs must be an integer"):
        ptflow.train(dataset="digits", n_epochs="3")
    with pytest.raises(ptflow.UsageError, match="--lr must be > 0"):
        ptflow.train(dataset="digits", lr=-1.0)
    with pytest.raises(ptflow.UsageError, match="unknown preset"):
        ptflow.train(dataset="digits", preset="fastest")
    assert not list(tmp_path.iterdir())


def test_a_preset_fills_what_the_keywords_leave_out(tmp_path, monkeypatch):
    seen = {}

    def fake_run(config, **kwargs):
        seen["config"] = config
        raise ptflow.PtflowError("stop here")

    monkeypatch.setattr("ptflow.training.train.train_model", fake_run)
    with pytest.raises(ptflow.PtflowError, match="stop here"):
        ptflow.train(dataset="digits", preset="fast", n_epochs=1)
    config = seen["config"]
    assert (config.model, config.lr, config.n_epochs, config.dataset) == ("cnn", 0.01, 1, "digits")


def test_a_model_class_is_recorded_by_its_import_path(tmp_path):
    from ptflow.api import _named

    assert _named(torch.nn.Linear) == "torch.nn.modules.linear:Linear"
    assert _named("mlp") == "mlp" and _named(None) is None


def test_importing_ptflow_stays_cheap():
    code = "import sys, ptflow; ptflow.__version__; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert set(ptflow.__all__) <= set(dir(ptflow))
