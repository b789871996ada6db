"""`ptflow export`: the exported model takes raw inputs and gives PyTorch's probabilities (within 1e-4),
and carries the class names and preprocessing.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, make_images

from ptflow.data.splits import load_splits
from ptflow.models.files import load_model
from ptflow.models.inference import predict_proba

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
# TorchScript still loads fine; torch 2.13 marks torch.jit deprecated with a DeprecationWarning, 2.14 a FutureWarning
pytestmark = [pytest.mark.filterwarnings("ignore:.*torch.jit.*:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:.*torch.jit.*:FutureWarning")]


def raw_test_inputs(model_fn) -> tuple[np.ndarray, object]:
    """The model's own test split, raw as `ptflow predict` reads it: uint8 images or float features."""
    loaded = load_model(model_fn)
    config = loaded.meta["config"]
    splits = load_splits(config["dataset"], config.get("data_dir"), config.get("target"), config["train_ratio"],
                         config["test_ratio"], config["seed"])
    return splits.x_test, loaded


def onnx_outputs(path, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"input": x})[0]


def torchscript_outputs(path, x: np.ndarray) -> np.ndarray:
    module = torch.jit.load(str(path))
    with torch.inference_mode():
        return module(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("fmt, outputs", [("onnx", onnx_outputs), ("torchscript", torchscript_outputs)])
@pytest.mark.parametrize("which", ["image", "tabular"])
def test_export_matches_pytorch_on_test_inputs(cli, tmp_path, trained, tabular, fmt, outputs, which):
    model_fn = trained["safetensors"] if which == "image" else tabular
    x, loaded = raw_test_inputs(model_fn)
    assert x.dtype == (np.uint8 if which == "image" else np.float32) and len(x) >= 40
    out = tmp_path / f"model.{fmt}"
    code, stdout, err = cli("export", "--model_fn", model_fn, "--format", fmt, "-o", out)
    assert code == 0, err
    assert "max |difference| from PyTorch" in stdout
    reference = predict_proba(loaded, x)
    for batch in (x[:1], x):  # the batch dimension is free
        exported = outputs(out, batch)
        assert exported.shape == (len(batch), len(loaded.classes))
        assert np.abs(exported - reference[:len(batch)]).max() <= 1e-4
    np.testing.assert_allclose(exported.sum(1), 1, atol=1e-5)  # probabilities, not log-probabilities
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # written atomically: no temporary left


def test_onnx_export_carries_classes_and_preprocessing(cli, tmp_path, tabular):
    out = tmp_path / "tab.onnx"
    assert cli("export", "--model_fn", tabular, "--format", "onnx", "-o", out)[0] == 0
    model = onnx.load(str(out))
    props = {p.key: p.value for p in model.metadata_props}
    meta = load_model(tabular).meta
    assert json.loads(props["classes"]) == meta["classes"]
    assert json.loads(props["preprocessing"]) == meta["preprocessing"]
    assert meta["preprocessing"]["mean"] is not None  # standardised: the statistics travel in the graph
    description = json.loads(props["ptflow"])
    assert description["source_sha256"] == meta["sha256"] and description["input_shape"] == [6]
    assert props["input_dtype"] == "float32"
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_torchscript_export_carries_its_description_and_takes_pixels_either_way(cli, tmp_path, trained):
    out = tmp_path / "toy.pt"
    assert cli("export", "--model_fn", trained["safetensors"], "--format", "torchscript", "-o", out)[0] == 0
    extra = {"ptflow.json": ""}
    module = torch.jit.load(str(out), _extra_files=extra)
    description = json.loads(extra["ptflow.json"])
    assert description["classes"] == ["top", "middle", "bottom"] and description["input_dtype"] == "uint8"
    assert description["preprocessing"]["scale"] == pytest.approx(1 / 255)
    x, _ = make_images(4, seed=9)
    raw = torch.from_numpy(x[:, None])
    with torch.inference_mode():  # uint8 pixels, or floats already scaled, as ptflow predict reads them
        torch.testing.assert_close(module(raw), module(raw.float() / 255), atol=1e-5, rtol=0)


def test_onnx_input_is_raw_uint8_pixels(cli, tmp_path, trained):
    out = tmp_path / "toy.onnx"
    assert cli("export", "--model_fn", trained["pth"], "--format", "onnx", "-o", out)[0] == 0
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == ["batch", 1, 8, 8]


def test_export_errors_are_one_line(cli, tmp_path, trained):
    code, _, err = cli("export", "--model_fn", tmp_path / "absent.pth", "--format", "onnx", "-o", tmp_path / "x")
    assert code == 1
    assert_one_line_error(err)
    code, _, err = cli("export", "--model_fn", trained["pth"], "--format", "tflite", "-o", tmp_path / "x")
    assert code == 2
    assert_one_line_error(err)
    assert not (tmp_path / "x").exists()
