"""Fine-tuning controls, for any model: the classifier head, its own learning rate, a frozen
backbone, an exponential moving average of the weights, and what a model's constructor is given.

- The head is `model.get_classifier()` where the model has one (timm's networks), else the last
  `nn.Linear` the module holds (ptflow's mlp and cnn, most plain classifiers). The backbone is
  every other parameter.
- `--head_lr_mult X` puts the head in a second parameter group at lr * X; schedules scale every
  group by the same factor (steps.build_scheduler), so the ratio holds through warmup and decay.
- `--freeze_backbone_epochs N`: during the first N epochs the backbone's parameters require no
  gradient, so backward leaves their `.grad` None and torch's Adam, AdamW and SGD skip them
  entirely (no moment, no step count, no decoupled weight decay); its BatchNorm layers stay in
  eval mode, so their running statistics do not move either. The backbone is bit for bit what
  it was until epoch N ends. Whether an epoch is frozen depends on the epoch number alone, so a
  resumed run freezes exactly as the run left alone.
- `--ema DECAY`: torch's AveragedModel with its EMA update (swa_utils.get_ema_multi_avg_fn),
  updated after every optimizer step; buffers (BatchNorm statistics) are copied from the model,
  not averaged. It is saved in the checkpoint (its state_dict, `n_averaged` included).
- `--drop_path RATE` reaches the model as the keyword argument `drop_path_rate`
  (`model_kwargs_for`), which timm's networks take; the built-in networks have no drop path.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ptflow.errors import UsageError

DROP_PATH_ARG = "drop_path_rate"  # timm's name of the stochastic depth rate


def head_module(model: nn.Module) -> nn.Module:
    """The classifier head: get_classifier() where the model has it, else its last nn.Linear."""
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        head = get_classifier()
        if isinstance(head, nn.Module) and any(True for _ in head.parameters()):
            return head
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UsageError(f"--head_lr_mult and --freeze_backbone_epochs need a classifier head: "
                         f"{type(model).__name__} has no get_classifier() and no nn.Linear layer")
    return linears[-1]


def head_parameter_ids(model: nn.Module) -> set[int]:
    return {id(p) for p in head_module(model).parameters()}


def param_groups(model: nn.Module, lr: float, head_lr_mult: float) -> list[dict]:
    """One group at lr, or two (backbone at lr, head at lr * head_lr_mult): in the model's parameter
    order within each, so a checkpoint's optimizer state maps back to the same parameters."""
    params = list(model.parameters())
    if head_lr_mult == 1:
        return [{"params": params, "lr": lr}]
    head = head_parameter_ids(model)
    return [{"params": [p for p in params if id(p) not in head], "lr": lr},
            {"params": [p for p in params if id(p) in head], "lr": lr * head_lr_mult}]


def freeze_backbone(model: nn.Module, frozen: bool) -> None:
    """Freeze (or release) every parameter outside the head, and keep the backbone's BatchNorm
    statistics still while frozen. Called after model.train() at the start of each epoch."""
    head = head_module(model)
    in_head = {id(m) for m in head.modules()}
    keep = {id(p) for p in head.parameters()}
    for p in model.parameters():
        p.requires_grad_(not frozen or id(p) in keep)
    if frozen and model.training:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in in_head:
                m.eval()


def build_ema(model: nn.Module, decay: float):
    """The EMA of `model`'s weights, or None when decay is 0 (off). It starts as a copy of the
    model; its first update copies again, later ones move it 1 - decay of the way to the model."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    # use_buffers=False: buffers are copied from the model at each update, not averaged
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)
    ema.module.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema, model: nn.Module) -> None:
    """After an optimizer step: every process holds the same weights then, so the same EMA."""
    ema.update_parameters(model)


@torch.no_grad()
def copy_buffers(ema, model: nn.Module) -> None:
    """The model's buffers into the EMA: with several processes the model's BatchNorm statistics
    are made equal (broadcast) only at the epoch's end, after the EMA's last per-step copy."""
    for b_ema, b_model in zip(ema.module.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b_model)


def model_kwargs_for(config) -> dict:
    """The keyword arguments the train flags add to a model's constructor, beside --model_args
    (which wins where both name one): {"drop_path_rate": RATE} for --drop_path, else nothing.

    A built-in network gets none: it reads the flags it declares by name (models/registry.py),
    and config.py refuses --drop_path for one that declares no `drop_path`."""
    from ptflow.models import registry

    if not config.drop_path or config.model in registry.BUILTIN:
        return {}
    return {DROP_PATH_ARG: config.drop_path}
