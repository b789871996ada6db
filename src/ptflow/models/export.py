"""`ptflow export`: a model file -> ONNX or TorchScript that takes raw inputs and returns probabilities.

The exported graph is `Preprocess`, the classifier, its temperature (--calibrate; 1 without) and
a softmax, so it takes what `ptflow predict` reads from files (uint8 pixels (N, C, H, W) for
image models, raw float32 features (N, F) for tabular ones) and gives class probabilities
(N, n_classes), batch size free.
The description a user needs (class names, input shape and dtype, preprocessing, metrics, the
source file's sha256) travels inside: ONNX `metadata_props`, TorchScript `_extra_files`.
After writing, the export is run on sample inputs and compared with PyTorch.
"""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import torch
import torch.nn as nn

from ptflow.console import info
from ptflow.data.imaging import interpolation_of
from ptflow.errors import PtflowError, first_line
from ptflow.files import atomic_write_bytes
from ptflow.models.files import LoadedModel, load_model
from ptflow.models.inference import predict_proba

TOLERANCE = 1e-4  # max |probability difference| from PyTorch accepted after export
EXTRA_FILE = "ptflow.json"  # TorchScript: the description, in torch.jit.save's _extra_files


class RawToProbabilities(nn.Module):
    """Raw inputs -> class probabilities: the classifier with its preprocessing in front and its
    temperature (1 when uncalibrated) behind."""

    def __init__(self, loaded: LoadedModel):
        super().__init__()
        self.preprocess = loaded.preprocess
        self.model = loaded.model
        self.temperature = float(loaded.temperature or 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # |x| = (batch_size, *input_shape) raw -> |p| = (batch_size, n_classes)
        scores = self.model(self.preprocess(x)).float() / self.temperature  # logits or log-probabilities alike
        return torch.softmax(scores, dim=-1)


def description(loaded: LoadedModel) -> dict:
    meta = loaded.meta
    return {"format": "ptflow.export", "classes": loaded.classes, "input_shape": list(loaded.input_shape),
            "input_dtype": input_dtype(loaded), "output": "probabilities", "preprocessing": meta["preprocessing"],
            "image_style": meta.get("image_style"), "crop_pct": meta.get("crop_pct"),
            "interpolation": interpolation_of(meta), "model": meta["model"],
            "dataset": meta.get("dataset"),
            "metrics": meta.get("metrics", {}), "temperature": loaded.temperature, "source_sha256": meta["sha256"],
            "versions": meta.get("versions", {})}


def input_dtype(loaded: LoadedModel) -> str:
    return "uint8" if len(loaded.input_shape) == 3 else "float32"


def sample_inputs(loaded: LoadedModel, n: int = 64, seed: int = 0) -> np.ndarray:
    """Raw inputs to compare the export against PyTorch: random pixels, or features near the train statistics."""
    rng = np.random.default_rng(seed)
    shape = (n, *loaded.input_shape)
    if input_dtype(loaded) == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    prep = loaded.meta["preprocessing"]
    mean, std = np.asarray(prep.get("mean") or 0.0), np.asarray(prep.get("std") or 1.0)
    return (rng.standard_normal(shape) * std + mean).astype(np.float32)


def to_onnx(loaded: LoadedModel, opset: int = 17) -> bytes:
    import onnx

    module = RawToProbabilities(loaded).eval()
    example = torch.from_numpy(sample_inputs(loaded, 2))
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript-based exporter warns that newer ones exist
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=opset, input_names=["input"],
                              output_names=["probabilities"],
                              dynamic_axes={"input": {0: "batch"}, "probabilities": {0: "batch"}})
        except (ValueError, RuntimeError) as exc:  # an opset this torch cannot write, an unsupported operation
            raise PtflowError(f"ONNX export at opset {opset} failed: {first_line(exc)[:200]}") from None
    proto = onnx.load_from_string(buffer.getvalue())
    desc = description(loaded)
    props = {"ptflow": json.dumps(desc), "classes": json.dumps(desc["classes"]),
             "preprocessing": json.dumps(desc["preprocessing"]), "input_dtype": desc["input_dtype"]}
    onnx.helper.set_model_props(proto, props)
    proto.doc_string = f"ptflow {desc['model']} on {desc['dataset']}: raw inputs -> class probabilities"
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def to_torchscript(loaded: LoadedModel) -> bytes:
    module = RawToProbabilities(loaded).eval()
    with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export, which has no loader here
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(module)  # scripted, not traced: both the uint8 and float branches survive
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer, _extra_files={EXTRA_FILE: json.dumps(description(loaded))})
    return buffer.getvalue()


def run_onnx(data: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"input": x})[0]


def run_torchscript(data: bytes, x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    with torch.inference_mode():
        return module(torch.from_numpy(x)).numpy()


def export_model(model_fn: str, fmt: str, out: str, opset: int = 17, trust_code: bool = False) -> float | None:
    """Export, write atomically, check against PyTorch; returns the max difference (None if unchecked)."""
    loaded = load_model(model_fn, "cpu", trust_code)
    try:
        data = to_onnx(loaded, opset) if fmt == "onnx" else to_torchscript(loaded)
    except ImportError as exc:
        raise PtflowError(f"ONNX export needs {exc.name}: pip install 'ptflow[export]'") from None
    x = sample_inputs(loaded)
    reference = predict_proba(loaded, x)
    try:
        exported = run_onnx(data, x) if fmt == "onnx" else run_torchscript(data, x)
    except ImportError:
        exported = None  # no onnxruntime here: write the file, say it went unchecked
    difference = None if exported is None else float(np.abs(exported - reference).max())
    if difference is not None and difference > TOLERANCE:
        raise PtflowError(f"the {fmt} export differs from PyTorch by {difference:.2e} (more than {TOLERANCE:g}); "
                          f"nothing written")
    atomic_write_bytes(out, data)
    check = ("unchecked: pip install onnxruntime to compare" if difference is None else
             f"max |difference| from PyTorch {difference:.1e} on {len(x)} sample inputs")
    info(f"Wrote {out} ({fmt}, {len(data):,} bytes): {input_dtype(loaded)} {tuple(loaded.input_shape)} per input "
         f"-> probabilities of {len(loaded.classes)} classes; {check}")
    return difference
