"""Every training option in one place: its default, why, its help line and its role, validated once.

The CLI (or a config file, or `ptflow.train(...)`) fills a `TrainConfig`; everything below takes
plain values from it. Each field declares, beside its default, what kind of option it is, so no
other module keeps its own list of names:

- role "hyperparameter": what is trained. Sweeps may tune it, `--resume` may not change it,
  every worker of a shared study must agree on it, and `ptflow runs` shows it when runs differ.
- role "data": which examples train, validate and test. Never tuned (trials must be ranked on the
  same validation examples), fixed on resume, shared by a study, shown by `ptflow runs`.
- role "runtime": where and how a run executes and what it prints or writes. Never tuned, may
  differ between the workers of a study, hidden from `ptflow runs`' comparisons.
- resume=True: `--resume` may change it (how long to train, where files go, the device).
- exact=True: the numbers depend on it bit for bit (the thread count: matrix products split over
  another number of threads add in another order). `--resume` may change it, with a warning
  that the resumed run will no longer equal the same run left alone.
- writes=True: it names where files are written. A resumed run never takes these from the run
  folder's config (which may come from elsewhere): only from the flags given with --resume.

This module must stay free of heavy imports: `ptflow --help` reads the defaults and help here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from dataclasses import dataclass

from ptflow.errors import UsageError, shown
from ptflow.sizes import check_structure

HYPERPARAMETER, DATA, RUNTIME = "hyperparameter", "data", "runtime"

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "onecycle")
PRECISIONS = ("fp32", "bf16")
NORMALIZATIONS = ("none", "standard")
TRACKERS = ("tensorboard", "mlflow")

DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d{1,4})?")  # what --device accepts
MAX_GPU_ID = 9999  # --gpu_id, as cuda:N above
MAX_EPOCHS = 1_000_000  # larger values are typos (a run of a million epochs is already years)
MAX_DEPTH = 1_000  # entries of --hidden_sizes and --channels, and --n_layers
MAX_SEED = 2 ** 63 - 1  # torch and numpy both take seeds up to here
MAX_THREADS = 1024  # --num_threads: more than any one machine's cores; larger values are typos

# Examples per forward pass when evaluating and predicting. On CPU, 1024 rows of the article's MLP
# keep each layer's activations (2.5 MB) in the L2 cache: ~120k images/s here, against ~70k/s
# at 8192 rows, whose activations spill to memory.
EVAL_BATCH_SIZE = 1024

# Seconds one process of a multi-process job waits for the others in a collective before giving
# up with an error: a hung (not dead) peer must not hang the job. A dead peer is noticed at once
# (its sockets close). It must cover the longest stretch one process works alone while the others
# wait: the main process writing a checkpoint or the final model and plots.
DIST_TIMEOUT = 300


def option(default=None, *, help: str, group: str, role: str = HYPERPARAMETER, resume: bool = False,
           choices: tuple[str, ...] = (), metavar: str | None = None, factory=None, writes: bool = False,
           exact: bool = False):
    """A TrainConfig field with what the CLI, sweeps, resume and run history need to know about it."""
    metadata = {"help": help, "group": group, "role": role, "resume": resume, "choices": choices,
                "metavar": metavar, "writes": writes, "exact": exact}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    # --- data ---
    dataset: str = option(  # the article's data; never hard-coded: shapes and classes come from the data
        "mnist", group="data", role=DATA, metavar="NAME",
        help="a built-in dataset, csv:PATH, npz:PATH, folder:PATH, a plugin's name or PACKAGE.MODULE:FUNCTION")
    data_dir: str | None = option(  # searched first for dataset files (else $PTFLOW_DATA_DIR, then the cache)
        group="data", role=RUNTIME, resume=True, metavar="DIR",
        help="folder searched first for dataset files (also $PTFLOW_DATA_DIR)")
    target: str | None = option(  # None means the last column, the usual layout of a labelled CSV
        group="data", role=DATA, metavar="COLUMN", help="label column of a CSV, by name or index (default: the last)")
    train_ratio: float = option(  # the article's train/validation split of the training data
        0.8, group="data", role=DATA, help="share of the training data used for training; the rest validates")
    test_ratio: float = option(  # held out for testing, only where the dataset has no test split of its own
        0.2, group="data", role=DATA, help="share held out for testing where the dataset has no test split")
    normalize: str = option(  # "standard": mean/std fitted on the train split alone; pixels are always /255 first
        "none", group="data", choices=NORMALIZATIONS,
        help="standard: subtract the train split's mean, divide by its std")
    seed: int = option(  # same seed, same split and same numbers on CPU
        0, group="data", role=DATA, help="one seed for the split, initial weights and shuffling")
    augment_shift: int = option(  # 0 trains on the images as they are
        0, group="data", metavar="N", help="shift training images by up to N pixels at random")
    augment_flip: bool = option(  # off: a mirrored digit is no digit; on for clothes and objects
        False, group="data", help="mirror half the training images left to right, at random each epoch")
    # --- model ---
    model: str = option(  # mlp is the article's network; cnn a small convnet for images
        "mlp", group="model", metavar="NAME",
        help="a built-in network, a plugin's name, or PACKAGE.MODULE:NAME (a class or factory)")
    model_args: dict = option(  # JSON-able keyword arguments, stored in the model file to rebuild the model
        group="model", factory=dict, metavar="JSON",
        help="the model's keyword arguments as a JSON object, e.g. '{\"width\": 64}'")
    n_layers: int = option(  # the article's depth: hidden sizes shrink in equal steps from input to output
        5, group="model", help="mlp depth; hidden sizes shrink in equal steps")
    hidden_sizes: list[int] | None = option(  # explicit hidden sizes, overriding n_layers
        group="model", metavar="N,N,...", help="mlp hidden sizes, e.g. 500,400,300 (overrides --n_layers)")
    use_dropout: bool = option(  # the article regularises with BatchNorm unless dropout is asked for
        False, group="model", help="regularise the mlp with dropout instead of BatchNorm")
    dropout_p: float = option(0.3, group="model", help="dropout probability")  # the article's default
    channels: list[int] = option(  # cnn: one conv stage each; 28 -> 14 -> 7 -> 3 pixels
        group="model", factory=lambda: [16, 32, 64], metavar="N,N,...", help="cnn channels per conv stage")
    # --- optimisation ---
    batch_size: int = option(256, group="optimisation", help="examples per step")  # the article's
    n_epochs: int = option(  # the article's epoch count; the best epoch by validation loss is kept
        20, group="optimisation", resume=True, help="passes over the training data")
    optimizer: str = option(  # the article uses Adam with its default learning rate
        "adam", group="optimisation", choices=OPTIMIZERS, help="update rule")
    lr: float = option(1e-3, group="optimisation", help="learning rate (peak rate for onecycle)")  # Adam's default
    weight_decay: float = option(  # off, as in the article
        0.0, group="optimisation", help="L2 penalty (decoupled for adamw)")
    scheduler: str = option(  # over the whole run, stepped per batch
        "none", group="optimisation", choices=SCHEDULERS, help="learning-rate schedule")
    early_stop: int = option(  # 0 never stops early
        0, group="optimisation", resume=True, metavar="PATIENCE",
        help="stop after this many epochs without a better validation loss (0: never)")
    # --- validation and calibration ---
    folds: int = option(  # 0: one train/validation split, the article's; K: K-fold cross-validation first
        0, group="validation and calibration", role=DATA, metavar="K",
        help="cross-validate first: train K models, each validated on a different stratified Kth of the "
             "training data, report their mean and std, then train the final model as the other flags say")
    fold: int | None = option(  # set on each fold's own run; a user may retrain one fold with it
        group="validation and calibration", role=DATA, metavar="I",
        help="with --folds K: train only fold I (1..K), validated on that fold")
    calibrate: bool = option(  # off: probabilities as the network gives them
        False, group="validation and calibration", resume=True,
        help="fit a softmax temperature on the validation split (never the test split); predict, serve "
             "and export apply it")
    # --- hardware ---
    device: str = option(  # auto picks cuda, then mps, then cpu
        "auto", group="hardware", role=RUNTIME, resume=True, help="auto, cpu, cuda, cuda:N or mps")
    gpu_id: int | None = option(  # the article's flag
        group="hardware", role=RUNTIME, resume=True,
        help="the article's flag: -1 for CPU, N for cuda:N (overrides --device)")
    num_threads: int | None = option(  # None: torch's default; the run records the count it used
        group="hardware", role=RUNTIME, resume=True, exact=True, metavar="N",
        help="CPU threads per process for matrix products (default: torch's, from OMP_NUM_THREADS or the cores); "
             "recorded in the run, and bit-exact resume needs the same count")
    precision: str = option(  # bf16 matmuls need AMX on CPUs or tensor cores on GPUs to pay
        "fp32", group="hardware", choices=PRECISIONS, help="bf16 runs matmuls under autocast")
    compile: bool = option(  # slower start, sometimes faster epochs: how it runs, not what is trained
        False, group="hardware", role=RUNTIME, help="torch.compile the model")
    sync_bn: bool = option(  # several processes: BatchNorm over the global batch, not each process's slice
        False, group="hardware",
        help="with several processes on GPUs: BatchNorm statistics over the global batch (SyncBatchNorm)")
    # --- output ---
    model_fn: str | None = option(  # .pth gives the article's layout
        group="output", role=RUNTIME, resume=True, metavar="FILE", writes=True,
        help="also write the model file here (.pth: the article's layout)")
    runs_dir: str = option(  # every run gets a folder here with its config, metrics, model and plots
        "runs", group="output", role=RUNTIME, metavar="DIR", writes=True, help="folder of run folders")
    run_name: str | None = option(  # default: a timestamp with dataset and model
        group="output", role=RUNTIME, writes=True, help="name of this run's folder (default: timestamp-dataset-model)")
    verbose: int = option(  # as in the article
        1, group="output", role=RUNTIME, resume=True, choices=(0, 1, 2),
        help="0 quiet, 1 a line per epoch, 2 a line per iteration")
    # --- tracking (optional extras; nothing is sent anywhere unless asked) ---
    log: list[str] = option(  # the run folder is written either way
        group="tracking (optional extras)", role=RUNTIME, resume=True, factory=list, metavar="NAME,...",
        help="also log to tensorboard and/or mlflow, e.g. tensorboard,mlflow")
    mlflow_uri: str | None = option(  # default: SQLite in runs_dir, nothing leaves the machine
        group="tracking (optional extras)", role=RUNTIME, resume=True, metavar="URI", writes=True,
        help="MLflow tracking server (default: sqlite:///RUNS_DIR/mlflow.db)")

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Build and validate a config; unknown keys are errors, not silently ignored."""
        unknown = sorted(set(values) - set(names()))
        if unknown:
            raise UsageError(f"unknown config key(s): {', '.join(unknown)}")
        config = cls(**values)
        config.validate()
        return config

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        for field in dataclasses.fields(self):  # from Python (ptflow.train) values arrive untyped
            _check_type(field.name, getattr(self, field.name))
        for name in ("train_ratio", "test_ratio", "dropout_p", "lr", "weight_decay"):
            _check(math.isfinite(getattr(self, name)), f"--{name} must be a finite number, got {getattr(self, name)!r}")
        _check(self.n_layers >= 1, f"--n_layers must be >= 1, got {self.n_layers}")
        _check(self.n_layers <= MAX_DEPTH, f"--n_layers must be <= {MAX_DEPTH}, got {self.n_layers}")
        _check(0 <= self.seed <= MAX_SEED, f"--seed must be in 0..{MAX_SEED}, got {self.seed}")
        _check(0 <= self.dropout_p < 1, f"--dropout_p must be in [0, 1), got {self.dropout_p}")
        _check(0 < self.train_ratio < 1, f"--train_ratio must be in (0, 1), got {self.train_ratio}")
        _check(0 < self.test_ratio < 1, f"--test_ratio must be in (0, 1), got {self.test_ratio}")
        _check(self.batch_size >= 1, f"--batch_size must be >= 1, got {self.batch_size}")
        batch_norm = self.model == "cnn" or (self.model == "mlp" and not self.use_dropout)
        _check(self.batch_size >= 2 or not batch_norm,
               "--batch_size 1 cannot train BatchNorm layers (the cnn, or the mlp without --use_dropout): use >= 2")
        _check(self.n_epochs >= 1, f"--n_epochs must be >= 1, got {self.n_epochs}")
        _check(self.n_epochs <= MAX_EPOCHS, f"--n_epochs must be <= {MAX_EPOCHS:,}, got {self.n_epochs}")
        _check(self.lr > 0, f"--lr must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, f"--weight_decay must be >= 0, got {self.weight_decay}")
        _check(self.early_stop >= 0, f"--early_stop must be >= 0, got {self.early_stop}")
        _check(self.folds == 0 or self.folds >= 2, f"--folds must be 0 (off) or >= 2, got {self.folds}")
        _check(self.fold is None or 1 <= self.fold <= self.folds,
               f"--fold must be in 1..--folds ({self.folds}), got {self.fold}" if self.folds else
               "--fold needs --folds K")
        _check(0 <= self.augment_shift <= 8, f"--augment_shift must be in 0..8, got {self.augment_shift}")
        for name in ("hidden_sizes", "channels"):
            sizes = getattr(self, name)
            _check(sizes is None or (0 < len(sizes) <= MAX_DEPTH and min(sizes) >= 1),
                   f"--{name} must be 1 to {MAX_DEPTH} positive integers, got {shown(sizes)}")
        _check(self.gpu_id is None or -1 <= self.gpu_id <= MAX_GPU_ID,
               f"--gpu_id must be -1 or a GPU index, got {self.gpu_id}")
        check_threads(self.num_threads)
        _check(DEVICE.fullmatch(self.device) is not None,
               f"--device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        check_structure(self.model_args, "--model_args")
        _check(_is_json(self.model_args), "--model_args must hold JSON values only (numbers, strings, lists...)")
        _check(bool(self.model.strip()), "--model must name a model")
        _check(bool(self.dataset.strip()), "--dataset must name a dataset")
        for field in dataclasses.fields(self):
            if field.metadata["choices"]:
                _check_choice(field.name, getattr(self, field.name), field.metadata["choices"])
        _check(self.run_name is None or _is_file_name(self.run_name),
               f"--run_name must be a folder name, not a path, got {self.run_name!r}")
        for name in self.log:
            _check_choice("log", name, TRACKERS)
        _check(len(set(self.log)) == len(self.log), f"--log names a tracker twice: {','.join(self.log)}")
        _check(self.mlflow_uri is None or "mlflow" in self.log, "--mlflow_uri is used only with --log mlflow")

    def device_name(self) -> str:
        """The device asked for, with the article's --gpu_id taking precedence over --device."""
        if self.gpu_id is None:
            return self.device
        return "cpu" if self.gpu_id < 0 else f"cuda:{self.gpu_id}"


def names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def help_of(name: str) -> str:
    return next(f.metadata["help"] for f in dataclasses.fields(TrainConfig) if f.name == name)


def fields_where(role: str | None = None, resume: bool | None = None, writes: bool | None = None,
                 exact: bool | None = None) -> set[str]:
    """The fields of a role, and/or those --resume may (resume=True) or may not change, and/or
    those that name where files are written (writes=True), and/or those the numbers depend on
    bit for bit although --resume may change them (exact=True)."""
    wanted = {"role": role, "resume": resume, "writes": writes, "exact": exact}
    return {f.name for f in dataclasses.fields(TrainConfig)
            if all(value is None or f.metadata[key] == value for key, value in wanted.items())}


@functools.cache
def _hints() -> dict:
    """The fields' annotations, evaluated once: the parser asks for each field's type, twice."""
    return typing.get_type_hints(TrainConfig)


def field_type(name: str) -> tuple[typing.Any, bool]:
    """A TrainConfig field's value type with Optional unwrapped (list[int] stays list[int]), and
    whether None is allowed: for config files and sweep specs, which read values from text."""
    hint = _hints()[name]
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = typing.get_args(hint) if union else (hint,)
    return next(t for t in options if t is not type(None)), type(None) in options


def _check_type(name: str, value) -> None:
    """Values of the field's declared type (from a config file or Python, flags are typed already)."""
    kind, optional = field_type(name)
    if value is None:
        _check(optional, f"--{name} needs a value")
        return
    if typing.get_origin(kind) is list:
        item = typing.get_args(kind)[0]
        ok = isinstance(value, list) and all(_is_type(v, item) for v in value)
    else:
        ok = _is_type(value, kind)
    _check(ok, f"--{name} must be {describe_type(kind)}, got {shown(value)}")
    if isinstance(value, str) or (isinstance(value, list) and value and isinstance(value[0], str)):
        _check(all("\0" not in v for v in ([value] if isinstance(value, str) else value)),
               f"--{name} contains a NUL character")


def describe_type(kind) -> str:
    """A field type in words, for errors about values read from files and flags."""
    if typing.get_origin(kind) is list:
        return {int: "a list of integers", str: "a list of strings"}.get(typing.get_args(kind)[0], str(kind))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            dict: "a mapping (or its JSON text)"}.get(kind, str(kind))


def _is_type(value, kind) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _is_file_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0") and len(name) <= 255


def _is_json(value) -> bool:
    import json

    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def check_threads(count: int | None) -> None:
    """--num_threads, of train and of the commands that run a model (evaluate, predict, report)."""
    _check(count is None or 1 <= count <= MAX_THREADS, f"--num_threads must be in 1..{MAX_THREADS}, got {count}")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UsageError(message)


def _check_choice(name: str, value, choices: tuple) -> None:
    _check(value in choices, f"--{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


# Tuned recipes for MNIST-like images (`--preset NAME`); bench/recipes.py measures them.
PRESETS = {
    "fast": {"about": ">= 99% on MNIST in seconds on a CPU",
             "model": "cnn", "channels": [16, 32, 64], "batch_size": 128, "optimizer": "adam", "lr": 0.01,
             "scheduler": "onecycle", "n_epochs": 2},
    # The article's MLP (n_layers 5, BatchNorm), tuned by `ptflow sweep` on validation loss (bench/RESULTS.md)
    "mlp": {"about": "the article's MLP at >= 98.6% on MNIST (99.15% in the sweep)",
            "model": "mlp", "n_layers": 5, "use_dropout": False, "batch_size": 256, "optimizer": "adamw",
            "lr": 0.0029, "weight_decay": 0.065, "scheduler": "cosine", "n_epochs": 30, "augment_shift": 2},
    "accurate": {"about": ">= 99.5% on MNIST in about a minute on a CPU",
                 "model": "cnn", "channels": [16, 32, 64], "batch_size": 128, "optimizer": "adamw", "lr": 0.01,
                 "weight_decay": 0.05, "scheduler": "onecycle", "n_epochs": 12, "augment_shift": 2},
}


def preset_values(name: str | None) -> dict:
    if name is None:
        return {}
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; expected one of {', '.join(sorted(PRESETS))}")
    return {k: v for k, v in PRESETS[name].items() if k != "about"}
