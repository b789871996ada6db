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
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ptflow.console import printable
from ptflow.errors import PtflowError, first_line
from ptflow.files import atomic_write, atomic_write_bytes
from ptflow.models import registry, schema
from ptflow.models.networks import Preprocess
from ptflow.sizes import MAX_HEADER_BYTES, check_declared, check_zip

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
    from ptflow.models.timm_models import version as timm_version

    found = {"ptflow": __version__, "torch": str(torch.__version__), "numpy": numpy.__version__,
             "safetensors": safetensors.__version__, "python": platform.python_version()}
    return {**found, "timm": timm_version()} if timm_version() else found  # timm: models named timm:NAME


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
    """(state_dict, description) from either format, refusing anything that would run code.

    The format comes from the file's first bytes, never its name; the description is checked
    against schema.py before anything uses it.
    """
    path = Path(path)
    data = read_bytes(path, "model file")
    if detect_format(path, data, "model file") == "torch":
        state, meta = _read_pth(path, data)
    else:
        state, meta = read_safetensors(path, data, "model file")
    if isinstance(meta, dict) and meta.get("format") == FORMAT:
        check_version(path, meta)  # before the schema: a newer format may have changed it
        if isinstance(meta.get("classes"), list):  # names from non-UTF-8 folders, as datasets name them now
            meta["classes"] = [printable(c) if isinstance(c, str) else c for c in meta["classes"]]
    schema.validate(meta, str(path))
    if not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise PtflowError(f"{path}: its weights are not all named tensors: corrupt or not a model file")
    meta["path"] = str(path)
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    return state, meta


# First bytes of files people mistake for model files, and what to tell them.
OTHER_FORMATS = {
    b"\x80": "a Python pickle (torch.save's legacy format from before torch 1.6, which ptflow does not read: "
             "load it and save it again with a current torch)",
    b"\x1f\x8b": "a gzip archive: decompress it first",
    b"\x93NUMPY": "a numpy .npy array, not a model file",
    b"\x89HDF": "an HDF5 file (Keras?), not a PyTorch model file",
    b"\x08": "probably an ONNX model (from ptflow export?); ptflow loads .safetensors and .pth model files",
}


def detect_format(path: Path, data: bytes, kind: str) -> str:
    """"torch" (torch.save's zip) or "safetensors", from the magic numbers; anything else is refused."""
    if data[:4] == b"PK\x03\x04":
        names = _zip_names(path, data, kind)
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            raise PtflowError(f"{path}: a TorchScript archive (from ptflow export?), not a {kind}: ptflow loads "
                              f".safetensors and .pth {kind}s, which hold no code")
        if not any(n.endswith("data.pkl") for n in names):
            raise PtflowError(f"{path}: a zip archive but not one written by torch.save: not a {kind}")
        return "torch"
    if len(data) >= 10 and data[8:9] == b"{":
        header = int.from_bytes(data[:8], "little")
        check_declared(f"{path}: safetensors header", header, len(data) - 8, limit=MAX_HEADER_BYTES)
        return "safetensors"
    what = next((text for magic, text in OTHER_FORMATS.items() if data.startswith(magic)), None)
    if not data:
        what = "an empty file"
    raise PtflowError(f"{path}: {what or f'not a {kind} (neither safetensors nor a torch.save zip)'}")


