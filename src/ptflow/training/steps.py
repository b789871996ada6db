"""What the training loop steps with: the optimizer and its learning-rate schedule, how an epoch's
examples are cut into global batches and each process's share of one, the loss each step
minimises, and the evaluation batch size.

loop.py runs the epochs with these; train.py builds the optimizer and schedule for a new run
(their step counts come from `steps_per_epoch`, so a schedule follows the run's real length).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ptflow.training import finetune
from ptflow.training.optimizers import EagerAdam, EagerAdamW, EagerSGD


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float,
                    head_lr_mult: float = 1.0, layer_decay: float = 1.0) -> torch.optim.Optimizer:
    # fused=True updates every parameter in one kernel per step, on CPU as on GPU; measured on the
    # article's MLP on 2 CPU cores it trains ~25% more samples/s than the per-tensor foreach path.
    device = next(model.parameters()).device
    fused = {"fused": True} if device.type in ("cpu", "cuda") else {"foreach": True}
    params = finetune.param_groups(model, lr, head_lr_mult, layer_decay)  # one group, backbone and head, or layers
    if name == "sgd":
        return EagerSGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, **fused)
    cls = EagerAdamW if name == "adamw" else EagerAdam
    return cls(params, lr=lr, weight_decay=weight_decay, **fused)


def build_scheduler(optimizer, name: str, total_steps: int, warmup_steps: int = 0):
    """Schedules step once per batch, so they follow the run's real length. Each scales every
    parameter group's own lr (the head's may differ: --head_lr_mult). A warmup raises the lr
    linearly from lr / warmup_steps to lr over warmup_steps, then the schedule runs over the rest;
    SequentialLR keeps both in its state_dict, so a resumed run continues the curve exactly."""
    schedulers = torch.optim.lr_scheduler
    if name == "onecycle":  # its own warmup: config.py refuses --warmup_epochs with it
        return schedulers.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                     total_steps=total_steps)
    if not warmup_steps:
        return schedulers.CosineAnnealingLR(optimizer, T_max=total_steps) if name == "cosine" else None
    warmup = schedulers.LinearLR(optimizer, start_factor=1 / warmup_steps, total_iters=warmup_steps)
    if name != "cosine":  # after total_iters LinearLR holds the factor at 1
        return warmup
    cosine = schedulers.CosineAnnealingLR(optimizer, T_max=total_steps - warmup_steps)
    return schedulers.SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])


def steps_per_epoch(n: int, batch_size: int, world: int = 1) -> int:
    return len(batch_starts(n, batch_size, world))


def batch_starts(n: int, batch_size: int, world: int = 1) -> list[int]:
    """Global batch offsets. A last batch that would leave a process fewer than two examples is
    dropped (BatchNorm cannot train on one): with one process, a last batch of one example."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < 2 * world:
        starts.pop()
    return starts


def shard(start: int, stop: int, rank: int, world: int) -> tuple[int, int, float]:
    """This process's slice [lo, hi) of the global batch [start, stop), and the factor its mean
    loss is scaled by so that DDP's average of the processes' gradients is the gradient of the
    whole batch's mean loss: (hi - lo) * world / (stop - start), 1.0 when the batch divides evenly.
    """
    size = stop - start
    lo, hi = start + rank * size // world, start + (rank + 1) * size // world
    return lo, hi, (hi - lo) * world / size


def process_slices(n: int, batch_size: int, rank: int, world: int) -> list[tuple[int, int, float]]:
    """Process `rank`'s (lo, hi, weight) of each of an epoch's global batches (batch_starts, shard)."""
    return [shard(start, min(start + batch_size, n), rank, world) for start in batch_starts(n, batch_size, world)]


def loss_function(model: nn.Module) -> Callable:
    """NLL for networks that say they end in log-softmax (the built-ins, as the article's does),
    cross-entropy for the rest: right for logits and log-probabilities alike, since log-softmax
    leaves log-probabilities as they are. Cross-entropy on the built-ins would compute the
    log-softmax twice: 5% of a step of the article's MLP on a CPU."""
    return F.nll_loss if getattr(model, "returns_log_probs", False) else F.cross_entropy


def training_loss(loss_fn: Callable, scores: torch.Tensor, y: torch.Tensor,
                  class_weights: torch.Tensor | None) -> torch.Tensor:
    """The mean loss of a batch (slice), each example weighted by its class's weight if given.

    Divided by the example count, not by the sum of the weights as torch's weighted mean is: each
    process's mean then stays a plain mean over its examples, which `shard`'s scaling turns into
    the whole batch's, and an epoch's mean is the class-balanced loss (imbalance.py)."""
    if class_weights is None:
        return loss_fn(scores, y)
    return loss_fn(scores, y, weight=class_weights, reduction="sum") / len(y)


def eval_batch_size(batch_size: int) -> int:
    """Inference keeps no activations for a backward pass: 2x the training batch fits in the memory
    a training step has just freed. Measured on the article's MLP (2 CPU cores): as fast as 4x,
    which raised the run's peak RSS by 6-10 MB."""
    return 2 * batch_size
