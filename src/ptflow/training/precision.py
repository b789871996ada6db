"""How a step's arithmetic runs: --precision (autocast, and the gradient scaler fp16 needs) and
--channels_last (the memory format of convolution weights and image batches).

- bf16: forward passes under autocast to bfloat16. Its exponent is float32's, so gradients need
  no scaling; it pays where matmuls run bf16 in hardware (tensor cores, AMX, AVX512-BF16).
- fp16: forward passes under autocast to float16, whose smallest normal number is 6e-5: small
  gradients would flush to zero. torch.amp.GradScaler multiplies the loss by a scale (65536 at
  first) before backward, and its step divides the gradients by it again, skips the optimizer
  step when any gradient is inf or nan (the scale was too large) and then halves the scale; after
  2,000 steps without one it doubles it. The scale and that count are training state: they go
  into the checkpoint, so a resumed run skips and scales as the run left alone would. Refused off
  CUDA (`check`), where bf16 is the format CPUs run fast; the code itself is device-agnostic, so
  the tests run the real scaler path on the CPU.
- channels_last: the model's 4-D weights and each image batch in NHWC order, the layout GPU tensor
  cores and oneDNN convolve fastest. The numbers are the same up to float rounding; model files
  and checkpoints store tensors contiguous either way (models/files.contiguous_cpu).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from ptflow.errors import UsageError
from ptflow.training.distributed import shared

FP16_DEVICES = ("cuda",)  # where --precision fp16 is accepted: float16 matmuls run fast on GPUs, not CPUs


def check(precision: str, device: torch.device) -> None:
    """Refuse fp16 where it does not belong, before anything is written (the same on every process)."""
    if precision == "fp16" and device.type not in FP16_DEVICES:
        raise shared(UsageError(f"--precision fp16 needs a CUDA device, and this run's is {device}: "
                                f"use --precision bf16 on CPUs"))


def autocast(device: torch.device, precision: str):
    """The context a forward pass runs in: autocast to bf16 or fp16, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device_type=device.type, dtype=torch.float16)
    return nullcontext()


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16's loss scaler, on the training device; None for fp32 and bf16, which need none."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def backward_and_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                      scaler: torch.amp.GradScaler | None) -> None:
    """Backpropagate `loss` and take the optimizer step: plainly, or through fp16's scaler.

    The scaler's step unscales the gradients first (the fused optimizers do it inside their
    kernel, with no host sync); a gradient clip would go after `scaler.unscale_(optimizer)`, so
    that it clips true gradients. The loop has none.
    """
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)  # skipped when a gradient is inf or nan
    scaler.update()  # halve the scale after a skip, double it after 2,000 clean steps


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """An image batch (N, C, H, W) in NHWC memory order; other shapes as they are."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def layout(enabled: bool):
    """What each batch goes through before the model: `channels_last`, or nothing."""
    return channels_last if enabled else _same


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


def record(precision: str, model: torch.nn.Module, batches_channels_last: bool) -> dict:
    """What run.json records of how the steps computed: the precision, and the memory format of the
    model's convolution weights (channels_last with --channels_last, and for image models on a CPU
    always: oneDNN's layout) and of the batches."""
    def name(nhwc: bool) -> str:
        return "channels_last" if nhwc else "contiguous"

    # Some weights are both layouts at once (1x1 kernels, a single input channel): the others tell.
    weights = any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                  for p in model.parameters())
    return {"precision": precision, "memory_format": {"weights": name(weights), "batches": name(batches_channels_last)}}