def _zip_names(path: Path, data: bytes, kind: str) -> list[str]:
    """The entries of a torch.save zip, after checking their declared sizes against the file's."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            check_zip(str(path), archive, len(data), stored_only=True)
            return archive.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError):
        raise PtflowError(f"{path}: corrupt or truncated {kind} (a damaged zip archive)") from None


def read_bytes(path: Path, kind: str) -> bytes:
    if path.exists() and not path.is_file() and not path.is_dir():  # a FIFO or /dev/zero would never end
        raise PtflowError(f"cannot read {kind} {path}: not a regular file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PtflowError(f"cannot read {kind} {path}: {exc.strerror or exc}") from None


def load_weights_only(path: Path, data: bytes, kind: str, takes: str):
    """A .pth's contents through torch's weights-only unpickler: tensors and plain data, or a one-line
    refusal (a pickled object that could run code, a damaged zip). takes: what the reader accepts."""
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise PtflowError(f"{path}: refused to load: the file holds pickled Python objects that could run "
                          f"code; {takes}") from None
    except Exception as exc:  # torch raises several types for damaged zips
        raise PtflowError(f"{path}: corrupt or truncated {kind} ({type(exc).__name__})") from None


def _read_pth(path: Path, data: bytes) -> tuple[dict, dict]:
    blob = load_weights_only(path, data, "model file", "ptflow only loads tensors and plain data")
    if not isinstance(blob, dict) or not isinstance(blob.get("model"), dict):
        raise PtflowError(f"{path}: not a model file (no 'model' state dict)")
    return blob["model"], blob.get("ptflow") or {}


def read_safetensors(path: Path, data: bytes, kind: str) -> tuple[dict, dict]:
    """Tensors and the JSON description of a safetensors file whose header size detect_format checked;
    the safetensors library checks every tensor's offsets against the file's size."""
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


def check_architecture(path, skeleton: nn.Module, state: dict[str, torch.Tensor], meta: dict) -> None:
    """The model the description builds (on the meta device) against the file's tensors: a
    mismatch is refused before the real model is allocated."""
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    wrong = [f"{k} {found[k]} in the file, {expected[k]} by its model_args" for k in expected
             if k in found and found[k] != expected[k]]
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    problem = wrong[:1] or ([f"missing {', '.join(missing[:3])}"] if missing else []) or \
        ([f"unexpected {', '.join(extra[:3])}"] if extra else [])
    if problem:
        raise PtflowError(f"{path}: the weights do not match the {meta['model']} architecture described in the "
                          f"file ({problem[0]})")


def check_output(path, model: nn.Module, preprocess: Preprocess, meta: dict) -> None:
    """One example of the described input shape through the loaded model: it must give one score
    per class name. (A forward pass on the meta device would avoid even this, but its first use
    imports ~3 s of torch's decompositions; schema.py bounds an example's size instead.)"""
    shape = tuple(meta["input_shape"])
    x = torch.zeros((1, *shape), dtype=torch.uint8 if len(shape) == 3 else torch.float32,
                    device=next(iter(model.parameters()), torch.empty(0)).device)
    try:
        with torch.inference_mode():
            out = model(preprocess(x))
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise PtflowError(f"{path}: the model described cannot take inputs of shape {shape} "
                          f"({first_line(exc)[:120]}): corrupt description") from None
    if tuple(out.shape) != (1, len(meta["classes"])):
        raise PtflowError(f"{path}: the model maps inputs {shape} to {tuple(out.shape[1:])} scores, but the file "
                          f"names {len(meta['classes'])} classes: corrupt description")


def load_model(path: str | Path, device: str | torch.device = "cpu", trust_code: bool = False) -> LoadedModel:
    """The model a file describes, with its weights, in eval mode on `device`.

    A built-in or installed-plugin architecture loads as is; one named by import path runs code
    chosen by whoever wrote the file, so it needs trust_code (see plugins.py).
    """
    state, meta = read_model_file(path)
    model = registry.build(meta["model"], meta["model_args"], trust_code, origin=str(path),
                           expect=lambda skeleton: check_architecture(path, skeleton, state, meta))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise PtflowError(f"{path}: the weights do not match the {meta['model']} architecture described "
                          f"in the file ({first})") from None
    prep = meta["preprocessing"]
    preprocess = Preprocess(meta["input_shape"], prep["scale"], prep.get("mean"), prep.get("std"))
    loaded = LoadedModel(model.to(device).eval(), preprocess.to(device), meta)
    check_output(path, loaded.model, loaded.preprocess, meta)
    return loaded
