"""Exact resume: the training checkpoint, what must still match, and which flags may change.

At every epoch end the run folder's `checkpoint.safetensors` receives everything `TrainState`
holds: the weights, the optimizer's state (its tensors flattened; param_groups as JSON), the
scheduler's state_dict, every random generator used (the global CPU one that draws dropout
masks, the shuffling generator, the GPU's), the epoch, the best weights and loss, the
early-stopping counter and the history. `ptflow train --resume RUN` rebuilds the model and
optimizer from the run's saved config, loads that state and goes on: on CPU the run ends with
the same weights, bit for bit, as the same run left alone.

The resume point is the end of the last completed epoch (see interrupt.py for why a Ctrl-C
mid-epoch discards the partial epoch rather than saving it).

With several processes the main process writes the checkpoint, holding every process's random
generators (gathered to it: each draws its own dropout masks); the weights, optimizer and
shuffling are the same on all. On resume the main process reads it and shares its bytes, and
each process takes back its own generators: with the same number of processes the run goes on
bit for bit on CPU; with another number it goes on with a warning that the numbers will differ.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

import ptflow
from ptflow import __version__
from ptflow.config import TrainConfig, fields_where
from ptflow.console import warn
from ptflow.errors import PtflowError, UsageError, first_line, shown
from ptflow.training import checkpoint, runs
from ptflow.training import distributed as dist
from ptflow.training.distributed import is_main_process
from ptflow.training.loop import TrainState

CHECKPOINT = "checkpoint.safetensors"

# What --resume may change is declared on each TrainConfig field (resume=True): where files go,
# what is printed or logged, and how long training goes on. Anything else would make the resumed
# run a different experiment from the one that started. The device may change too (a GPU taken
# back), with a warning that the numbers will then differ from an uninterrupted run. So may the
# fields declared exact=True (the thread count, recorded in the run's config): the run continues
# with its recorded value unless one is given on purpose, which is warned of in the same words.
CHANGEABLE = tuple(sorted(fields_where(resume=True)))
INEXACT = tuple(sorted(fields_where(resume=True, exact=True)))


# --- which run, with which config ---------------------------------------------------------------

def resolve(spec: str, given: dict, restarting: bool = False) -> tuple[Path, TrainConfig]:
    """The run folder to resume and its config, with the flags (or config-file values) `given`.

    Values equal to the saved ones are fine (the original command line with --resume added
    works); a changed value is refused unless it is in CHANGEABLE. `restarting`: torchrun
    restarted this job after a process failed, so a run still marked "running" is this job's own.
    The run's lock is taken first and kept for the resumed run: a second resume of the same run
    is refused, never interleaved with the first.
    """
    run_dir = runs.find(spec, given.get("runs_dir", TrainConfig.runs_dir))
    refuse_special_files(run_dir)
    if is_main_process():
        runs.claim_or_refuse(run_dir)
    try:
        return run_dir, _resolved_config(run_dir, given, restarting)
    except BaseException:
        runs.release(run_dir)
        raise


def refuse_special_files(run_dir: Path) -> None:
    """A run folder may come from someone else: a link in it (metrics.jsonl -> ~/.bashrc) would
    make the resumed run write through it, outside the folder, and a FIFO or a device would block
    or swallow its writes. Refused before anything is read or written, the lock file included;
    folders (tensorboard/) are fine."""
    try:
        entries = sorted(run_dir.iterdir())
        links = [entry.name for entry in entries if entry.is_symlink()]
        special = [entry.name for entry in entries if not (entry.is_symlink() or entry.is_file() or entry.is_dir())]
    except OSError as exc:
        raise PtflowError(f"cannot read run folder {run_dir}: {exc.strerror or exc}") from None
    if links:
        what = "is a symbolic link" if len(links) == 1 else "are symbolic links"
        raise PtflowError(f"{run_dir}: {', '.join(links[:3])} {what}; ptflow does not resume a run folder with "
                          f"links in it (it would write through them): copy the run's files instead")
    if special:
        what = "is not a regular file" if len(special) == 1 else "are not regular files"
        raise PtflowError(f"{run_dir}: {', '.join(special[:3])} {what} (a FIFO, a socket or a device); ptflow "
                          f"resumes a run folder of files and folders only")


def _resolved_config(run_dir: Path, given: dict, restarting: bool) -> TrainConfig:
    saved = runs.read_json(run_dir / "config.json")
    if not isinstance(saved, dict):
        raise PtflowError(f"{run_dir}: no readable config.json, so it cannot be resumed")
    saved = {**TrainConfig().to_dict(), **saved}  # options added to ptflow since the run started: defaults
    record = runs.read_json(run_dir / "run.json") or {}
    status = runs.status(record)
    if status == "running" and not restarting:  # alive, yet unlocked: a ptflow from before run locks
        raise PtflowError(f"{run_dir} is still running (pid {record.get('pid')} on {record.get('host')}); "
                          f"stop it first")
    # An exact field given as None (the original config file's "torch's default") keeps the value recorded
    given = {k: v for k, v in given.items() if not (k in INEXACT and v is None)}
    changes = {k: v for k, v in given.items() if k != "runs_dir" and saved.get(k) != v}
    refused = [k for k in changes if k not in CHANGEABLE]
    if refused:
        listed = ", ".join(f"--{k} ({shown(saved.get(k))} -> {shown(changes[k])})" for k in refused)
        raise UsageError(f"--resume continues {run_dir.name} as it was configured and cannot change {listed}; "
                         f"only {', '.join('--' + k for k in CHANGEABLE)} may differ")
    try:
        config = TrainConfig.from_dict({**saved, **changes, **_outputs(run_dir, saved, given)})
    except UsageError as exc:
        raise UsageError(f"{run_dir / 'config.json'}: {exc}") from None
    if "n_epochs" in changes and config.scheduler != "none":
        raise UsageError(f"--n_epochs cannot change on --resume with --scheduler {config.scheduler}: "
                         f"the learning-rate schedule was planned for {saved['n_epochs']} epochs")
    if status == "finished" and not {"n_epochs", "early_stop"} & set(changes):
        raise UsageError(f"{run_dir.name} already finished ({record.get('epochs_run')} epochs); "
                         f"pass a larger --n_epochs to train it longer")
    if status in ("finished", "pruned") and not (run_dir / CHECKPOINT).is_file():
        raise PtflowError(f"{run_dir.name} kept no checkpoint to continue from (sweep trials drop theirs when "
                          f"they end); train its settings again instead (`ptflow runs show {run_dir.name}`)")
    for name in sorted(set(changes) & set(INEXACT)):
        if saved.get(name) is not None:  # None: the run predates the field and recorded no value
            warn(f"{run_dir.name} ran with --{name} {saved[name]} and continues with {changes[name]}: the numbers "
                 f"will differ from an uninterrupted run (bit-exact resume needs the same --{name})")
    return config


def _outputs(run_dir: Path, saved: dict, given: dict) -> dict:
    """Where a resumed run writes: where the user asked, never where its config.json says.

    A run folder may come from another machine or another person, so the output paths saved in
    it (declared with writes=True in config.py) are not trusted: the run's files go to the run
    folder named on the command line, and a model file or tracking store only where a flag given
    now says.
    """
    outputs = {"runs_dir": str(run_dir.parent), "run_name": run_dir.name}
    for name in sorted(fields_where(writes=True) - set(outputs)):
        outputs[name] = given.get(name)
        if saved.get(name) and name not in given:
            warn(f"{run_dir.name} was started with --{name} {saved[name]}; give --{name} again to write there")
    return outputs


# --- what must still match ----------------------------------------------------------------------

def identity(model: str, model_args: dict, data_fingerprint: str) -> dict:
    """What a checkpoint is only valid with: the architecture, the data and the code."""
    return {"model": model, "model_args": model_args, "data_fingerprint": data_fingerprint,
            "code": {"ptflow": __version__, "torch": str(torch.__version__), "source": source_fingerprint(),
                     "git_commit": runs.git_commit()}}


def source_fingerprint(root: Path | None = None) -> str:
    """sha256 of ptflow's own source files: catches edits that a git commit (or none) would miss."""
    root = root or Path(ptflow.__file__).parent  # every module of every layer, named by its path in the package
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def check_identity(run_dir: Path, saved: dict, now: dict, allow_changed_code: bool) -> None:
    """Refuse, saying what differs, when the data, the model or (unless allowed) the code changed."""
    hard = []
    if saved["data_fingerprint"] != now["data_fingerprint"]:
        hard.append(f"the data changed (fingerprint {saved['data_fingerprint'][:12]} when it started, "
                    f"{now['data_fingerprint'][:12]} now)")
    if (saved["model"], saved["model_args"]) != (now["model"], now["model_args"]):
        hard.append(f"the model changed ({_changed(saved['model_args'], now['model_args']) or saved['model']})")
    code = [f"{name} {saved['code'].get(name)} -> {now['code'].get(name)}" for name in ("ptflow", "torch")
            if saved["code"].get(name) != now["code"].get(name)]
    if saved["code"]["source"] != now["code"]["source"]:
        commits = f", git commit {_short(saved['code'].get('git_commit'))} -> {_short(now['code'].get('git_commit'))}"
        code.append("ptflow's source files changed" + commits)
    if hard or (code and not allow_changed_code):
        hint = "; --allow_changed_code resumes anyway" if code and not hard else ""
        raise PtflowError(f"cannot resume {run_dir.name}: {'; '.join(hard + code)}{hint}")
    if code:
        warn(f"resuming {run_dir.name} with changed code ({'; '.join(code)}): the numbers may differ "
             f"from an uninterrupted run")


