"""The training loop: the article's trainer semantics, written for speed.

Each epoch shuffles, trains and validates; the weights with the lowest validation loss are
snapshotted and restored at the end; losses are averaged per sample, not per batch.

Why it is fast: inputs stay uint8 on the device and are turned into floats one batch at a time
(no 4x float copy of the dataset); shuffling permutes indices, not the data; the loss is summed
on the device and read once per epoch, so no step waits for the host.

With several processes (DDP), every process holds the whole dataset and draws the same shuffled
order (same generator, same seed); each global batch of `batch_size` examples is cut into one
near-equal slice per process (`steps.shard`), and evaluation hands out whole evaluation batches in
turn. Sums of loss, correct answers and counts are then added over the processes, so every
metric is the single-process one: no example is counted twice and none is dropped.

All state a run needs to continue exactly lives in `TrainState`, saved at every epoch end.
"""

from __future__ import annotations

import functools
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from ptflow.config import EVAL_BATCH_SIZE
from ptflow.console import info
from ptflow.data.augment import draw_flips, draw_shifts, random_flip, random_shift
from ptflow.models.networks import Preprocess
from ptflow.training import distributed as dist
from ptflow.training import finetune, interrupt
from ptflow.training.imbalance import epoch_order
from ptflow.training.precision import autocast, backward_and_step, layout
from ptflow.training.shard_order import order_by_shard
from ptflow.training.steps import eval_batch_size, loss_function, process_slices, training_loss


@dataclass
class EpochPosition:
    """Where an epoch stands: its draws (the order, the shifts and flips) and how far it got.

    Saved with the checkpoint when a signal stops training mid-epoch (interrupt.py), so that
    --resume continues at the next batch with the same draws, as if never stopped."""

    order: torch.Tensor  # |order| = (n_train,): the epoch's example order
    shifts: torch.Tensor | None  # the epoch's --augment_shift draws, or None
    flips: torch.Tensor | None  # the epoch's --augment_flip draws, or None
    total: torch.Tensor  # the training loss summed so far (a device scalar)
    batches: int = 0  # batches done
    seen: int = 0  # examples done (this process's)


@dataclass
class TrainState:
    """Everything that changes during training, in one place, so a run can be saved and resumed."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    generator: torch.Generator  # drives the shuffling, separately from the global RNG (dropout)
    epoch: int = 0  # epochs completed
    best_loss: float = math.inf
    best_epoch: int = 0
    best_weights: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0  # epochs since the validation loss last improved (early stopping)
    history: list[dict] = field(default_factory=list)  # one dict of metrics per epoch
    position: EpochPosition | None = None  # inside an epoch's training pass; None between epochs
    ema: nn.Module | None = None  # --ema: the weights' moving average (an AveragedModel, finetune.py), or None
    best_from: str = "raw"  # whose weights best_weights are: the model's ("raw") or the EMA's ("ema")
    scaler: torch.amp.GradScaler | None = None  # --precision fp16's loss scale (precision.py), or None


@dataclass(kw_only=True)
class LoopSettings:
    """How the loop runs, named at the call: nine values of which six are ints are easy to misorder."""

    n_epochs: int
    batch_size: int
    early_stop: int = 0
    precision: str = "fp32"  # fp16 also needs TrainState.scaler (precision.grad_scaler)
    verbose: int = 1
    augment_shift: int = 0  # random shifts of up to this many pixels, training batches only
    rank: int = 0  # this process's share of each batch, with several processes (DDP)
    world: int = 1
    augment_flip: bool = False  # mirror half the training images at random
    sampler: str = "random"  # or "balanced": every class drawn about equally often (imbalance.py)
    class_weights: torch.Tensor | None = None  # |class_weights| = (n_classes,): the training loss's, or None
    mixup: float = 0.0  # Beta(alpha, alpha) of mixup / cutmix on training batches (data/transforms.py); 0: off
    cutmix: float = 0.0
    label_smoothing: float = 0.0  # of the training loss only: validation and test losses are never smoothed
    n_classes: int = 0  # for the soft targets of mixing and smoothing
    pixel_scale: float = 1 / 255  # mixed images are floats in 0..255: Preprocess takes floats as already scaled
    freeze_epochs: int = 0  # --freeze_backbone_epochs: only the head trains in epochs 1..freeze_epochs
    channels_last: bool = False  # image batches in NHWC memory order, as the model's weights then are
    shards: torch.Tensor | None = None  # |shards| = (n_train,) CPU, each example's shard (shards: data), or None


def gather(x, index_lists: list[torch.Tensor], epoch: int | None = None):
    """(x_i, kept) for each list of example indices: rows of an in-memory tensor, or a streamed
    split's decoded batches (data/streaming.py; kept masks out examples --bad_images skip dropped)."""
    if isinstance(x, torch.Tensor):
        # index_select, not x[index]: for uint8 rows it is ~10x faster on CPU (7 vs 76 us per batch)
        return ((x.index_select(0, index), None) for index in index_lists)
    return x.batches([index.tolist() for index in index_lists], epoch)


