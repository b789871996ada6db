"""`ptflow train`: data -> model -> optimizer -> loop -> test -> save, in that order.

Takes a validated TrainConfig; everything below gets plain values from it. Every epoch ends
with a training checkpoint in the run folder, so a stopped run can continue (checkpoint.py, resume.py).

Under torchrun every process runs this same function (ddp.py says what changes): each loads
the data and builds the model; the main process alone opens the run folder, writes files and
prints, and shares what it decided (the folder, the checkpoint it read) with the others.
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ptflow import plots, predictions
from ptflow.config import TrainConfig, fields_where
from ptflow.console import epoch_bar_factory, info, warn
from ptflow.data.bad_images import BadImages
from ptflow.data.preprocessing import fit_preprocessing
from ptflow.data.splits import Splits, load_splits
from ptflow.devices import cpu_threads, has_native_bf16, resolve_device
from ptflow.errors import PtflowError, RunStopped, UsageError
from ptflow.files import remove_temporaries, write_json
from ptflow.models import pretrained, registry, timm_models
from ptflow.models.files import save_model, versions
from ptflow.models.networks import Preprocess
from ptflow.training import (
    checkpoint,
    ddp,
    finetune,
    identity,
    imbalance,
    interrupt,
    outcome,
    precision,
    runs,
    tracking,
)
from ptflow.training import distributed as dist
from ptflow.training.loop import LoopSettings, TrainState, fit
from ptflow.training.steps import build_optimizer, build_scheduler, eval_batch_size, steps_per_epoch


def to_device(splits: Splits, device: torch.device, config: TrainConfig | None = None, bad_images=None,
              aug=None) -> dict:
    """The splits as tensors on the device, images still uint8 (4x smaller than float32); a
    streamed dataset's inputs as splits the DataLoader workers decode (data/streaming.py)."""
    labels = {f"y_{p}": getattr(splits, f"y_{p}") for p in ("train", "val", "test")}
    data = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in labels.items()}
    transform = training_transform(aug, splits, config.interpolation) if aug is not None else None
    # Streamed: what is not in memory, and the training split wherever a random transform needs
    # each image by itself (in worker processes, not in the training loop).
    streamed = tuple(p for p in ("train", "val", "test")
                     if splits.listed(p) or (p == "train" and transform is not None))
    for p in ("train", "val", "test"):
        if p not in streamed:
            data[f"x_{p}"] = torch.from_numpy(np.ascontiguousarray(getattr(splits, f"x_{p}"))).to(device)
    if not streamed:
        return data
    from ptflow.data.streaming import Examples, Stream, StreamPart, default_workers

    workers = config.num_workers if config.num_workers is not None else default_workers(dist.local_world_size())
    parts = {p: getattr(splits, f"x_{p}") for p in streamed}
    stream = Stream(Examples(parts, splits.geometry, transform, config.seed), workers, device, bad_images)
    for p in streamed:
        data[f"x_{p}"] = StreamPart(stream, p, len(parts[p]))
    return data


def _random_crops(config: TrainConfig) -> bool:
    """Whether training cuts random resized crops (--augment light, standard and strong do)."""
    from ptflow.data.transforms import Augmentation

    try:
        return Augmentation.of(config, flip=False).crop_scale is not None
    except ValueError:  # a bad --augment: augmentation() says so in one line, after the data is read
        return False


def augmentation(config: TrainConfig, splits: Splits):
    """--augment and its knobs resolved (data/transforms.py), or one line where the data cannot
    take them; checked before a run folder exists. A mirrored example is still one of its class
    for photos and objects, not for handwriting (the digit style)."""
    from ptflow.data.transforms import Augmentation

    aug = Augmentation.of(config, flip=splits.is_image and splits.image_style != "digit")
    if (aug.per_example or aug.mixes) and not splits.is_image:
        raise UsageError(f"--augment {config.augment} (or its knobs) needs image data; {config.dataset} has "
                         f"{splits.input_shape} features")
    if config.class_weights != "none" and (aug.mixes or aug.label_smoothing):
        raise UsageError("--class_weights balanced cannot be combined with mixup, cutmix or label smoothing "
                         "(--augment standard and strong smooth labels): use --sampler balanced instead")
    return aug


def training_transform(aug, splits: Splits, interpolation: str):
    """The per-example random transform of training images (aug: augmentation()), or None;
    interpolation: --interpolation, the resize filter evaluation uses too."""
    if not aug.per_example:
        return None
    from ptflow.data.transforms import train_transform

    return train_transform(aug, splits.input_shape[1:], splits.input_shape[0], interpolation)


