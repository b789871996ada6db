"""Model files and training checkpoints: written atomically, read without unpickling code.

A model file carries everything needed to rebuild and use the model: the architecture's name and
arguments, class names, input shape, preprocessing, config, metrics and versions.
- `.safetensors` (default): the weights, with that description as JSON in the header metadata.
- `.pth` / `.pt`: the article's layout {"model", "opt", "config"} plus "ptflow" (the description),
  made only of tensors and plain containers so `torch.load(..., weights_only=True)` accepts it.
Loading detects the format from the file's bytes, never trusts the extension, and refuses
pickles that would run code.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ptflow.errors import PtflowError
from ptflow.files import atomic_write, atomic_write_bytes
from ptflow.models import registry
from ptflow.models.networks import Preprocess

FORMAT = "ptflow.model"
FORMAT_VERSION = 1


@dataclass
class LoadedModel:
    model: nn.Module  # in eval mode, on the requested device
    preprocess: Preprocess
    meta: dict  # the description stored with the weights, plus "path" and "sha256"

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["input_shape"])

    @property
    def temperature(self) -> float | None:
        """The softmax temperature fitted on the validation split (--calibrate); None: not calibrated."""
        return self.meta.get("temperature")


def versions() -> dict:
    import platform

    import numpy
    import safetensors

    from ptflow import __version__

    return {"ptflow": __version__, "torch": str(torch.__version__), "numpy": numpy.__version__,
            "safetensors": safetensors.__version__, "python": platform.python_version()}


def contiguous_cpu(state: dict) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def save_model(path: str | Path, model: nn.Module, meta: dict, optimizer=None) -> None:
    # A JSON round trip leaves only plain types, which weights_only unpickling accepts.
    meta = json.loads(json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **meta}))
    state = contiguous_cpu(model.state_dict())
    if Path(path).suffix in (".pth", ".pt"):
        buffer = io.BytesIO()
        torch.save({"model": state, "opt": optimizer.state_dict() if optimizer else {},
                    "config": meta.get("config", {}), "ptflow": meta}, buffer)
        atomic_write_bytes(path, buffer.getvalue())
    else:
        from safetensors.torch import save_file

        atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"ptflow": json.dumps(meta)}))


def read_model_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict, description) from either format, refusing anything that would run code."""
    path = Path(path)
    data = read_bytes(path, "model file")
    if data[:2] == b"PK":  # torch.save's zip container
        state, meta = _read_pth(path, data)
    else:
        state, meta = read_safetensors(path, data, "model file")
    if meta.get("format") != FORMAT or not isinstance(meta.get("model"), str) \
            or not isinstance(meta.get("model_args"), dict):
        raise PtflowError(f"{path}: not a ptflow model file (no model description in it)")
    check_version(path, meta)
    meta["path"] = str(path)
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    return state, meta


def read_bytes(path: Path, kind: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PtflowError(f"cannot read {kind} {path}: {exc.strerror or exc}") from None


def _read_pth(path: Path, data: bytes) -> tuple[dict, dict]:
    try:
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise PtflowError(f"{path}: refused to load: the file holds pickled Python objects that could run "
                          f"code; ptflow only loads tensors and plain data") from None
    except Exception as exc:  # torch raises several types for damaged zips
        raise PtflowError(f"{path}: corrupt or truncated model file ({type(exc).__name__})") from None
    if not isinstance(blob, dict) or not isinstance(blob.get("model"), dict):
        raise PtflowError(f"{path}: not a model file (no 'model' state dict)")
    return blob["model"], blob.get("ptflow") or {}


def read_safetensors(path: Path, data: bytes, kind: str) -> tuple[dict, dict]:
    from safetensors.torch import load

    try:
        state = load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_len])
        meta = json.loads(header.get("__metadata__", {}).get("ptflow", "{}"))
    except Exception as exc:  # safetensors reports damage with its own error types
        raise PtflowError(f"{path}: corrupt, truncated or not a {kind} ({type(exc).__name__})") from None
    return state, meta


def check_version(path: Path, meta: dict) -> None:
    """Files from a newer ptflow may describe models or state this one cannot build faithfully."""
    version = meta.get("format_version", FORMAT_VERSION)
    if isinstance(version, int) and version <= FORMAT_VERSION:
        return
    versions = meta.get("versions") if isinstance(meta.get("versions"), dict) else {}
    writer = f"ptflow {versions['ptflow']}" if "ptflow" in versions else "a newer ptflow"
    raise PtflowError(f"{path}: written by {writer} in file format {version!r}; this ptflow reads formats "
                      f"up to {FORMAT_VERSION}: upgrade ptflow to load it")


def check_temperature(path, value) -> None:
    """An optional meta key: absent in uncalibrated files; when present, a positive finite number."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise PtflowError(f"{path}: the model's temperature must be a positive number, got {value!r}")


def load_model(path: str | Path, device: str | torch.device = "cpu", trust_code: bool = False) -> LoadedModel:
    """The model a file describes, with its weights, in eval mode on `device`.

    A built-in or installed-plugin architecture loads as is; one named by import path runs code
    chosen by whoever wrote the file, so it needs trust_code (see plugins.py).
    """
    state, meta = read_model_file(path)
    model = registry.build(meta["model"], meta["model_args"], trust_code, origin=str(path))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise PtflowError(f"{path}: the weights do not match the {meta['model']} architecture described "
                          f"in the file ({first})") from None
    check_temperature(path, meta.get("temperature"))
    prep = meta["preprocessing"]
    preprocess = Preprocess(meta["input_shape"], prep["scale"], prep.get("mean"), prep.get("std"))
    return LoadedModel(model.to(device).eval(), preprocess.to(device), meta)