def _step_loss(state: TrainState, forward: Callable, loss_fn: Callable, x_i: torch.Tensor, y_i: torch.Tensor,
               settings: LoopSettings) -> torch.Tensor:
    """The batch's training loss: plain, class-weighted, or against the soft targets of mixing and smoothing."""
    if not (settings.mixup or settings.cutmix or settings.label_smoothing):
        return training_loss(loss_fn, forward(x_i), y_i, settings.class_weights)
    from ptflow.data.transforms import mix_batch, soft_target_loss

    targets = y_i
    if settings.mixup or settings.cutmix:  # drawn from the run's generator: a resumed run mixes the same
        x_i, targets = mix_batch(x_i, y_i, settings.n_classes, settings.mixup, settings.cutmix, state.generator)
        x_i = x_i * settings.pixel_scale
    return soft_target_loss(forward(x_i), targets, getattr(state.model, "returns_log_probs", False),
                            settings.label_smoothing)


def _new_position(state: TrainState, y: torch.Tensor, settings: LoopSettings, in_memory: bool) -> EpochPosition:
    """A new epoch's draws, from the run's generator, in a fixed order (order, shifts, flips)."""
    device = y.device
    if settings.shards is not None and settings.world > 1 and settings.sampler == "random":
        order = order_by_shard(settings.shards, _spans(len(y), settings), state.generator)  # whole shards per process
    else:
        order = epoch_order(y, state.generator, settings.sampler)  # the same on every process
    order = order.to(device) if in_memory else order.cpu()
    shift = settings.augment_shift
    shifts = draw_shifts(len(y), shift, state.generator, device) if shift else None
    flips = draw_flips(len(y), state.generator, device) if settings.augment_flip else None  # drawn after shifts
    return EpochPosition(order, shifts, flips, torch.zeros((), device=device))  # summed on the device: no sync


def _spans(n: int, settings: LoopSettings) -> list[list[tuple[int, int]]]:
    """Each process's [lo, hi) slices of the epoch's batches, in order."""
    return [[(lo, hi) for lo, hi, _ in process_slices(n, settings.batch_size, rank, settings.world)]
            for rank in range(settings.world)]


def train_epoch(state: TrainState, forward: Callable, x, y: torch.Tensor,
                settings: LoopSettings, progress=None) -> float:
    """One pass over the shuffled training data; returns the per-sample mean loss (over all processes).

    x: the training inputs, a uint8 tensor on the device or a streamed split (data/streaming.py).
    """
    state.model.train()
    if settings.freeze_epochs:  # decided by the epoch number alone: a resumed run freezes the same
        finetune.freeze_backbone(state.model, frozen=state.epoch < settings.freeze_epochs)
    loss_fn = loss_function(state.model)
    device = y.device
    pos = state.position or _new_position(state, y, settings, isinstance(x, torch.Tensor))
    state.position = pos  # from here a signal saves where the epoch stands (checkpoint.py)
    slices = process_slices(len(y), settings.batch_size, settings.rank, settings.world)
    order, shift = pos.order, settings.augment_shift
    batches = gather(x, [order[lo:hi] for lo, hi, _ in slices[pos.batches:]], state.epoch)
    for i, ((lo, hi, weight), (x_i, kept)) in enumerate(zip(slices[pos.batches:], batches), start=pos.batches):
        y_i = y.index_select(0, order[lo:hi].to(device))  # |x_i| = (hi - lo, *input_shape), uint8
        if pos.shifts is not None:
            x_i = random_shift(x_i, shift, pos.shifts[:, lo:hi] if kept is None else pos.shifts[:, lo:hi][:, kept])
        if pos.flips is not None:
            x_i = random_flip(x_i, pos.flips[lo:hi] if kept is None else pos.flips[lo:hi][kept])
        if kept is not None:  # examples --bad_images skip left out of this batch
            y_i = y_i[kept.to(device)]
        if x_i is not None:
            with autocast(device, settings.precision):
                loss = _step_loss(state, forward, loss_fn, x_i, y_i, settings)
            state.optimizer.zero_grad(set_to_none=True)
            backward_and_step(loss if weight == 1.0 else loss * weight, state.optimizer, state.scaler)
            if state.ema is not None:
                finetune.update_ema(state.ema, state.model)
            if state.scheduler is not None:
                state.scheduler.step()
            pos.total += loss.detach() * len(y_i)
            pos.seen += len(y_i)
            if settings.verbose >= 2:
                # detached: float() of a tensor that requires grad warns (and reads nothing more)
                info(f"Train Iteration({i + 1}/{len(slices)}): loss={float(loss.detach()):.4e}")
        pos.batches = i + 1
        if progress is not None:
            progress(i + 1, len(slices))
        interrupt.check()  # Ctrl-C / SIGTERM: stop after this step; resume continues at the next one
    state.position = None
    total, seen = pos.total, pos.seen
    state.optimizer.zero_grad(set_to_none=True)  # the last step's gradients: free for validation to reuse
    if settings.world == 1:
        return float(total) / seen
    sums = dist.all_sum(torch.stack([total.double(), torch.tensor(float(seen), device=device).double()]))
    return float(sums[0]) / float(sums[1])