def build_state(config: TrainConfig, splits: Splits, device: torch.device, preprocess: Preprocess,
                trust_code: bool = True, origin: str | None = None) -> tuple[TrainState, dict, dict | None]:
    """The model, optimizer, schedule and shuffling generator of a fresh run, the model's arguments,
    and what --pretrained(_path) loaded into it (models/pretrained.py; None without them).

    origin names the file config.model was read from (a resumed run's config), for the trust rule.
    The model is tried on two training examples first: arguments that contradict the data fail
    here, before a run folder exists.
    """
    torch.manual_seed(config.seed)  # initial weights and dropout masks follow the seed
    model_args = {**finetune.model_kwargs_for(config), **config.model_args}  # --drop_path for models that take it
    args = registry.constructor_args(config.model, splits.input_shape, len(splits.classes), model_args,
                                     config.to_dict())  # a built-in network reads the flags it names
    model = registry.build(config.model, args, trust_code, origin)
    loaded = pretrained.apply(model, config.model, config.pretrained, config.pretrained_path)  # --pretrained(_path)
    sample = preprocess(torch.from_numpy(splits.head("train", 2)).to(device))  # |sample| = (2, *input_shape)
    registry.check_fits(model.to(device), sample, len(splits.classes), config.model, config.model_args)
    model = ddp.prepare(model, config).to(device)
    if splits.is_image and (config.channels_last or device.type == "cpu"):
        model = model.to(memory_format=torch.channels_last)  # oneDNN's and tensor cores' fast layout for convolutions
    optimizer = build_optimizer(model, config.optimizer, config.lr, config.weight_decay, config.head_lr_mult,
                                config.layer_decay)
    per_epoch = steps_per_epoch(len(splits.y_train), config.batch_size, dist.world_size())
    scheduler = build_scheduler(optimizer, config.scheduler, config.n_epochs * per_epoch,
                                config.warmup_epochs * per_epoch)
    generator = torch.Generator().manual_seed(config.seed)  # the same shuffled order on every process
    ddp.seed_process(config.seed)
    ema = finetune.build_ema(model, config.ema)  # a copy of the initial weights, before any step
    scaler = precision.grad_scaler(config.precision, device)  # fp16's loss scale; None otherwise
    return TrainState(model, optimizer, scheduler, generator, ema=ema, scaler=scaler), args, loaded


