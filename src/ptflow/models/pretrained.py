"""Starting weights for a fresh run: `--pretrained` (timm's hub) and `--pretrained_path FILE`.

The file is a safetensors file or a weights-only `.pth` (torch.load(weights_only=True): never
unpickled code) holding a state dict, bare or as {"state_dict": ...} / {"model": ...} (a ptflow
model file is one). It rarely fits the new data exactly, so it is loaded tensor by tensor:
- a tensor whose name and shape match is loaded;
- the classifier head (timm's pretrained_cfg "classifier", else the last Linear layer) keeps
  its fresh initialisation where its shape differs: another number of classes;
- a convolution that differs only in its input channels (the first one, for gray images from
  RGB weights) is adapted as timm's adapt_input_conv does: summed over RGB for one channel;
- anything else that differs means the file is for another architecture: a one-line error.
One printed line says what was loaded, re-initialised and adapted; `load` returns it as a dict
for the run to record.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from ptflow.console import info
from ptflow.errors import PtflowError, UsageError

WRAPPERS = ("state_dict", "model")  # keys under which checkpoints commonly keep the state dict


def read_weights(path: str | Path) -> dict:
    """{name: tensor} from a safetensors or weights-only torch file; one line for anything else."""
    import torch

    from ptflow.models.files import detect_format, load_weights_only, read_bytes, read_safetensors

    path = Path(path)
    data = read_bytes(path, "weights file")
    if detect_format(path, data, "weights file") == "safetensors":
        state, _ = read_safetensors(path, data, "weights file")
        return state
    blob = load_weights_only(path, data, "weights file",
                             "--pretrained_path takes safetensors or a weights-only .pth (a state dict)")
    for key in WRAPPERS:
        if isinstance(blob, dict) and isinstance(blob.get(key), dict):
            blob = blob[key]
            break
    if not isinstance(blob, dict) or not blob or not all(isinstance(k, str) and torch.is_tensor(v)
                                                          for k, v in blob.items()):
        raise PtflowError(f"{path}: not a state dict of named tensors (bare, or under 'state_dict' or 'model')")
    return blob


def head_prefix(model) -> str | None:
    """The classifier's module name: timm's pretrained_cfg names it; otherwise the last Linear layer."""
    import torch.nn as nn

    cfg = getattr(model, "pretrained_cfg", None) or {}
    if isinstance(cfg.get("classifier"), str):
        return cfg["classifier"]
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    return linear[-1] if linear else None


def adapt_input_conv(in_chans: int, weight):
    """A conv weight (out, C, k, k) made for in_chans input channels; timm's rule where timm is there."""
    try:
        from timm.models import adapt_input_conv as timm_adapt
    except ImportError:
        timm_adapt = None
    if timm_adapt is not None:
        return timm_adapt(in_chans, weight)
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_chans // weight.shape[1])
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (weight.shape[1] / in_chans)


def load(model, state: dict, origin: str) -> dict:
    """Load `state` into `model` by the rules above; returns and prints the summary:
    {"from", "loaded", "reinitialised", "adapted", "missing", "unused"}, the last four lists of names."""
    import torch

    own = model.state_dict()
    head = head_prefix(model)
    loaded, reinitialised, adapted, wrong = {}, [], [], []
    for name, tensor in state.items():
        if name not in own:
            continue
        target = own[name]
        if tensor.shape == target.shape:
            loaded[name] = tensor
        elif head and name.startswith(head + "."):
            reinitialised.append(name)  # another class count: the fresh head stays
        elif tensor.ndim == 4 and target.ndim == 4 and tensor.shape[0] == target.shape[0] \
                and tensor.shape[2:] == target.shape[2:]:
            loaded[name] = adapt_input_conv(target.shape[1], tensor.float()).to(target.dtype)
            adapted.append(name)
        else:
            wrong.append(f"{name} {tuple(tensor.shape)} in the file, {tuple(target.shape)} in the model")
    if wrong:
        raise UsageError(f"{origin}: its weights are for another architecture ({wrong[0]}"
                         f"{f', and {len(wrong) - 1} more' if len(wrong) > 1 else ''})")
    if not loaded:
        raise UsageError(f"{origin}: none of its {len(state)} tensors is named as the model's (another architecture?)")
    with torch.no_grad():
        for name, tensor in loaded.items():
            own[name].copy_(tensor)  # state_dict() shares the model's storage: this writes the weights
    summary = {"from": origin, "loaded": len(loaded), "reinitialised": reinitialised, "adapted": adapted,
               "missing": sorted(set(own) - set(state)), "unused": sorted(set(state) - set(own))}
    info(describe(summary))
    return summary


def describe(summary: dict) -> str:
    """The summary as one line."""
    parts = [f"Pretrained weights from {summary['from']}: {summary['loaded']} tensors loaded"]
    if summary["reinitialised"]:
        parts.append(f"re-initialised (another class count): {', '.join(summary['reinitialised'])}")
    if summary["adapted"]:
        parts.append(f"adapted to the input channels: {', '.join(summary['adapted'])}")
    for key in ("missing", "unused"):
        if summary[key]:
            parts.append(f"{len(summary[key])} {key} ({', '.join(summary[key][:3])}"
                         f"{', ...' if len(summary[key]) > 3 else ''})")
    return "; ".join(parts)


def hub_weights(name: str) -> dict:
    """The hub's pretrained weights of timm model `name` (timm:NAME) at their own class count;
    without a network, one line naming --pretrained_path (the local cache still serves)."""
    from ptflow.errors import first_line
    from ptflow.models import timm_models

    if not timm_models.is_timm(name):
        raise UsageError(f"--pretrained takes weights from timm's hub: it needs --model timm:NAME, not {name!r} "
                         f"(--pretrained_path FILE loads weights into any model)")
    timm = timm_models.require_timm()
    timm_models.check_name(name)
    host = _hub_host()
    online = _reachable(host)
    try:
        with _hub_offline(not online):  # offline: the cache answers at once, instead of a minute of retries
            return timm.create_model(timm_models.arch(name), pretrained=True).state_dict()
    except Exception as exc:  # noqa: BLE001 - offline, no such weights, a hub error: each says it in one line
        why = (f"no network to reach {host}, and they are not in the local cache" if not online else
               f"{type(exc).__name__}: {first_line(exc)[:120]}")
        raise UsageError(f"--pretrained: cannot get the weights of {name} from the hub ({why}); download them "
                         f"where there is a network and pass --pretrained_path FILE") from None


def _hub_host() -> str:
    import os
    from urllib.parse import urlparse

    return urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"


def _reachable(host: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub opens within `timeout` seconds."""
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


@contextmanager
def _hub_offline(offline: bool):
    """huggingface_hub told to use its cache only (offline), its retry warnings kept off the terminal."""
    import logging

    from huggingface_hub import constants

    hub_log = logging.getLogger("huggingface_hub")
    was, level = constants.HF_HUB_OFFLINE, hub_log.level
    constants.HF_HUB_OFFLINE = offline or was
    hub_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = was
        hub_log.setLevel(level)


def apply(model, name: str, pretrained: bool, path: str | None) -> dict | None:
    """What the run asked for, loaded into `model` (just built); the summary, or None when nothing was asked."""
    if path:
        return load(model, read_weights(path), str(path))
    if pretrained:
        return load(model, hub_weights(name), f"the hub ({name})")
    return None
