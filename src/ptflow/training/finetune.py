"""Fine-tuning controls, for any model: the classifier head, its own learning rate, a frozen
backbone, an exponential moving average of the weights, and what a model's constructor is given.

- The head is `model.get_classifier()` where the model has one (timm's networks), else the last
  `nn.Linear` the module holds (ptflow's mlp and cnn, most plain classifiers). The backbone is
  every other parameter.
- `--head_lr_mult X` puts the head in a second parameter group at lr * X; schedules scale every
  group by the same factor (steps.build_scheduler), so the ratio holds through warmup and decay.
- `--layer_decay RATE` (1: off): layer-wise learning-rate decay as BEiT and timm do it. The layers
  are the model's own `group_matcher()` (every timm network has one), numbered from the input by
  timm's `param_groups_layer_decay`, which this calls rather than repeats; layer i of L trains at
  lr * RATE ** (L - 1 - i). The head is taken out into a group of its own at lr * head_lr_mult, so
  the two flags compose: the head's rate is the multiplier's, the body's the decay's. ptflow's
  built-in networks declare no layer order, and config.py refuses the flag for them; any other
  model without a group_matcher is refused here, in one line.
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
        raise UsageError(f"--head_lr_mult, --layer_decay and --freeze_backbone_epochs need a classifier head: "
                         f"{type(model).__name__} has no get_classifier() and no nn.Linear layer")
    return linears[-1]


def head_parameter_ids(model: nn.Module) -> set[int]:
    return {id(p) for p in head_module(model).parameters()}


def param_groups(model: nn.Module, lr: float, head_lr_mult: float, layer_decay: float = 1.0) -> list[dict]:
    """One group at lr, or two (backbone at lr, head at lr * head_lr_mult), or with layer_decay < 1
    one per layer and the head's (layer_groups): in the model's parameter order within each, so a
    checkpoint's optimizer state maps back to the same parameters."""
    if layer_decay < 1:
        return layer_groups(model, lr, head_lr_mult, layer_decay)
    params = list(model.parameters())
    if head_lr_mult == 1:
        return [{"params": params, "lr": lr}]
    head = head_parameter_ids(model)
    return [{"params": [p for p in params if id(p) not in head], "lr": lr},
            {"params": [p for p in params if id(p) in head], "lr": lr * head_lr_mult}]


def layer_groups(model: nn.Module, lr: float, head_lr_mult: float, layer_decay: float) -> list[dict]:
    """timm's layer-wise groups, first layer first, each at lr * its scale, then the head's at
    lr * head_lr_mult. Weight decay stays the optimizer's, on every parameter, as without layer
    decay: timm's own 1-D exclusion is turned off, and its per-group values are not kept."""
    if not callable(getattr(model, "group_matcher", None)):
        raise UsageError(f"--layer_decay needs a model that orders its layers with group_matcher() (timm's "
                         f"networks do); {type(model).__name__} has none: use --head_lr_mult")
    from ptflow.models.timm_models import require_timm

    require_timm()
    from timm.optim import param_groups_layer_decay

    head = head_parameter_ids(model)
    # Every parameter must be grouped: timm leaves out those that do not require a gradient.
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        # weight_decay=0 and no exclusions: every group alike, and the optimizer applies ptflow's
        timm_groups = param_groups_layer_decay(model, weight_decay=0.0, weight_decay_exclude_1d=False,
                                               layer_decay=layer_decay)
    finally:
        for p in frozen:
            p.requires_grad_(False)
    # timm orders its groups by where each layer first appears; by scale, they go from the input up
    # lr_scale stays in each group (schedules ignore it): run.json reads the multiples from it
    groups = [{"params": [p for p in g["params"] if id(p) not in head], "lr": lr * g["lr_scale"],
               "lr_scale": g["lr_scale"]} for g in sorted(timm_groups, key=lambda g: g["lr_scale"])]
    groups = [g for g in groups if g["params"]]  # a layer that held only the head
    groups.append({"params": [p for p in model.parameters() if id(p) in head], "lr": lr * head_lr_mult,
                   "lr_scale": head_lr_mult})
    return groups


def lr_groups_of(optimizer) -> dict:
    """What run.json records of --layer_decay's groups: each one's multiple of --lr (before any
    schedule) and its size, first layer first, the head last; nothing without layer decay."""
    if not all("lr_scale" in g for g in optimizer.param_groups):
        return {}
    return {"lr_groups": [{"lr_scale": round(g["lr_scale"], 8), "params": sum(p.numel() for p in g["params"])}
                          for g in optimizer.param_groups]}


def scheduled_lr(optimizer) -> float:
    """--lr as the schedule has it now (what metrics.jsonl and `ptflow runs` show): the first group's
    rate, which is the backbone's, or with --layer_decay the first layer's, divided by its scale."""
    first = optimizer.param_groups[0]
    return first["lr"] / first.get("lr_scale", 1)


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
