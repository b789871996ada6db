"""The examples in examples/ run as they are, so they never go stale."""

import os
import re
import subprocess
import sys

import pytest
from helpers import REPO


def test_the_predict_notebook_runs_and_reports_the_models_accuracy(tmp_path, npz_data):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(REPO / "examples" / "predict.ipynb", as_version=4)
    # No model file in the working folder: the notebook trains its quick digits model first.
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                     for output in cell.outputs)
    accuracy = float(re.search(r"Accuracy: ([0-9.]+) on 359 test examples", text).group(1))
    assert accuracy > 0.9  # the 8x8 digits' MLP gets ~0.98; far lower would mean a broken pipeline
    images = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs
              if "image/png" in o.get("data", {})]
    assert len(images) == 1  # the grid of predictions
    assert (tmp_path / "model.safetensors").is_file()


def test_the_custom_model_script_trains_and_reloads_its_model(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "examples" / "custom_model.py"), "--n_epochs", "5",
                           "--runs_dir", str(tmp_path / "runs")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    assert done.returncode == 0, done.stderr
    trained = float(re.search(r"test accuracy ([0-9.]+)", done.stdout).group(1))
    reloaded = float(re.search(r"test accuracy from the reloaded model: ([0-9.]+)", done.stdout).group(1))
    assert trained == reloaded and trained > 0.8
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.endswith("-digits-WideMLP")
