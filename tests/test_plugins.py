"""Users' own models and datasets: the example plugin installed for real, import paths, the trust rule."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO

import ptflow

TINY_MODULE = '''
import torch.nn as nn


class TinyNet(nn.Module):
    """Logits from one linear layer: the smallest model from outside ptflow."""

    def __init__(self, input_shape, n_classes, hidden=16):
        super().__init__()
        size = 1
        for s in input_shape:
            size *= s
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(size, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    def forward(self, x):
        return self.net(x)


def bands():
    """A dataset function: arrays in the npz layout."""
    import numpy as np
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    x = (rng.standard_normal((200, 4)) + y[:, None] * 3).astype("float32")
    return {"x": x, "y": y, "classes": ["low", "high"]}
'''


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """examples/plugin installed the way a user installs it (pip), into a folder of its own."""
    site = tmp_path_factory.mktemp("plugin-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(REPO / "examples" / "plugin")], check=True, capture_output=True)
    return site


@pytest.fixture(scope="module")
def user_code(tmp_path_factory) -> Path:
    """A module of the user's own, importable as my_models (not installed: an import path)."""
    folder = tmp_path_factory.mktemp("user-code")
    (folder / "my_models.py").write_text(TINY_MODULE)
    return folder


def ptflow_cli(*args, pythonpath: Path | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath) if pythonpath else ""}
    return subprocess.run([sys.executable, "-m", "ptflow", *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_an_installed_plugin_trains_evaluates_and_exports_like_a_built_in(plugin_site, tmp_path):
    runs = tmp_path / "runs"
    done = ptflow_cli("train", "--dataset", "shapes", "--model", "resnet_small", "--model_args",
                      '{"widths": [8, 16]}', "--n_epochs", "2", "--batch_size", "64", "--runs_dir", runs,
                      "--run_name", "plug", "--verbose", "0", pythonpath=plugin_site)
    assert done.returncode == 0, done.stderr
    model_fn = runs / "plug" / "model.safetensors"
    from ptflow.models.files import read_model_file

    _, meta = read_model_file(model_fn)
    assert meta["model"] == "resnet_small" and meta["model_args"]["widths"] == [8, 16]
    assert meta["model_source"] == {"name": "resnet_small", "kind": "entry_point",
                                    "target": "ptflow_resnet.models:ResNetSmall", "package": "ptflow-resnet",
                                    "version": "0.1.0"}
    assert meta["classes"] == ["circle", "square", "triangle", "cross"]
    # An installed plugin is trusted like a built-in: no --trust_model_code needed to use its files.
    evaluated = ptflow_cli("evaluate", "--model_fn", model_fn, "--out_dir", tmp_path / "eval", pythonpath=plugin_site)
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert report["accuracy"] == pytest.approx(json.loads((runs / "plug" / "run.json").read_text())["test_acc"])
    exported = ptflow_cli("export", "--model_fn", model_fn, "--format", "onnx", "-o", tmp_path / "m.onnx",
                          pythonpath=plugin_site)
    assert exported.returncode == 0, exported.stderr  # export compares ONNX with PyTorch within 1e-4
    report_page = ptflow_cli("report", runs / "plug", "-o", tmp_path / "r.html", pythonpath=plugin_site)
    assert report_page.returncode == 0, report_page.stderr
    assert "circle" in (tmp_path / "r.html").read_text()


def test_a_file_whose_plugin_is_not_installed_says_which_package(plugin_site, tmp_path):
    runs = tmp_path / "runs"
    assert ptflow_cli("train", "--dataset", "shapes", "--model", "resnet_small", "--model_args", '{"widths": [4]}',
                      "--n_epochs", "1", "--runs_dir", runs, "--run_name", "p", "--verbose", "0",
                      pythonpath=plugin_site).returncode == 0
    done = ptflow_cli("predict", "--model_fn", runs / "p" / "model.safetensors")  # without the plugin
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "unknown model 'resnet_small'" in done.stderr


def test_an_import_path_model_is_the_users_choice_on_the_command_line(user_code, tmp_path):
    runs = tmp_path / "runs"
    done = ptflow_cli("train", "--dataset", "my_models:bands", "--model", "my_models:TinyNet", "--model_args",
                      '{"hidden": 8}', "--n_epochs", "3", "--batch_size", "32", "--runs_dir", runs,
                      "--run_name", "mine", "--verbose", "0", pythonpath=user_code)
    assert done.returncode == 0, done.stderr
    assert "Test accuracy" in done.stdout
    config = json.loads((runs / "mine" / "config.json").read_text())
    assert config["model"] == "my_models:TinyNet" and config["model_args"] == {"hidden": 8}


def test_an_import_path_read_from_a_file_needs_trust(user_code, tmp_path):
    runs = tmp_path / "runs"
    assert ptflow_cli("train", "--dataset", "digits", "--model", "my_models:TinyNet", "--n_epochs", "1",
                      "--runs_dir", runs, "--run_name", "t", "--verbose", "0", pythonpath=user_code).returncode == 0
    model_fn = runs / "t" / "model.safetensors"
    for command in (["evaluate", "--model_fn", model_fn], ["predict", "--model_fn", model_fn],
                    ["export", "--model_fn", model_fn, "--format", "onnx", "-o", tmp_path / "x.onnx"],
                    ["serve", "--model_fn", model_fn, "--port", "0"],
                    ["report", runs / "t", "-o", tmp_path / "r.html"]):
        refused = ptflow_cli(*command, pythonpath=user_code)
        assert refused.returncode == 1, (command, refused.stderr)
        assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
        assert "--trust_model_code" in refused.stderr and "my_models:TinyNet" in refused.stderr
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "r.html").exists()
    trusted = ptflow_cli("evaluate", "--model_fn", model_fn, "--out_dir", tmp_path / "e", "--trust_model_code",
                         pythonpath=user_code)
    assert trusted.returncode == 0, trusted.stderr
    # The same rule in Python
    sys.path.insert(0, str(user_code))
    try:
        with pytest.raises(ptflow.PtflowError, match="trust_code=True"):
            ptflow.load(model_fn)
        model = ptflow.load(model_fn, trust_code=True)
        assert model.predict_proba(np.zeros((1, 64), np.float32)).shape == (1, 10)
    finally:
        sys.path.remove(str(user_code))


def test_resume_reads_the_model_name_from_the_run_folder_so_it_needs_trust(user_code, tmp_path):
    runs = tmp_path / "runs"
    assert ptflow_cli("train", "--dataset", "digits", "--model", "my_models:TinyNet", "--n_epochs", "1",
                      "--runs_dir", runs, "--run_name", "r", "--verbose", "0", pythonpath=user_code).returncode == 0
    refused = ptflow_cli("train", "--resume", runs / "r", "--n_epochs", "2", pythonpath=user_code)
    assert refused.returncode == 1 and "--trust_model_code" in refused.stderr, refused.stderr
    trusted = ptflow_cli("train", "--resume", runs / "r", "--n_epochs", "2", "--trust_model_code",
                         pythonpath=user_code)
    assert trusted.returncode == 0, trusted.stderr
    assert json.loads((runs / "r" / "run.json").read_text())["epochs_run"] == 2


def test_a_sweep_searches_a_model_argument(user_code, tmp_path):
    done = ptflow_cli("sweep", "--dataset", "my_models:bands", "--model", "my_models:TinyNet", "--n_epochs", "2",
                      "--batch_size", "32", "--trials", "3", "--param", "model_args.hidden=choice:4,8,16",
                      "--runs_dir", tmp_path / "runs", "--study", "args", "--pruner", "none", pythonpath=user_code)
    assert done.returncode == 0, done.stderr
    configs = (tmp_path / "runs").glob("args-trial*/config.json")
    hidden = {json.loads(p.read_text())["model_args"]["hidden"] for p in configs}
    assert hidden <= {4, 8, 16} and len(hidden) >= 1
    assert "model_args.hidden" in done.stdout


def test_unknown_names_and_bad_model_arguments_are_one_line_errors(tmp_path):
    for args, message in ((["--model", "resnet_huge"], "unknown model 'resnet_huge'"),
                          (["--dataset", "nosuch"], "unknown dataset 'nosuch'"),
                          (["--model", "no_such_module:Net"], "cannot import no_such_module"),
                          (["--model_args", '{"widht": 3}'], "cannot be built with arguments"),
                          (["--model_args", "[1, 2]"], "expected a JSON object")):
        done = ptflow_cli("train", "--dataset", "digits", "--n_epochs", "1", "--runs_dir", tmp_path / "runs",
                          "--verbose", "0", *args)
        assert done.returncode in (1, 2) and done.stderr.count("\n") == 1, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)