def _changed(a: dict, b: dict) -> str:
    return ", ".join(f"{k} {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))


def _short(commit: str | None) -> str:
    return commit[:10] if commit else "none"


# --- TrainState <-> tensors + JSON ---------------------------------------------------------------

def state_dict(state: TrainState, device: torch.device) -> tuple[dict[str, torch.Tensor], dict]:
    """TrainState as flat named tensors (for safetensors) and JSON-able metadata: no pickle anywhere."""
    tensors = _prefixed("model/", state.model.state_dict())
    if state.best_weights is not None:
        tensors.update(_prefixed("best/", state.best_weights))
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
            "bad_epochs": state.bad_epochs, "history": state.history,
            "optimizer": {"param_groups": optimizer["param_groups"], "scalars": scalars},
            "scheduler": _json_only(state.scheduler.state_dict()) if state.scheduler else None}
    return tensors, meta


def load_state_dict(state: TrainState, tensors: dict[str, torch.Tensor], meta: dict, device: torch.device):
    """The inverse of state_dict, into a TrainState freshly built from the same config."""
    state.model.load_state_dict(_unprefixed("model/", tensors))
    best = _unprefixed("best/", tensors)
    state.best_weights = {k: v.to(device) for k, v in best.items()} if best else None
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
    state.epoch, state.best_epoch, state.bad_epochs = meta["epoch"], meta["best_epoch"], meta["bad_epochs"]
    state.best_loss = float(meta["best_loss"])
    state.history = meta["history"]
    set_rng_states(state.generator, _unprefixed("rng/", tensors), device)  # a missing process's: warned of


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


# --- files -------------------------------------------------------------------------------------------

def drop_checkpoint(run_dir: Path) -> None:
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
    checkpoint.save_checkpoint(run_dir / CHECKPOINT, tensors, meta)


def restore(run_dir: Path, state: TrainState, ident: dict, device: torch.device, n_epochs: int,
            allow_changed_code: bool = False) -> bool:
    """Load the run's checkpoint into `state`; False when it stopped before completing an epoch.

    Checks everything first: a refusal leaves the run folder as it was.
    """
    path = run_dir / CHECKPOINT
    # Read by the main process alone (another machine may not see the run folder) and shared.
    data = dist.share_from_main(lambda: checkpoint.read_bytes(path, "checkpoint") if path.exists() else b"")
    if not data:  # it stopped before completing an epoch: nothing to restore
        return False
    tensors, meta = checkpoint.parse_checkpoint(path, data)
    try:
        missing = sorted(set(meta["tensors"]) - set(tensors))  # an optimizer would only fail steps later
        if missing:
            raise ValueError(f"tensors missing: {', '.join(missing[:3])}")
        check_identity(run_dir, meta["identity"], ident, allow_changed_code)
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
