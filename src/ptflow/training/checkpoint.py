"""The training checkpoint: what goes in, how it is written, and how a run is restored from it.

At every epoch end the run folder's `checkpoint.safetensors` receives everything `TrainState`
holds: the weights, the optimizer's state (its tensors flattened; param_groups as JSON), the
scheduler's state_dict, the --ema average, --precision fp16's loss scale (the GradScaler's
state_dict: the scale and the steps since it last changed, as JSON), every random generator used
(the global CPU one that draws dropout masks, the shuffling generator, the GPU's), the epoch, the
best weights and loss, the early-stopping counter and the history, with the run's identity
(identity.py). `ptflow train
--resume RUN` rebuilds the model and optimizer from the run's saved config (resume.py), loads
that state and goes on: on CPU the run ends with the same weights, bit for bit, as the same run
left alone. The file is safetensors with JSON metadata, written atomically (a kill at any
moment leaves the previous checkpoint whole) and read without unpickling anything.

The resume point is the end of the last completed epoch, or, when a signal stopped training
mid-epoch (interrupt.py), the step it stopped after: the checkpoint then also holds the epoch's
position (its example order, its augmentation draws, how many batches are done and the loss
summed so far), and the resumed run continues at the next batch with the generators as they
were. A kill without a signal (kill -9, a crash) leaves the last epoch end's checkpoint.

With several processes the main process writes the checkpoint, holding every process's random
generators (gathered to it: each draws its own dropout masks); the weights, optimizer and
shuffling are the same on all. On resume the main process reads it and shares its bytes, and
each process takes back its own generators: with the same number of processes the run goes on
bit for bit on CPU; with another number it goes on with a warning that the numbers will differ.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ptflow.console import warn
from ptflow.errors import PtflowError, UsageError, first_line
from ptflow.files import atomic_write
from ptflow.models.files import (
    FORMAT_VERSION,
    check_version,
    contiguous_cpu,
    detect_format,
    read_bytes,
    read_safetensors,
)
from ptflow.training import distributed as dist
from ptflow.training import identity
from ptflow.training.distributed import is_main_process
from ptflow.training.loop import EpochPosition, TrainState

CHECKPOINT = "checkpoint.safetensors"  # its name in a run folder
CHECKPOINT_FORMAT = "ptflow.checkpoint"


# --- a run folder's checkpoint -------------------------------------------------------------------

def drop(run_dir: Path) -> None:
    """Delete a run's checkpoint once nothing will continue it (an ended sweep trial): on long
    sweeps they are most of the disk used (16 MB each for the article's MLP)."""
    if is_main_process():
        (Path(run_dir) / CHECKPOINT).unlink(missing_ok=True)


def save(run_dir: Path, state: TrainState, ident: dict, device: torch.device) -> None:
    """Write the checkpoint (atomically: a kill at any moment leaves the previous one intact).
    Every process calls it (the random generators are gathered); the main process writes."""
    tensors, meta = state_dict(state, device)
    if not is_main_process():
        return
    meta = {"identity": ident, "device": str(device), "world_size": dist.world_size(), "tensors": sorted(tensors),
            **meta}
    save_checkpoint(run_dir / CHECKPOINT, tensors, meta)


def restore(run_dir: Path, state: TrainState, ident: dict, device: torch.device, n_epochs: int,
            allow_changed_code: bool = False) -> bool:
    """Load the run's checkpoint into `state`; False when it stopped before completing an epoch.

    Checks everything first: a refusal leaves the run folder as it was.
    """
    path = run_dir / CHECKPOINT
    # Read by the main process alone (another machine may not see the run folder) and shared.
    data = dist.share_from_main(lambda: read_bytes(path, "checkpoint") if path.exists() else b"")
    if not data:  # it stopped before completing an epoch: nothing to restore
        return False
    tensors, meta = parse_checkpoint(path, data)
    try:
        missing = sorted(set(meta["tensors"]) - set(tensors))  # an optimizer would only fail steps later
        if missing:
            raise ValueError(f"tensors missing: {', '.join(missing[:3])}")
        identity.check(run_dir, meta["identity"], ident, allow_changed_code)
        load_state_dict(state, tensors, meta, device)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise PtflowError(f"{path}: corrupt checkpoint, or not this run's ({_detail(exc)})") from None
    if state.epoch > n_epochs:
        raise UsageError(f"{run_dir.name} already ran {state.epoch} epochs; --n_epochs {n_epochs} cannot shorten it")
    if torch.device(meta.get("device", "cpu")).type != device.type:
        warn(f"{run_dir.name} ran on {meta.get('device')} and continues on {device}: the numbers will differ "
             f"from an uninterrupted run")
    if meta.get("world_size", 1) != dist.world_size():
        warn(f"{run_dir.name} ran on {meta.get('world_size', 1)} process(es) and continues on {dist.world_size()}: "
             f"the numbers will differ from an uninterrupted run (--nproc_per_node {meta.get('world_size', 1)} "
             f"would continue it exactly)")
    return True


def _detail(exc: Exception) -> str:
    """One informative line of an exception (load_state_dict's first line only names the class)."""
    if isinstance(exc, KeyError):
        return f"missing {exc}"
    lines = str(exc).strip().splitlines()
    return (lines[1].strip() if isinstance(exc, RuntimeError) and len(lines) > 1 else first_line(exc))[:200]

# --- TrainState <-> tensors + JSON ---------------------------------------------------------------

def state_dict(state: TrainState, device: torch.device) -> tuple[dict[str, torch.Tensor], dict]:
    """TrainState as flat named tensors (for safetensors) and JSON-able metadata: no pickle anywhere."""
    tensors = _prefixed("model/", state.model.state_dict())
    if state.best_weights is not None:
        tensors.update(_prefixed("best/", state.best_weights))
    if state.ema is not None:  # --ema: the average's weights, buffers and update count (n_averaged)
        tensors.update(_prefixed("ema/", state.ema.state_dict()))
    optimizer = state.optimizer.state_dict()
    scalars = {}
    for index, values in optimizer["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer/{index}/{name}"] = value  # Adam's step, exp_avg, exp_avg_sq; SGD's momentum
            else:
                scalars.setdefault(str(index), {})[name] = value
    tensors.update(_prefixed("rng/", rng_states(state.generator, device)))
    meta = {"epoch": state.epoch, "best_loss": state.best_loss, "best_epoch": state.best_epoch,
            "bad_epochs": state.bad_epochs, "best_from": state.best_from, "history": state.history,
            "optimizer": {"param_groups": optimizer["param_groups"], "scalars": scalars},
            "scheduler": _json_only(state.scheduler.state_dict()) if state.scheduler else None,
            "scaler": state.scaler.state_dict() if state.scaler is not None else None}
    position = state.position
    if position is not None:  # stopped mid-epoch: where it stands (loop.EpochPosition)
        draws = {"order": position.order, "shifts": position.shifts, "flips": position.flips}
        tensors.update({f"position/{k}": v for k, v in draws.items() if v is not None})
        # The loss sum is each process's own: gathered like the generators (rng_states).
        for rank, total in enumerate(dist.gather_to_main(position.total.detach().reshape(1).cpu()) or []):
            tensors[f"position/rank{rank}/total"] = total
        seen = dist.gather_to_main(torch.tensor([position.seen], dtype=torch.int64)) or []
        meta["position"] = {"batches": position.batches, "seen": [int(n) for n in seen]}
    return tensors, meta


def load_state_dict(state: TrainState, tensors: dict[str, torch.Tensor], meta: dict, device: torch.device):
    """The inverse of state_dict, into a TrainState freshly built from the same config."""
    state.model.load_state_dict(_unprefixed("model/", tensors))
    best = _unprefixed("best/", tensors)
    state.best_weights = {k: v.to(device) for k, v in best.items()} if best else None
    if state.ema is not None:  # strict: a checkpoint without the EMA is not this run's
        state.ema.load_state_dict(_unprefixed("ema/", tensors))
    state.best_from = meta.get("best_from", "raw")
    optimizer_state: dict[int, dict] = {}
    for key, value in _unprefixed("optimizer/", tensors).items():
        index, name = key.split("/", 1)
        optimizer_state.setdefault(int(index), {})[name] = value
    for index, values in meta["optimizer"]["scalars"].items():
        optimizer_state.setdefault(int(index), {}).update(values)
    state.optimizer.load_state_dict({"state": optimizer_state, "param_groups": meta["optimizer"]["param_groups"]})
    _check_optimizer_shapes(state.optimizer)
    _match_layouts(state.optimizer)
    if state.scheduler is not None:
        state.scheduler.load_state_dict(meta["scheduler"])
    if state.scaler is not None and meta.get("scaler"):  # a checkpoint older than fp16 has none: a fresh scale
        state.scaler.load_state_dict(meta["scaler"])
    state.epoch, state.best_epoch, state.bad_epochs = meta["epoch"], meta["best_epoch"], meta["bad_epochs"]
    state.best_loss = float(meta["best_loss"])
    state.history = meta["history"]
    set_rng_states(state.generator, _unprefixed("rng/", tensors), device)  # a missing process's: warned of
    state.position = _position(tensors, meta.get("position"), device)


def _position(tensors: dict[str, torch.Tensor], meta: dict | None, device: torch.device) -> EpochPosition | None:
    """The saved position inside an epoch, for this process; None at an epoch end, and where this
    process has none (another process count: the epoch starts again, as resume warns)."""
    if meta is None:
        return None
    total = tensors.get(f"position/rank{dist.rank()}/total")
    seen = meta["seen"]
    if total is None or not isinstance(seen, list) or dist.rank() >= len(seen):
        return None
    draws = {k: tensors[f"position/{k}"].to(device) if f"position/{k}" in tensors else None
             for k in ("order", "shifts", "flips")}
    return EpochPosition(draws["order"], draws["shifts"], draws["flips"], total.reshape(()).to(device),
                         int(meta["batches"]), int(seen[dist.rank()]))


def rng_states(generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """Every generator in use: the shuffling one (shared by all processes) and each process's own,
    under "cpu" and "cuda" for the main process and "rankN/cpu", "rankN/cuda" for process N.
    A collective with several processes: every process calls it."""
    states = {"shuffle": generator.get_state()}
    own = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        own["cuda"] = torch.cuda.get_rng_state(device)  # dropout masks drawn on the GPU
    elif device.type == "mps":
        own["mps"] = torch.mps.get_rng_state()
    for name, value in own.items():
        for rank, part in enumerate(dist.gather_to_main(value) or []):
            states[f"rank{rank}/{name}" if rank else name] = part
    return states


def set_rng_states(generator: torch.Generator, states: dict[str, torch.Tensor], device: torch.device) -> bool:
    """Restore the generators; False when this process has none saved (the run had fewer processes)."""
    generator.set_state(states["shuffle"])
    prefix = f"rank{dist.rank()}/" if dist.rank() else ""
    if prefix + "cpu" not in states:
        return False
    torch.set_rng_state(states[prefix + "cpu"])
    if device.type == "cuda" and prefix + "cuda" in states:
        torch.cuda.set_rng_state(states[prefix + "cuda"], device)
    elif device.type == "mps" and prefix + "mps" in states:
        torch.mps.set_rng_state(states[prefix + "mps"])
    return True


def _prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in tensors.items()}


def _unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _json_only(values: dict) -> dict:
    """Drop what JSON cannot hold (older torch keeps a bound method in OneCycleLR's state); the
    scheduler rebuilt from the same config already has it."""
    kept = {}
    for key, value in values.items():
        try:
            json.dumps(value)
        except TypeError:
            continue
        kept[key] = value
    return kept


def _check_optimizer_shapes(optimizer: torch.optim.Optimizer) -> None:
    """Moment buffers shaped like their parameters: the optimizer itself would only fail at its
    first step, mid-epoch, on a damaged or foreign checkpoint."""
    for param, values in optimizer.state.items():
        for name, value in values.items():
            if torch.is_tensor(value) and value.dim() > 0 and value.shape != param.shape:
                raise ValueError(f"optimizer {name} of shape {tuple(value.shape)} for a parameter of "
                                 f"shape {tuple(param.shape)}")


def _match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give loaded moment buffers their parameter's memory layout (channels_last convnets on CPU).

    safetensors stores tensors contiguous; an uninterrupted run's buffers share the parameter's
    strides, and elementwise kernels may round differently on different layouts.
    """
    for param, values in optimizer.state.items():
        for name, value in values.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                values[name] = torch.empty_like(param, dtype=value.dtype).copy_(value)

# --- the file ------------------------------------------------------------------------------------

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
