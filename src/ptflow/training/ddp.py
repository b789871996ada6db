"""What changes when several processes train one model (torch's DistributedDataParallel).

`--batch_size` stays the global batch: each of the N processes computes the gradient of its
batch_size / N examples, DDP averages the N gradients, and every process takes the same
optimizer step, so the learning rate needs no change. Each process uses one device: the CPU
(gloo), or the GPU of its LOCAL_RANK (NCCL).

BatchNorm: with --sync_bn its layers become torch's SyncBatchNorm (batch statistics over the
global batch; torch runs it on GPUs only). Without it, each process normalises with the
statistics of its own slice, and the running statistics kept are the main process's, as DDP
does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from ptflow.config import TrainConfig
from ptflow.console import warn
from ptflow.errors import UsageError
from ptflow.training import distributed as dist


def device_for_process(device: torch.device) -> torch.device:
    """One GPU per process: cuda becomes cuda:LOCAL_RANK; other devices stay as they are."""
    if not dist.is_distributed() or device.type != "cuda":
        return device
    index = dist.local_rank()
    if index >= torch.cuda.device_count():
        raise UsageError(f"process {dist.rank()} has LOCAL_RANK {index} but this machine has "
                         f"{torch.cuda.device_count()} GPU(s): start at most one process per GPU")
    if device.index is not None and device.index != index and dist.is_main_process():
        warn(f"with several processes each uses the GPU of its LOCAL_RANK; {device} is ignored")
    return torch.device("cuda", index)


def check(config: TrainConfig, device_type: str, world: int) -> None:
    """Refuse what `world` processes cannot train, before anything is written (and, in the launcher,
    before any process starts). The same error on every process: printed once."""
    if world == 1:
        return
    if device_type not in ("cpu", "cuda"):
        raise dist.shared(UsageError(f"several processes train on cpu (gloo) or cuda (NCCL), not {device_type}"))
    if config.batch_size % world:
        raise dist.shared(UsageError(f"--batch_size {config.batch_size} is the global batch and must divide evenly "
                                     f"among the {world} processes"))
    if config.sync_bn and device_type != "cuda":
        raise dist.shared(UsageError("--sync_bn needs GPUs: torch's SyncBatchNorm does not run on the CPU; without "
                                     "it each process normalises with its own slice's statistics"))


def check_data(n_train: int) -> None:
    """Every process needs two training examples of each batch (BatchNorm cannot train on one)."""
    if dist.is_distributed() and n_train < 2 * dist.world_size():
        raise dist.shared(UsageError(f"the training split has {n_train} examples, too few to share among "
                                     f"{dist.world_size()} processes"))


def prepare(model: nn.Module, config: TrainConfig) -> nn.Module:
    """The model as this process trains it: SyncBatchNorm with --sync_bn (same parameters, same
    state-dict keys, so the saved model is a plain single-process one)."""
    if not dist.is_distributed():
        return model
    per_process = config.batch_size // dist.world_size()
    has_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if has_batch_norm and per_process < 2 and not config.sync_bn:
        raise dist.shared(UsageError(f"--batch_size {config.batch_size} leaves each of the {dist.world_size()} "
                                     f"processes {per_process} example per step, too few for BatchNorm: use a "
                                     f"larger batch"))
    if config.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The module each training step calls: DDP averages the gradients during backward."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def seed_process(seed: int) -> None:
    """Give each process its own dropout masks. Initial weights are drawn before this, from the
    run's seed (the same on every process, and DDP copies the main process's anyway)."""
    if dist.is_distributed():
        torch.manual_seed(int(np.random.SeedSequence([seed, dist.rank()]).generate_state(1)[0]))
