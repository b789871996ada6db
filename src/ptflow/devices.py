"""Turning --device / --gpu_id into a torch.device, with a clear error when it isn't there."""

from __future__ import annotations

import torch

from ptflow.errors import PtflowError, UsageError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):  # "cuda:abc", "cuda:-1": the CLI checks too, this is for Python callers
        raise UsageError(f"not a device: {name!r} (expected auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise PtflowError(f"{name} was asked for, but this PyTorch build sees no CUDA GPU "
                              f"(use --device cpu or --gpu_id -1)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise PtflowError(f"{name} was asked for, but only {torch.cuda.device_count()} GPU(s) are visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise PtflowError("mps was asked for, but this machine has no Apple GPU (use --device cpu)")
    return device


def has_native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls run in hardware: tensor cores on GPUs, AMX or AVX512-BF16 on CPUs.

    Without them (older CPUs), autocast to bf16 is emulated and runs several times slower than fp32.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private, so probed with care
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return True