def eval_batches(x, n: int, batch_size: int, rank: int = 0, world: int = 1):
    """(start, x_i, kept) for the evaluation batches this process takes: every world-th one."""
    starts = list(range(rank * batch_size, n, world * batch_size))
    if isinstance(x, torch.Tensor):
        return ((start, x[start:start + batch_size], None) for start in starts)
    ranges = [torch.arange(start, min(start + batch_size, n)) for start in starts]
    return ((start, x_i, kept) for start, (x_i, kept) in zip(starts, gather(x, ranges)))


@torch.inference_mode()
def evaluate(forward: Callable, model: nn.Module, x, y: torch.Tensor,
             batch_size: int = EVAL_BATCH_SIZE, precision: str = "fp32", rank: int = 0,
             world: int = 1) -> tuple[float, float]:
    """(per-sample mean loss, accuracy) over x, y in eval mode, batch_size examples at a time.

    With several processes each takes every world-th batch (the batches a single process would
    make, so each batch's loss is the same) and the sums are added over the processes.
    x: a tensor on the device or a streamed split; an example --bad_images skip drops counts as wrong.
    """
    model.eval()
    loss_fn = loss_function(model)
    device = y.device
    total_loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    n = len(y)
    for start, x_i, kept in eval_batches(x, n, batch_size, rank, world):
        y_i = y[start:start + batch_size]
        if kept is not None:
            y_i = y_i[kept.to(device)]
            if x_i is None:
                continue
        with autocast(device, precision):
            scores = forward(x_i).float()  # logits or log-probabilities
        total_loss += loss_fn(scores, y_i, reduction="sum")
        correct += (scores.argmax(-1) == y_i).sum()
    if world > 1:  # one all-reduce; counts up to 2**53 are exact in float64
        total_loss, correct = dist.all_sum(torch.stack([total_loss, correct.double()]))
    return float(total_loss) / n, int(correct) / n