def test_the_server_answers_with_a_plugin_model(plugin_site, tmp_path):
    from fastapi.testclient import TestClient

    from ptflow.serve.app import create_app

    runs = tmp_path / "runs"
    assert ptflow_cli("train", "--dataset", "shapes", "--model", "resnet_small", "--model_args", '{"widths": [4]}',
                      "--n_epochs", "1", "--runs_dir", runs, "--run_name", "s", "--verbose", "0",
                      pythonpath=plugin_site).returncode == 0
    sys.path.insert(0, str(plugin_site))  # installed: entry points are found on sys.path
    try:
        model = ptflow.load(runs / "s" / "model.safetensors")
        x = np.zeros((2, 28, 28), np.float32)
        x[1, 5:20, 5:20] = 1.0
        app = create_app(runs / "s" / "model.safetensors")
        with TestClient(app, base_url="http://localhost") as client:  # without a key, a loopback Host
            for _ in range(500):  # the model loads and warms up while /healthz already answers
                if client.get("/readyz").status_code == 200:
                    break
                time.sleep(0.01)
            answer = client.post("/v1/predict", json={"inputs": x.tolist()})
            described = client.get("/v1/model").json()
    finally:
        sys.path.remove(str(plugin_site))
    assert answer.status_code == 200, answer.text
    served = np.array([list(p["probabilities"].values()) for p in answer.json()["predictions"]])
    np.testing.assert_allclose(served, model.predict_proba(x), atol=1e-5)  # the API's numbers, over HTTP
    assert described["architecture"] == "resnet_small" and described["classes"][0] == "circle"
