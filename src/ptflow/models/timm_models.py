"""`--model timm:NAME`: every architecture of timm (pytorch-image-models) as a ptflow model.

    --model timm:resnet18 --model_args '{"drop_rate": 0.2}'

`timm:NAME` is a name, not code: the model is `timm.create_model(NAME, pretrained=False,
num_classes=N, in_chans=C, **model_args)`, so a model file may name it and loads without
--trust_model_code, as a built-in does (plugins.py's trust rule); the file records timm's
version. Weights never come from here (pretrained.py loads them, after the build), so loading
a model file never touches the network.

Each timm model carries its `pretrained_cfg`: input size, mean/std, crop share and
interpolation. `defaults(NAME)` reads them, and a run uses them where its flags leave the
image size, crop, resize filter and normalisation open. timm is the optional `vision` extra:
without it, one line says how to install it.
"""

from __future__ import annotations

import difflib
import functools
from typing import Callable

from ptflow.data.geometry import DEFAULT_INTERPOLATION, INTERPOLATIONS
from ptflow.errors import UsageError
from ptflow.plugins import Source

PREFIX = "timm:"
INSTALL = 'pip install "ptflow[vision]"'


def is_timm(name: str) -> bool:
    return name.startswith(PREFIX)


def arch(name: str) -> str:
    """"timm:resnet18" -> "resnet18"."""
    return name[len(PREFIX):]


def version() -> str | None:
    """timm's installed version, from its metadata (timm itself is not imported); None: not installed."""
    from importlib import metadata

    try:
        return metadata.version("timm")
    except metadata.PackageNotFoundError:
        return None


def source(name: str) -> Source:
    """Where `timm:NAME` comes from: timm's own factory, a name and not code (no trust needed)."""
    if not arch(name).strip():
        raise UsageError(f"--model {name!r} names no timm model: use timm:NAME, e.g. timm:resnet18 "
                         f"(`ptflow models --filter 'resnet*'` lists them)")
    return Source(name=name, kind="timm", target="timm:create_model", package="timm", version=version())


def require_timm():
    """timm, imported; one line naming the extra when it is not installed."""
    try:
        import timm
    except ImportError:
        raise UsageError(f"timm models need timm, which is not installed: {INSTALL}") from None
    return timm


def check_name(name: str) -> None:
    """A one-line error for a NAME timm does not know, with the closest names it does."""
    timm = require_timm()
    model = arch(name)
    if timm.is_model(model):
        return
    close = difflib.get_close_matches(model, timm.list_models(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join('timm:' + c for c in close)}? " if close else ""
    raise UsageError(f"unknown timm model {model!r} (timm {timm.__version__}): {hint}"
                     f"`ptflow models --filter PATTERN` lists the names")


def factory(name: str) -> Callable:
    """What registry.build calls with the model file's arguments: timm.create_model, never pretrained."""
    check_name(name)
    return functools.partial(_create, arch(name))


def _create(model: str, **args):
    import timm

    # pretrained is the run's business (pretrained.py), never a model file's: loading stays offline
    return timm.create_model(model, **{**args, "pretrained": False})


def constructor_args(name: str, input_shape: tuple[int, ...], n_classes: int, model_args: dict) -> dict:
    """The keyword arguments stored in the model file: the data's classes and channels, then --model_args."""
    if len(input_shape) != 3:
        raise UsageError(f"--model {name} needs image data (C, H, W); this dataset's inputs are {tuple(input_shape)}")
    return {"num_classes": n_classes, "in_chans": input_shape[0], **model_args}


@functools.cache
def defaults(model: str) -> dict:
    """A timm architecture's own preprocessing, from its pretrained_cfg (`model`: with or without "timm:").

    {"image_size": 224, "crop_pct": 0.875, "mean": [r, g, b], "std": [r, g, b],
     "interpolation": "bicubic"}; image_size is the input's height (timm's square default).
    Read from the registry's config, without building the model.
    """
    name = arch(model) if is_timm(model) else model
    check_name(PREFIX + name)  # a one-line error without timm, or for a name it does not know
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    cfg = cfg.to_dict() if cfg is not None and hasattr(cfg, "to_dict") else (cfg or {})
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    size = cfg.get("input_size") or (3, 224, 224)
    return {"image_size": int(size[-2]), "crop_pct": float(cfg.get("crop_pct") or 0.875),
            "mean": [float(v) for v in cfg.get("mean") or IMAGENET_DEFAULT_MEAN],
            "std": [float(v) for v in cfg.get("std") or IMAGENET_DEFAULT_STD],
            "interpolation": str(cfg.get("interpolation") or "bilinear")}


def channel_stats(own: dict, channels: int) -> tuple[list[float], list[float]]:
    """(mean, std) for images of `channels` channels: gray images take the average of the RGB
    statistics (the weights of a first conv adapted to gray sum over RGB; see pretrained.py)."""
    mean, std = own["mean"], own["std"]
    if channels == len(mean):
        return list(mean), list(std)
    return [sum(mean) / len(mean)] * channels, [sum(std) / len(std)] * channels


def own_interpolation(model: str) -> str:
    """The resize filter a model takes by default: a timm model's pretrained_cfg's where ptflow
    resizes with it (bilinear, bicubic; not e.g. timm's "random"), else bilinear."""
    own = defaults(model)["interpolation"] if is_timm(model) else DEFAULT_INTERPOLATION
    return own if own in INTERPOLATIONS else DEFAULT_INTERPOLATION


def with_own_geometry(config, resumed: bool = False):
    """A TrainConfig whose image_size, crop_pct and interpolation, where the flags left them open
    (None), are the timm model's own (interpolation: bilinear for other models); the run's
    config.json then records them for evaluate and resume. resumed: the config is a run folder's,
    where no interpolation means a run from before the option, which resized bilinearly."""
    import dataclasses

    if config.interpolation is None:
        filter_ = DEFAULT_INTERPOLATION if resumed else own_interpolation(config.model)
        config = dataclasses.replace(config, interpolation=filter_)
    if not is_timm(config.model) or (config.image_size is not None and config.crop_pct is not None):
        return config
    own = defaults(config.model)
    return dataclasses.replace(config, image_size=config.image_size or own["image_size"],
                               crop_pct=config.crop_pct or own["crop_pct"])


def own_preprocessing(model: str, normalize: str, input_shape: tuple[int, ...]):
    """The timm model's own mean/std as a Preprocessing of pixels / 255, for image inputs when
    --normalize is left at none; None otherwise (--normalize standard fits the train split's)."""
    if not is_timm(model) or normalize != "none" or len(input_shape) != 3:
        return None
    from ptflow.data.preprocessing import Preprocessing

    mean, std = channel_stats(defaults(model), input_shape[0])
    return Preprocessing(1 / 255, mean, std)


def parameter_count(model: str) -> int | None:
    """Parameters of a timm architecture at its defaults, counted on the meta device (no memory,
    no weights); None where it cannot be built there."""
    import timm
    import torch

    try:
        with torch.device("meta"):
            net = timm.create_model(model, pretrained=False)
    except Exception:  # noqa: BLE001 - an architecture that needs real tensors to build: shown as "?"
        return None
    return sum(p.numel() for p in net.parameters())
