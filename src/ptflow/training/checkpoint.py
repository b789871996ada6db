"""Training checkpoints: a TrainState as flat tensors plus JSON metadata in one safetensors file.

Written atomically (a kill at any moment leaves the previous checkpoint whole) and read without
unpickling anything; resume.py says what goes in.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ptflow.errors import PtflowError
from ptflow.files import atomic_write
from ptflow.models.files import (
    FORMAT_VERSION,
    check_version,
    contiguous_cpu,
    detect_format,
    read_bytes,
    read_safetensors,
)

CHECKPOINT_FORMAT = "ptflow.checkpoint"


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """A training checkpoint: flat tensors and JSON metadata in one safetensors file, written atomically."""
    from safetensors.torch import save_file

    meta = {"format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, **meta}
    tensors = contiguous_cpu(tensors)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"ptflow": json.dumps(meta)}))


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a training checkpoint, on the CPU; never unpickles."""
    path = Path(path)
    return parse_checkpoint(path, read_bytes(path, "checkpoint"))


def parse_checkpoint(path: Path, data: bytes) -> tuple[dict[str, torch.Tensor], dict]:
    """read_checkpoint for a checkpoint's bytes (read by one process and shared with the others)."""
    if detect_format(path, data, "training checkpoint") != "safetensors":
        raise PtflowError(f"{path}: not a ptflow training checkpoint")
    tensors, meta = read_safetensors(path, data, "training checkpoint")
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise PtflowError(f"{path}: not a ptflow training checkpoint")
    check_version(path, meta)
    return tensors, meta