def fit(state: TrainState, preprocess: Preprocess, data: dict[str, torch.Tensor], settings: LoopSettings,
        forward_model: nn.Module | None = None, on_epoch_end: Callable[[TrainState], None] | None = None,
        log: Callable[[str], None] = info, progress_factory: Callable | None = None,
        rewrap: Callable[[], nn.Module] | None = None) -> TrainState:
    """Train from state.epoch to settings.n_epochs; restore the best weights by validation loss.

    `data` holds x_train, y_train, x_val, y_val on the training device. `forward_model` is the
    module to call (a torch.compile'd wrapper of state.model, say); state.model is what is saved.
    `rewrap` builds it again: DDP fixes when it wraps which parameters get gradients, so the
    frozen backbone's epochs and those after it each need their own wrapper.
    """
    net = forward_model if forward_model is not None else state.model  # a compiled module has no truth value
    wrapped_frozen = False  # the wrapper was built with every parameter training
    arrange = layout(settings.channels_last)

    def forward(x):
        return net(arrange(preprocess(x)))

    def forward_eval(x):  # not through DDP: its forward may start collectives, and processes evaluate unequal shares
        return (state.model if settings.world > 1 else net)(arrange(preprocess(x)))

    for epoch in range(state.epoch, settings.n_epochs):
        if stopped(state, settings.early_stop):  # checked first, so a resumed run that had stopped stays so
            break
        started = time.perf_counter()
        if settings.freeze_epochs and rewrap is not None:  # the same epoch on every process, so the same wrapper
            frozen = state.epoch < settings.freeze_epochs
            if frozen != wrapped_frozen:
                finetune.freeze_backbone(state.model, frozen)  # before wrapping: the wrapper reads requires_grad
                net, wrapped_frozen = rewrap(), frozen
        progress = progress_factory(epoch) if progress_factory else None
        with progress or nullcontext():
            train_loss = train_epoch(state, forward, data["x_train"], data["y_train"], settings,
                                     progress.update if progress else None)
        if settings.world > 1:  # each process updated BatchNorm statistics on its own slices
            dist.broadcast_buffers(state.model)
        validate = functools.partial(evaluate, x=data["x_val"], y=data["y_val"],
                                     batch_size=eval_batch_size(settings.batch_size), precision=settings.precision,
                                     rank=settings.rank, world=settings.world)
        valid_loss, valid_acc = validate(forward_eval, state.model)
        ema = None
        if state.ema is not None:  # its BatchNorm statistics: the model's, as they stand at the epoch's end
            finetune.copy_buffers(state.ema, state.model)
            ema = validate(lambda x: state.ema.module(arrange(preprocess(x))), state.ema.module)
        record_epoch(state, train_loss, valid_loss, valid_acc, time.perf_counter() - started, ema)
        if settings.verbose >= 1:
            log(format_epoch(state, settings.n_epochs))
        if on_epoch_end is not None:
            on_epoch_end(state)
    if state.best_weights is not None:
        state.model.load_state_dict(state.best_weights)
    return state


def stopped(state: TrainState, early_stop: int) -> bool:
    """Whether training is over before n_epochs: the loss diverged, or early stopping's patience ran out."""
    if not state.history:
        return False
    diverged = not math.isfinite(state.history[-1]["train_loss"])
    return diverged or bool(early_stop and state.bad_epochs >= early_stop)


def record_epoch(state: TrainState, train_loss: float, valid_loss: float, valid_acc: float, seconds: float,
                 ema: tuple[float, float] | None = None):
    """Count the epoch and keep its weights if they are the best so far by validation loss.

    With --ema, `ema` is the EMA weights' (loss, accuracy): the epoch's candidate is then the
    better of the two (the model's on a tie), and best_from says whose weights were kept.
    valid_loss and valid_acc stay the model's own; ema_valid_loss and ema_valid_acc sit beside them."""
    state.epoch += 1
    loss, source, module = valid_loss, "raw", state.model
    if ema is not None and ema[0] < valid_loss:
        loss, source, module = ema[0], "ema", state.ema.module
    if loss <= state.best_loss:  # `<=` as in the article: ties go to the later epoch
        state.best_loss, state.best_epoch, state.bad_epochs, state.best_from = loss, state.epoch, 0, source
        state.best_weights = {k: v.detach().clone() for k, v in module.state_dict().items()}
    else:
        state.bad_epochs += 1
    lr = finetune.scheduled_lr(state.optimizer)
    record = {"epoch": state.epoch, "train_loss": train_loss, "valid_loss": valid_loss, "valid_acc": valid_acc}
    if ema is not None:
        record.update(ema_valid_loss=ema[0], ema_valid_acc=ema[1])
    state.history.append({**record, "lowest_loss": state.best_loss, "lr": lr, "seconds": round(seconds, 3)})


def format_epoch(state: TrainState, n_epochs: int) -> str:
    h = state.history[-1]
    return (f"Epoch({h['epoch']}/{n_epochs}): train_loss={h['train_loss']:.4e}  "
            f"valid_loss={h['valid_loss']:.4e}  "
            + (f"ema_valid_loss={h['ema_valid_loss']:.4e}  " if "ema_valid_loss" in h else "")
            + f"lowest_loss={h['lowest_loss']:.4e}  "
            f"valid_acc={h['valid_acc']:.4f}  ({h['seconds']:.1f}s)")
