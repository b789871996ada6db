"""What `ptflow models` lists: the built-in networks, installed plugins and timm architectures,
each with its parameter count, counted on the meta device (shapes only: no memory, no weights).

Built-in networks and plugins are counted for MNIST-shaped inputs (1 x 28 x 28, 10 classes) at
their default flags; timm architectures at their own defaults (ImageNet: 3 channels, 1,000
classes). A model that cannot be built there shows no count.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from ptflow.models import registry, timm_models
from ptflow.plugins import entry_points

REFERENCE_SHAPE, REFERENCE_CLASSES = (1, 28, 28), 10  # what built-ins and plugins are counted for


@dataclass(frozen=True)
class Entry:
    name: str  # as --model takes it
    kind: str  # "builtin", "plugin" or "timm"
    parameters: int | None  # None: not countable on the meta device


def listing(pattern: str | None, limit: int, flags: dict) -> tuple[list[Entry], int, str | None]:
    """(the first `limit` models matching the shell-style pattern, how many more match, a note on
    timm when it is not installed). flags: the train flags' defaults, which size the built-ins."""
    found = [Entry(n, "builtin", _count(n, flags)) for n in registry.BUILTIN if _matches(n, pattern)]
    plugins = sorted(entry_points(registry.GROUP))
    found += [Entry(n, "plugin", _count(n, flags)) for n in plugins if _matches(n, pattern)]
    if timm_models.version() is None:
        return found[:limit], max(len(found) - limit, 0), f"timm models: timm is not installed ({timm_models.INSTALL})"
    import timm

    names = timm.list_models(_timm_pattern(pattern))
    room = max(limit - len(found), 0)
    found += [Entry(timm_models.PREFIX + n, "timm", timm_models.parameter_count(n)) for n in names[:room]]
    return found[:limit], max(len(found) - limit, 0) + max(len(names) - room, 0), None


def _matches(name: str, pattern: str | None) -> bool:
    return pattern is None or fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, _timm_pattern(pattern))


def _timm_pattern(pattern: str | None) -> str:
    """timm's own names carry no prefix: `timm:resnet*` and `resnet*` both filter them."""
    if pattern is None:
        return ""
    return timm_models.arch(pattern) if timm_models.is_timm(pattern) else pattern


def _count(name: str, flags: dict) -> int | None:
    import torch

    try:
        args = registry.constructor_args(name, REFERENCE_SHAPE, REFERENCE_CLASSES, {}, flags)
        with torch.device("meta"):
            model = registry.build(name, args)
    except Exception:  # noqa: BLE001 - a plugin that needs other inputs or real tensors: no count
        return None
    return sum(p.numel() for p in model.parameters())