def forward_model(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.nn.Module | None:
    """What each training step calls, when it is not the model itself: DDP, torch.compile, or both."""
    net = ddp.wrap(model, device) if dist.is_distributed() else None
    if config.compile:
        net = torch.compile(net if net is not None else model)
    return net


def train_model(config: TrainConfig, callbacks: list[Callable[[TrainState, Path], None]] = (),
                evaluate_test: bool = True, resume_from: Path | None = None, allow_changed_code: bool = False,
                resume_hint: bool = True, trust_code: bool = True) -> dict:
    """Train one model as the config says; returns the run's summary (also in run.json) and its folder.

    Each callback is called as callback(state, run_dir) after every epoch (sweeps prune there);
    one that raises RunStopped ends the run with that status. Sweep trials pass
    evaluate_test=False: only the winner of a sweep is judged on the test split, and they pass
    resume_hint=False: an interrupted trial is not continued with `ptflow train --resume`.
    With resume_from (a run folder; `config` from resume.resolve) the run continues from its
    last checkpoint, provided the data, the model and the code still match. Model and dataset
    code that the config names by import path is imported only with trust_code when the config was
    read from a run folder (resume_from), as it is then chosen by the file, not the user.
    Under torchrun, every process calls it, inside `distributed.joined` (cli/train.py).
    Each process trains on config.num_threads CPU threads (torch's default when None); the run's
    config.json records the count used, so that --resume continues on the same count.
    """
    with cpu_threads(config.num_threads) as threads:
        config = dataclasses.replace(config, num_threads=threads)
        try:
            return _train_model(config, callbacks, evaluate_test, resume_from, allow_changed_code, resume_hint,
                                trust_code)
        except Exception as exc:
            if dist.lost_peer(exc):  # a dead or hung process: one line, not a traceback from a collective
                raise dist.lost_peer_error(exc) from None
            raise


def _train_model(config: TrainConfig, callbacks, evaluate_test: bool, resume_from: Path | None,
                 allow_changed_code: bool, resume_hint: bool, trust_code: bool) -> dict:
    started = time.time()
    # a timm model's own image size, crop and resize filter, where not given
    config = timm_models.with_own_geometry(config, resumed=resume_from is not None)
    device = ddp.device_for_process(resolve_device(config.device_name()))
    ddp.check(config, device.type, dist.world_size())
    precision.check(config.precision, device)  # fp16 off CUDA: refused before the data is even read
    origin = None if resume_from is None else str(Path(resume_from) / "config.json")
    bad_images = BadImages(config.bad_images, config.max_bad_fraction)
    splits = load_splits(config.dataset, config.data_dir, config.target, config.train_ratio,
                         config.test_ratio, config.seed, trust_code=trust_code, origin=origin,
                         fold=(config.fold, config.folds) if config.fold else None, bad_images=bad_images,
                         image_size=config.image_size, crop_pct=config.crop_pct, in_memory=config.data_in_memory,
                         interpolation=config.interpolation, crops_from_files=_random_crops(config))
    dist.check_same("data", splits.fingerprint)
    ddp.check_data(len(splits.y_train))
    if config.verbose >= 1:
        processes = ""
        if dist.is_distributed():
            processes = f"  processes: {dist.world_size()} ({dist.backend_of(device.type)})"
        info(f"Train: {splits.shape('train')}  Valid: {splits.shape('val')}  "
             f"Test: {splits.shape('test')}  classes: {len(splits.classes)}  device: {device}{processes}")
        if splits.placement:
            info(f"Images: {splits.placement}")
    if config.precision == "bf16" and not has_native_bf16(device):
        warn(f"{device} has no native bf16 (AMX, AVX512-BF16 or tensor cores): bf16 is emulated there "
             f"and runs several times slower than fp32")
    for flag, value in (("augment_shift", config.augment_shift), ("augment_flip", config.augment_flip),
                        ("channels_last", config.channels_last)):
        if value and not splits.is_image:
            raise UsageError(f"--{flag} needs image data; {config.dataset} has {splits.input_shape} features")
    prep = fit_preprocessing(splits.fitting_sample(config.normalize), config.normalize)
    prep = timm_models.own_preprocessing(config.model, config.normalize, splits.input_shape) or prep
    aug = augmentation(config, splits)  # resolved once: the transform, the loss and run.json read it
    preprocess = Preprocess(splits.input_shape, prep.scale, prep.mean, prep.std).to(device)
    state, args, loaded = build_state(config, splits, device, preprocess, trust_code, origin)
    if config.verbose >= 1:
        info(str(state.model))
    ident = identity.current(config.model, args, splits.fingerprint)
    if resume_from is not None:  # before anything is written: a refusal leaves the run folder as it was
        checkpoint.restore(Path(resume_from), state, ident, device, config.n_epochs, allow_changed_code)
    trackers = tracking.start(config, splits)  # --log: checks the extras are installed before a run folder exists
    run_dir = Path(dist.share_json_from_main(
        lambda: str(_open_run(config, splits.fingerprint, device, started, state, resume_from, splits.skipped,
                              {**_images_of(aug, splits), **({"pretrained": loaded} if loaded else {}),
                               **finetune.lr_groups_of(state.optimizer),
                               **precision.record(config.precision, state.model, config.channels_last)}))))
    data = to_device(splits, device, config, bad_images, aug)
    net = forward_model(state.model, config, device)

    def on_epoch_end(s: TrainState) -> None:
        checkpoint.save(run_dir, s, ident, device)  # first, so that nothing below can lose this epoch
        runs.append_metrics(run_dir, s.history[-1])
        for callback in (*callbacks, *trackers):
            callback(s, run_dir)
        # A signal during validation or a callback: stop here, this epoch saved. With several
        # processes an all-reduce, so also the barrier after the main process's writes.
        interrupt.check()

    settings = LoopSettings(n_epochs=config.n_epochs, batch_size=config.batch_size, early_stop=config.early_stop,
                            precision=config.precision, verbose=config.verbose, augment_shift=config.augment_shift,
                            augment_flip=config.augment_flip, rank=dist.rank(), world=dist.world_size(),
                            sampler=config.sampler, class_weights=imbalance.loss_weights(
                                config.class_weights, splits.y_train, len(splits.classes), device),
                            mixup=aug.mixup, cutmix=aug.cutmix, label_smoothing=aug.label_smoothing,
                            n_classes=len(splits.classes), pixel_scale=prep.scale,
                            freeze_epochs=config.freeze_backbone_epochs, channels_last=config.channels_last,
                            shards=None if splits.train_shards is None else torch.from_numpy(splits.train_shards))
    clock = started - sum(h["seconds"] for h in state.history)  # a resumed run counts its earlier epochs
    try:
        with interrupt.stop_gracefully():
            rewrap = (lambda: forward_model(state.model, config, device)) if net is not None else None
            fit(state, preprocess, data, settings, net, on_epoch_end=on_epoch_end, rewrap=rewrap,
                progress_factory=epoch_bar_factory(config.n_epochs, config.verbose))
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        if isinstance(exc, interrupt.Interrupted) and state.position is not None:
            checkpoint.save(run_dir, state, ident, device)  # stopped mid-epoch: --resume continues at the next batch
        if isinstance(exc, RunStopped):
            status = exc.status
        runs.write_status(run_dir, status=status, finished=time.time(), error=type(exc).__name__)
        tracking.close(trackers, status)
        if status == "interrupted" and resume_hint:
            _say_how_to_resume(run_dir, config, state, exc)
        raise
    if state.best_weights is None:
        runs.write_status(run_dir, status="failed", finished=time.time(), error="diverged")
        tracking.close(trackers, "failed")
        raise dist.shared(PtflowError("training diverged (the validation loss was never finite); try a lower --lr"))
    metrics = _finish(config, splits, prep, args, state, preprocess, data, run_dir, clock, evaluate_test)
    tracking.close(trackers, "finished", metrics)
    return {**metrics, "run_dir": str(run_dir)}


def _open_run(config: TrainConfig, fingerprint: str, device: torch.device, started: float, state: TrainState,
              resume_from: Path | None, skipped: list[dict] = (), images: dict | None = None) -> Path:
    """A new run folder; or the resumed one, brought back to its checkpoint's epoch (main process only).
    skipped: the image files --bad_images skip left out (the fingerprint keeps a resumed run's the same);
    images: what run.json records of how images are fed (_images_of), of the starting weights and of
    the precision and memory format (precision.record)."""
    if resume_from is None:
        run_dir = runs.create(config.runs_dir, config.dataset, config.model, config.run_name)
        # config.json first: a kill at any moment after it leaves a run that --resume can continue
        write_json(run_dir / "config.json", config.to_dict())
        write_json(run_dir / "env.json", runs.environment(config.seed, fingerprint, str(device)))
        counted = {}
        if config.bad_images == "skip":  # the list, even empty: this run would have skipped
            runs.write_bad_images(run_dir, skipped)
            counted = {"bad_images": len(skipped)}
        runs.write_status(run_dir, status="running", started=started, dataset=config.dataset, model=config.model,
                          **counted, **(images or {}), **runs.process(), **runs.processes(str(device)))
        return run_dir
    run_dir = Path(resume_from)
    previous = runs.read_json(run_dir / "run.json") or {}
    resumed = [*previous.get("resumed", []), {"at": started, "after_epoch": state.epoch}]
    runs.write_status(run_dir, status="running", finished=None, error=None, **dict.fromkeys(outcome.results()),
                      resumed=resumed, **runs.process(), **runs.processes(str(device)))
    write_json(run_dir / "config.json", config.to_dict())  # --n_epochs or --early_stop may have changed
    runs.write_metrics(run_dir, state.history)  # a kill between checkpoint and metrics line: the checkpoint wins
    remove_temporaries(run_dir)  # left by a writer killed mid-write
    if state.position is not None:
        info(f"Resuming {run_dir} at batch {state.position.batches + 1} of epoch {state.epoch + 1}")
    else:
        info(f"Resuming {run_dir} after epoch {state.epoch}" if state.epoch else
             f"Resuming {run_dir} from the start (it stopped before completing an epoch)")
    return run_dir


def _images_of(aug, splits: Splits) -> dict:
    """What run.json records of how images were fed: the augmentation resolved from --augment and
    its knobs, and for image files their geometry and whether they were in memory or streamed."""
    record = {}
    if splits.is_image:
        record["augmentation"] = aug.to_dict()
    if splits.geometry is not None:
        record["images"] = {"size": list(splits.geometry.size), "channels": splits.geometry.channels,
                            "crop_pct": splits.geometry.crop_pct, "interpolation": splits.geometry.interpolation,
                            "placement": splits.placement}
    return record


def _image_transform(splits: Splits) -> dict:
    """How predict, serve, export and the API turn a photo into this model's input (model file meta):
    image files' evaluation transform (geometry.py), else the dataset's style (imaging.py)."""
    if splits.geometry is None:
        return {"image_style": splits.image_style}
    return {"image_style": "crop", "crop_pct": splits.geometry.crop_pct,
            "interpolation": splits.geometry.interpolation}


def output_flags(config: TrainConfig) -> list[str]:
    """The flags that say where this run writes besides its folder (--model_fn...), as given.

    A resumed run takes these only from its command line, never from the run folder (resume.py:
    the folder may come from elsewhere), so the command that continues a run must repeat them.
    """
    flags = []
    for name in sorted(fields_where(writes=True) - {"runs_dir", "run_name"}):  # the folder's path says these
        value = getattr(config, name)
        if value is not None:
            flags += [f"--{name}", str(value)]
    return flags


def _say_how_to_resume(run_dir: Path, config: TrainConfig, state: TrainState, exc: BaseException) -> None:
    cause = f" by {exc}" if isinstance(exc, interrupt.Interrupted) else ""
    kept = f"the checkpoint after epoch {state.epoch} is kept" if state.epoch else "no epoch had completed"
    if state.position is not None:
        kept = f"the checkpoint after batch {state.position.batches} of epoch {state.epoch + 1} is kept"
    command = shlex.join(["ptflow", "train", "--resume", str(run_dir), *output_flags(config)])
    if dist.is_distributed():  # the same processes continue it exactly
        command += (f" --nproc_per_node {dist.world_size()}" if dist.world_size() == dist.local_world_size()
                    else f" with the same {dist.world_size()} processes (torchrun flags)")
    info(f"Interrupted{cause}: {kept}. Continue with: {command}")


def _finish(config, splits, prep, args, state, preprocess, data, run_dir: Path, started: float,
            evaluate_test: bool = True) -> dict:
    """Calibrate on validation (--calibrate), judge on the test split (once, selecting nothing),
    then save the model, the test predictions and the plots."""
    arrange = precision.layout(config.channels_last)
    judged = outcome.judge(state.model, lambda x: state.model(arrange(preprocess(x))), data,
                           eval_batch_size(config.batch_size), config.precision, config.calibrate, evaluate_test)
    if judged.test_probs is not None:
        predictions.save(run_dir / predictions.FILE, splits.y_test, judged.test_probs,
                         splits.test_fingerprint(), splits.fingerprint)
    # The data is no longer needed: letting it go before matplotlib is imported for the plots
    # keeps the run's peak memory at its training peak (about 25 MB lower for MNIST).
    data.clear()
    splits.release()
    best = state.history[state.best_epoch - 1]
    from_ema = state.best_from == "ema"  # the saved weights are the EMA's: so is the accuracy shown
    metrics = {"best_epoch": state.best_epoch, "best_valid_loss": state.best_loss,
               "valid_acc": best["ema_valid_acc" if from_ema else "valid_acc"], "test_loss": None, "test_acc": None,
               "epochs_run": state.epoch, **judged.metrics, "seconds": round(time.time() - started, 2)}
    if state.ema is not None:
        metrics["best_weights_from"] = state.best_from
    meta = {"model": config.model, "model_args": args, "model_source": registry.source(config.model).to_dict(),
            "classes": splits.classes,
            "input_shape": list(splits.input_shape), "preprocessing": prep.to_dict(),
            **_image_transform(splits), "dataset": config.dataset,
            "data_fingerprint": splits.fingerprint, "config": config.to_dict(), "metrics": metrics,
            "versions": versions(), "run": str(run_dir)}
    if judged.temperature is not None:
        meta["temperature"] = judged.temperature
    if dist.is_main_process():  # the model file of a single-process run: plain weights, no DDP
        save_model(run_dir / "model.safetensors", state.model, meta)
        if config.model_fn:
            save_model(config.model_fn, state.model, meta, state.optimizer)
        plots.learning_curve({run_dir.name: state.history}, run_dir / "learning_curve.png")
        runs.write_status(run_dir, status="finished", finished=time.time(), **metrics)
    dist.barrier()  # no process reports success before the files are written
    if config.verbose >= 1:
        whose = {"ema": " (EMA weights)", "raw": " (raw weights, not the EMA)"}[state.best_from] if state.ema else ""
        info(f"Best epoch {state.best_epoch}{whose}: valid_loss={state.best_loss:.4e}  "
             f"valid_acc={metrics['valid_acc']:.4f}")
    for line in outcome.summary_lines(metrics):
        info(line)  # the result, printed even with --verbose 0
    if config.verbose >= 1:
        info(f"Saved {config.model_fn or run_dir / 'model.safetensors'} (run folder {run_dir})")
    return metrics
