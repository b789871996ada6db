"""Every training hyperparameter in one place, validated once.

The CLI (or a config file) fills a `TrainConfig`; everything below the CLI takes plain values
from it. This module must stay free of heavy imports: `ptflow --help` reads the defaults here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field

from ptflow.errors import UsageError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "onecycle")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16")
NORMALIZATIONS = ("none", "standard")

# Examples per forward pass when evaluating and predicting. On CPU, 1024 rows of the article's MLP
# keep each layer's activations (2.5 MB) in the L2 cache: ~120k images/s here, against ~70k/s
# at 8192 rows, whose activations spill to memory.
EVAL_BATCH_SIZE = 1024
TRACKERS = ("tensorboard", "mlflow")


@dataclass
class TrainConfig:
    # --- data ---
    dataset: str = "mnist"  # the article's data; or fashion-mnist, kmnist, digits, csv:PATH, npz:PATH, folder:PATH
    data_dir: str | None = None  # searched first for dataset files (else $PTFLOW_DATA_DIR, then the cache)
    target: str | None = None  # label column of a CSV, by name or 0-based index; None means the last column
    train_ratio: float = 0.8  # the article's train/validation split of the training data
    test_ratio: float = 0.2  # held out for testing, only where the dataset has no test split of its own
    normalize: str = "none"  # "standard": mean/std fitted on the train split alone; pixels are always /255 first
    seed: int = 0  # drives the split, the initial weights and the shuffling: same seed, same numbers on CPU
    # --- model ---
    model: str = "mlp"  # mlp is the article's network; cnn is a small convnet for images
    n_layers: int = 5  # the article's depth: hidden sizes shrink in equal steps from input to output
    hidden_sizes: list[int] | None = None  # explicit hidden sizes, overriding n_layers
    use_dropout: bool = False  # the article regularises with BatchNorm unless dropout is asked for
    dropout_p: float = 0.3  # the article's default dropout probability
    channels: list[int] = field(default_factory=lambda: [16, 32, 64])  # cnn: one conv stage each; 28->14->7->3 px
    augment_shift: int = 0  # shift training images by up to N pixels at random; 0 trains on them as they are
    # --- optimisation ---
    batch_size: int = 256  # the article's batch size
    n_epochs: int = 20  # the article's epoch count; the best epoch by validation loss is kept
    optimizer: str = "adam"  # the article uses Adam with its default learning rate
    lr: float = 1e-3  # Adam's default, as in the article
    weight_decay: float = 0.0  # off, as in the article
    scheduler: str = "none"  # learning-rate schedule over the whole run: none, cosine or onecycle
    early_stop: int = 0  # stop after this many epochs without a better validation loss; 0 never stops
    # --- hardware ---
    device: str = "auto"  # auto picks cuda, then mps, then cpu
    gpu_id: int | None = None  # the article's flag: -1 for CPU, N for cuda:N; overrides --device
    precision: str = "fp32"  # bf16 runs matmuls under autocast (AMX on recent CPUs, tensor cores on GPUs)
    compile: bool = False  # torch.compile the model: slower start, sometimes faster epochs
    # --- output ---
    model_fn: str | None = None  # where to write the model file as well as the run folder (.pth: the article's layout)
    runs_dir: str = "runs"  # every run gets a folder here with its config, metrics, model and plots
    run_name: str | None = None  # the run folder's name; default: a timestamp with dataset and model
    verbose: int = 1  # 0 quiet, 1 one line per epoch, 2 one line per iteration (as in the article)
    # --- tracking (optional extras; nothing is sent anywhere unless asked) ---
    log: list[str] = field(default_factory=list)  # also log to tensorboard and/or mlflow (run folder: always)
    mlflow_uri: str | None = None  # MLflow server; default: SQLite in runs_dir, nothing leaves the machine

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Build and validate a config; unknown keys are errors, not silently ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"unknown config key(s): {', '.join(unknown)}")
        config = cls(**values)
        config.validate()
        return config

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        _check(self.n_layers >= 1, f"--n_layers must be >= 1, got {self.n_layers}")
        _check(0 <= self.dropout_p < 1, f"--dropout_p must be in [0, 1), got {self.dropout_p}")
        _check(0 < self.train_ratio < 1, f"--train_ratio must be in (0, 1), got {self.train_ratio}")
        _check(0 < self.test_ratio < 1, f"--test_ratio must be in (0, 1), got {self.test_ratio}")
        _check(self.batch_size >= 1, f"--batch_size must be >= 1, got {self.batch_size}")
        batch_norm = self.model == "cnn" or not self.use_dropout  # the mlp swaps BatchNorm for dropout
        _check(self.batch_size >= 2 or not batch_norm,
               "--batch_size 1 cannot train BatchNorm layers (the cnn, or the mlp without --use_dropout): use >= 2")
        _check(self.n_epochs >= 1, f"--n_epochs must be >= 1, got {self.n_epochs}")
        _check(self.lr > 0, f"--lr must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, f"--weight_decay must be >= 0, got {self.weight_decay}")
        _check(self.early_stop >= 0, f"--early_stop must be >= 0, got {self.early_stop}")
        _check(0 <= self.augment_shift <= 8, f"--augment_shift must be in 0..8, got {self.augment_shift}")
        _check(self.verbose in (0, 1, 2), f"--verbose must be 0, 1 or 2, got {self.verbose}")
        _check(self.hidden_sizes is None or (len(self.hidden_sizes) > 0 and min(self.hidden_sizes) >= 1),
               f"--hidden_sizes must be positive integers, got {self.hidden_sizes}")
        _check(len(self.channels) > 0 and min(self.channels) >= 1,
               f"--channels must be positive integers, got {self.channels}")
        _check(self.gpu_id is None or self.gpu_id >= -1, f"--gpu_id must be -1 or a GPU index, got {self.gpu_id}")
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("scheduler", self.scheduler, SCHEDULERS)
        _check_choice("device", self.device.split(":")[0], DEVICES)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("normalize", self.normalize, NORMALIZATIONS)
        for name in self.log:
            _check_choice("log", name, TRACKERS)
        _check(len(set(self.log)) == len(self.log), f"--log names a tracker twice: {','.join(self.log)}")
        _check(self.mlflow_uri is None or "mlflow" in self.log, "--mlflow_uri is used only with --log mlflow")

    def device_name(self) -> str:
        """The device asked for, with the article's --gpu_id taking precedence over --device."""
        if self.gpu_id is None:
            return self.device
        return "cpu" if self.gpu_id < 0 else f"cuda:{self.gpu_id}"


def field_type(name: str) -> tuple[typing.Any, bool]:
    """A TrainConfig field's value type with Optional unwrapped (list[int] stays list[int]), and
    whether None is allowed: for config files and sweep specs, which read values from text."""
    hint = typing.get_type_hints(TrainConfig)[name]
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = typing.get_args(hint) if union else (hint,)
    return next(t for t in options if t is not type(None)), type(None) in options


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UsageError(message)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    _check(value in choices, f"--{name} must be one of {', '.join(choices)}, got {value!r}")


# Tuned recipes for MNIST-like images (`--preset NAME`); bench/recipes.py measures them.
PRESETS = {
    "fast": {"about": ">= 99% on MNIST in seconds on a CPU",
             "model": "cnn", "channels": [16, 32, 64], "batch_size": 128, "optimizer": "adam", "lr": 0.01,
             "scheduler": "onecycle", "n_epochs": 2},
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

