"""Turning --device / --gpu_id into a torch.device, with a clear error when it isn't there, and
--num_threads into torch's CPU thread count."""

from __future__ import annotations

from contextlib import contextmanager

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


@contextmanager
def cpu_threads(count: int | None):
    """Run inside with `count` intra-op threads (None: torch's default, from OMP_NUM_THREADS or the
    cores); yields the count in use, for the run to record. The previous count comes back on
    exit, so that `ptflow.train(num_threads=1)` leaves the caller's own torch code as it was.

    The count is part of a run's numbers: a matrix product split over another number of threads
    adds its terms in another order, and rounds differently in the last bits (on AMD Zen 4 with
    AVX-512, for one: up to 4e-8 after a few epochs of the article's MLP).
    """
    previous = torch.get_num_threads()
    if count is None or count == previous:
        yield previous
        return
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(previous)
