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

The model group's fields are the options of the built-in networks (models/registry.py): each
network names the ones it reads and its needs (BatchNorm, images), so the rule on one-example
batches asks the network, and the names listed in help come from the model and dataset registries.
Constants live in constants.py, recipes in presets.py, value checking in checks.py.

This module must stay free of heavy imports: `ptflow --help` reads the defaults and help here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import dataclass

from ptflow.checks import (
    check,
    check_choice,
    check_threads,
    check_type,
    describe_type,
    is_file_name,
    is_json,
    value_type,
)
from ptflow.constants import (
    CLASS_WEIGHTS,
    DEVICE,
    DIST_TIMEOUT,
    EVAL_BATCH_SIZE,
    MAX_DEPTH,
    MAX_EPOCHS,
    MAX_GPU_ID,
    MAX_SEED,
    MAX_THREADS,
    NORMALIZATIONS,
    OPTIMIZERS,
    PRECISIONS,
    SAMPLERS,
    SCHEDULERS,
    TRACKERS,
)
from ptflow.data.bad_images import POLICIES as BAD_IMAGE_POLICIES
from ptflow.data.geometry import INTERPOLATIONS
from ptflow.data.placement import MODES as DATA_PLACEMENTS
from ptflow.data.transforms import AUGMENT, AUTO_AUGMENT
from ptflow.errors import UsageError, shown
from ptflow.presets import PRESETS, preset_values
from ptflow.sizes import check_structure

# What other modules import from here; the constants, presets and checks are re-exported from
# their own modules (constants.py, presets.py, checks.py), where they were split off to.
__all__ = ["TrainConfig", "option", "names", "help_of", "help_text", "fields_where", "field_type", "HYPERPARAMETER",
           "DATA", "RUNTIME", "DEVICE", "DIST_TIMEOUT", "EVAL_BATCH_SIZE", "MAX_GPU_ID", "MAX_SEED", "MAX_THREADS",
           "PRESETS", "preset_values", "check_threads", "describe_type"]

HYPERPARAMETER, DATA, RUNTIME = "hyperparameter", "data", "runtime"
MAX_IMAGE_SIZE = 4096  # --image_size: a 4096 x 4096 x 3 input is 48 MiB per example already
MAX_WORKERS = 64  # --num_workers: decoding processes per training process


def option(default=None, *, help, group: str, role: str = HYPERPARAMETER, resume: bool = False,
           choices: tuple[str, ...] = (), metavar: str | None = None, factory=None, writes: bool = False,
           exact: bool = False):
    """A TrainConfig field with what the CLI, sweeps, resume and run history need to know about it."""
    # help: a str, or a function making it (help that lists the registries' names: see help_text)
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
        help=lambda: _names_help("dataset"))
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
    bad_images: str = option(  # fail: a broken file is the user's to fix or remove, knowingly, never dropped unseen
        "fail", group="data", role=DATA, choices=BAD_IMAGE_POLICIES,
        help="an image file of a folder: dataset that cannot be read (damaged, empty, not an image, another format, "
             "too many pixels): fail stops with its name and why; skip leaves it out, lists it in the run folder's "
             "bad_images.jsonl and counts it in run.json and `ptflow runs`")
    max_bad_fraction: float = option(  # 1%: a few broken files in a scraped photo folder is normal; more is a
        # systematic fault (a failed copy, a truncated download, the wrong folder) that training would hide
        0.01, group="data", role=DATA, metavar="SHARE",
        help="with --bad_images skip: stop when more than this share of the image files cannot be read "
             "(0: stop at the first)")
    image_size: int | None = option(  # None: the images' own size where they share one, else geometry.py's choice
        group="data", metavar="N",
        help="image files (folder:, shards:) become N x N pixels (default: their own size where all share one, "
             "else their typical shorter side, at most 224)")
    crop_pct: float | None = option(  # timm's name and meaning: the centre crop keeps this share of the image
        group="data", metavar="SHARE",
        help="image files are scaled so that the centre crop of --image_size keeps this share of them "
             "(default: 1 where all share one size, else 0.875); the model file keeps it for predict and serve")
    interpolation: str | None = option(  # None: a timm model's own (timm_models.py), else bilinear (geometry.py)
        group="data", metavar="FILTER",
        help=f"the filter images are resized with, one of {', '.join(INTERPOLATIONS)}, in training and in the "
             f"evaluation transform the model file keeps (default: a timm model's own where it is one of them, "
             f"else bilinear)")
    data_in_memory: str = option(  # auto: the fast path whenever the decoded dataset fits in half the memory left
        "auto", group="data", role=RUNTIME, resume=True, choices=DATA_PLACEMENTS,
        help="image files: decode them all into memory (yes), stream them from disk in worker processes (no), "
             "or choose from their decoded size and the memory available (auto)")
    augment_shift: int = option(  # 0 trains on the images as they are
        0, group="data", metavar="N", help="shift training images by up to N pixels at random")
    augment_flip: bool = option(  # off: a mirrored digit is no digit; on for clothes and objects
        False, group="data", help="mirror half the training images left to right, at random each epoch")
    # --- augmentation of photos (data/transforms.py: the presets, torchvision.transforms.v2); None: the preset's ---
    augment: str = option(  # none: training sees the images as evaluation does; the knobs below override a preset
        "none", group="data", choices=AUGMENT,
        help="augmentation preset: light (random resized crop, flip where the data allows), standard (+ "
             "TrivialAugment, label smoothing 0.1), strong (RandAugment instead, + random erasing 0.25, "
             "mixup 0.2, cutmix 1.0)")
    auto_augment: str | None = option(  # choices checked in validate: None (the preset's) is no flag value
        group="data", metavar="POLICY",
        help=f"automatic augmentation policy, one of {', '.join(AUTO_AUGMENT)} (default: the --augment preset's)")
    random_erasing: float | None = option(  # timm's --reprob
        group="data", metavar="P", help="probability of erasing a random rectangle of a training image "
                                        "(default: the --augment preset's)")
    mixup: float | None = option(  # alpha of Beta(alpha, alpha); timm's --mixup
        group="data", metavar="ALPHA", help="mixup's alpha, 0 off (default: the --augment preset's)")
    cutmix: float | None = option(  # alpha of Beta(alpha, alpha); with mixup, one of them per batch
        group="data", metavar="ALPHA", help="cutmix's alpha, 0 off (default: the --augment preset's)")
    label_smoothing: float | None = option(  # timm's --smoothing; validation and test losses stay unsmoothed
        group="data", metavar="EPS", help="label smoothing of the training loss (default: the --augment preset's)")
    sampler: str = option(  # random: each example once per epoch, as the article; balanced for rare classes
        "random", group="data", choices=SAMPLERS,
        help="balanced: each epoch draws as many training examples as the split has, with replacement, "
             "every class about equally often (training/imbalance.py)")
    # --- model: the built-in networks' options (models/registry.py: each network names those it reads) ---
    model: str = option(  # mlp is the article's network; cnn a small convnet for images
        "mlp", group="model", metavar="NAME",
        help=lambda: _names_help("model"))
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
    pretrained: bool = option(  # off: from scratch, as the article; the weights come from timm's hub (a network)
        False, group="model", help="start a timm:NAME model from its pretrained weights on timm's hub (offline: "
                                   "use --pretrained_path)")
    pretrained_path: str | None = option(  # loaded by models/pretrained.py's rules; the file is read, never unpickled
        group="model", metavar="FILE",
        help="start from the weights in FILE (safetensors or a weights-only .pth state dict): tensors of the same "
             "name and shape are loaded, a classifier head of another class count is re-initialised, a first conv "
             "of other input channels adapted")
    # --- optimisation ---
    batch_size: int = option(256, group="optimisation", help="examples per step")  # the article's
    n_epochs: int = option(  # the article's epoch count; the best epoch by validation loss is kept
        20, group="optimisation", resume=True, help="passes over the training data")
    optimizer: str = option(  # the article uses Adam with its default learning rate
        "adam", group="optimisation", choices=OPTIMIZERS, help="update rule")
    lr: float = option(1e-3, group="optimisation", help="learning rate (peak rate for onecycle)")  # Adam's default
    weight_decay: float = option(  # off, as in the article
        0.0, group="optimisation", help="L2 penalty (decoupled for adamw)")
    class_weights: str = option(  # none: every example counts alike, as in the article
        "none", group="optimisation", choices=CLASS_WEIGHTS,
        help="balanced: weigh each training example's loss by n / (classes * its class's count), counted on "
             "the training split; validation and test losses stay unweighted")
    scheduler: str = option(  # over the whole run, stepped per batch
        "none", group="optimisation", choices=SCHEDULERS, help="learning-rate schedule")
    early_stop: int = option(  # 0 never stops early
        0, group="optimisation", resume=True, metavar="PATIENCE",
        help="stop after this many epochs without a better validation loss (0: never)")
    # --- fine-tuning (training/finetune.py): any model; the head is get_classifier() or the last nn.Linear ---
    warmup_epochs: int = option(  # 0: the schedule starts at once, as before
        0, group="fine-tuning", metavar="N",
        help="raise the learning rate linearly over the first N epochs' steps, then follow --scheduler")
    head_lr_mult: float = option(  # 1: one learning rate; a new head often learns faster than a pretrained body
        1.0, group="fine-tuning", metavar="X",
        help="the classifier head's learning rate is --lr times X (a second parameter group; schedules scale both)")
    layer_decay: float = option(  # 1: off; BEiT and timm fine-tune ViTs with 0.65-0.75, convnets with 0.7-0.9
        1.0, group="fine-tuning", metavar="RATE",
        help="layer-wise learning-rate decay: each layer trains at --lr times RATE to the power of its distance "
             "from the head, in the layer order of timm's group_matcher (timm models; the built-in networks "
             "have none: use --head_lr_mult); the head keeps --lr (times --head_lr_mult). 1: off")
    freeze_backbone_epochs: int = option(  # 0: everything trains from the start
        0, group="fine-tuning", metavar="N",
        help="train only the classifier head for the first N epochs (the rest, BatchNorm statistics included, "
             "stays exactly as it was), then everything")
    ema: float = option(  # 0: off; 0.999 or 0.9999 are usual for long runs, less for a few hundred steps
        0.0, group="fine-tuning", metavar="DECAY",
        help="keep an exponential moving average of the weights, updated every step and validated each epoch "
             "beside them; the better of the two by validation loss is saved, and the run says which (0: off)")
    drop_path: float = option(  # 0: off; timm's networks take it as drop_path_rate
        0.0, group="fine-tuning", metavar="RATE",
        help="stochastic depth rate, passed to the model as drop_path_rate (timm models; the built-in networks "
             "have none)")
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
    num_workers: int | None = option(  # None: the cores left beside training, up to 8 (data/streaming.py)
        group="hardware", role=RUNTIME, resume=True, metavar="N",
        help="processes decoding streamed images for each training process (0: in the training process; "
             "default: the cores left, at most 8); any count trains the same model")
    precision: str = option(  # bf16 matmuls need AMX on CPUs or tensor cores on GPUs to pay; fp16 pays on GPUs only
        "fp32", group="hardware", choices=PRECISIONS,
        help="bf16: forward passes under autocast to bfloat16 (GPUs, CPUs with AMX or AVX512-BF16); fp16: autocast "
             "to float16 with a gradient scaler (CUDA only)")
    channels_last: bool = option(  # off: torch's NCHW (image models on a CPU get channels_last weights anyway)
        False, group="hardware", role=RUNTIME,
        help="image data: the model's convolution weights and every batch in channels_last (NHWC) memory order, "
             "which tensor cores convolve fastest; the numbers differ only by float rounding")
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
            check_type(field.name, getattr(self, field.name), *field_type(field.name))
        for name in ("train_ratio", "test_ratio", "dropout_p", "lr", "weight_decay", "max_bad_fraction"):
            check(math.isfinite(getattr(self, name)), f"--{name} must be a finite number, got {getattr(self, name)!r}")
        check(self.n_layers >= 1, f"--n_layers must be >= 1, got {self.n_layers}")
        check(self.n_layers <= MAX_DEPTH, f"--n_layers must be <= {MAX_DEPTH}, got {self.n_layers}")
        check(0 <= self.seed <= MAX_SEED, f"--seed must be in 0..{MAX_SEED}, got {self.seed}")
        check(0 <= self.dropout_p < 1, f"--dropout_p must be in [0, 1), got {self.dropout_p}")
        check(0 < self.train_ratio < 1, f"--train_ratio must be in (0, 1), got {self.train_ratio}")
        check(0 < self.test_ratio < 1, f"--test_ratio must be in (0, 1), got {self.test_ratio}")
        check(self.batch_size >= 1, f"--batch_size must be >= 1, got {self.batch_size}")
        if self.batch_size < 2:  # asked only then: a network's declaration sits beside its code, which imports torch
            from ptflow.models import registry as models

            check(not models.uses_batch_norm(self.model, self.to_dict()),
                  f"--batch_size 1 cannot train BatchNorm layers ({models.batch_norm_note(self.model)}): use >= 2")
        check(self.n_epochs >= 1, f"--n_epochs must be >= 1, got {self.n_epochs}")
        check(self.n_epochs <= MAX_EPOCHS, f"--n_epochs must be <= {MAX_EPOCHS:,}, got {self.n_epochs}")
        check(self.lr > 0, f"--lr must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, f"--weight_decay must be >= 0, got {self.weight_decay}")
        check(self.early_stop >= 0, f"--early_stop must be >= 0, got {self.early_stop}")
        self._validate_finetuning()
        check(self.folds == 0 or self.folds >= 2, f"--folds must be 0 (off) or >= 2, got {self.folds}")
        check(self.fold is None or 1 <= self.fold <= self.folds,
               f"--fold must be in 1..--folds ({self.folds}), got {self.fold}" if self.folds else
               "--fold needs --folds K")
        check(0 <= self.max_bad_fraction <= 1, f"--max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")
        check(self.image_size is None or 1 <= self.image_size <= MAX_IMAGE_SIZE,
              f"--image_size must be in 1..{MAX_IMAGE_SIZE}, got {self.image_size}")
        check(self.crop_pct is None or 0.05 <= self.crop_pct <= 1,
              f"--crop_pct must be in [0.05, 1], got {self.crop_pct}")
        check(self.interpolation is None or self.interpolation in INTERPOLATIONS,
              f"--interpolation must be one of {', '.join(INTERPOLATIONS)}, got {shown(self.interpolation)}")
        check(self.num_workers is None or 0 <= self.num_workers <= MAX_WORKERS,
              f"--num_workers must be in 0..{MAX_WORKERS}, got {self.num_workers}")
        check(0 <= self.augment_shift <= 8, f"--augment_shift must be in 0..8, got {self.augment_shift}")
        check(self.auto_augment is None or self.auto_augment in AUTO_AUGMENT,
              f"--auto_augment must be one of {', '.join(AUTO_AUGMENT)}, got {shown(self.auto_augment)}")
        # NaN fails every comparison, so each check below refuses it too
        check(self.random_erasing is None or 0 <= self.random_erasing <= 1,
              f"--random_erasing must be in [0, 1], got {self.random_erasing!r}")
        for name in ("mixup", "cutmix"):
            check(getattr(self, name) is None or 0 <= getattr(self, name) < math.inf,
                  f"--{name} must be a finite alpha >= 0 (0: off), got {getattr(self, name)!r}")
        check(self.label_smoothing is None or 0 <= self.label_smoothing < 1,
              f"--label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        for name in ("hidden_sizes", "channels"):
            sizes = getattr(self, name)
            check(sizes is None or (0 < len(sizes) <= MAX_DEPTH and min(sizes) >= 1),
                   f"--{name} must be 1 to {MAX_DEPTH} positive integers, got {shown(sizes)}")
        check(self.gpu_id is None or -1 <= self.gpu_id <= MAX_GPU_ID,
               f"--gpu_id must be -1 or a GPU index, got {self.gpu_id}")
        check_threads(self.num_threads)
        check(DEVICE.fullmatch(self.device) is not None,
               f"--device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        check_structure(self.model_args, "--model_args")
        check(is_json(self.model_args), "--model_args must hold JSON values only (numbers, strings, lists...)")
        check(bool(self.model.strip()), "--model must name a model")
        check(not (self.pretrained and self.pretrained_path), "--pretrained and --pretrained_path both name "
                                                              "starting weights: give one")
        check(not self.pretrained or self.model.startswith("timm:"), "--pretrained takes weights from timm's hub: "
              f"it needs --model timm:NAME, not {self.model!r} (--pretrained_path FILE loads weights into any model)")
        check(bool(self.dataset.strip()), "--dataset must name a dataset")
        for field in dataclasses.fields(self):
            if field.metadata["choices"]:
                check_choice(field.name, getattr(self, field.name), field.metadata["choices"])
        check(self.run_name is None or is_file_name(self.run_name),
               f"--run_name must be a folder name, not a path, got {self.run_name!r}")
        for name in self.log:
            check_choice("log", name, TRACKERS)
        check(len(set(self.log)) == len(self.log), f"--log names a tracker twice: {','.join(self.log)}")
        check(self.mlflow_uri is None or "mlflow" in self.log, "--mlflow_uri is used only with --log mlflow")

    def _validate_finetuning(self) -> None:
        for name in ("ema", "head_lr_mult", "drop_path", "layer_decay"):
            check(math.isfinite(getattr(self, name)), f"--{name} must be a finite number, got {getattr(self, name)!r}")
        check(0 <= self.ema < 1, f"--ema must be a decay in [0, 1) (0: off), got {self.ema}")
        check(self.head_lr_mult > 0, f"--head_lr_mult must be > 0, got {self.head_lr_mult}")
        check(0 <= self.drop_path < 1, f"--drop_path must be in [0, 1), got {self.drop_path}")
        check(0 < self.layer_decay <= 1, f"--layer_decay must be a rate in (0, 1] (1: off), got {self.layer_decay}")
        for name in ("warmup_epochs", "freeze_backbone_epochs"):
            value = getattr(self, name)
            check(0 <= value < self.n_epochs,
                  f"--{name} must be in 0..{self.n_epochs - 1} (less than --n_epochs {self.n_epochs}), got {value}")
        check(not (self.warmup_epochs and self.scheduler == "onecycle"),
              "--warmup_epochs cannot be combined with --scheduler onecycle, which warms up by itself")
        if self.drop_path or self.layer_decay < 1:  # asked only then: a network's declaration imports torch
            from ptflow.models import registry as models

            network = models.builtin(self.model)
            check(not self.drop_path or network is None or "drop_path" in network.flags(),
                  f"--drop_path: the built-in network {self.model} has no drop path (a timm model has)")
            check(self.layer_decay == 1 or network is None,
                  f"--layer_decay: the built-in network {self.model} declares no layer order (a timm model does); "
                  f"use --head_lr_mult")

    def device_name(self) -> str:
        """The device asked for, with the article's --gpu_id taking precedence over --device."""
        if self.gpu_id is None:
            return self.device
        return "cpu" if self.gpu_id < 0 else f"cuda:{self.gpu_id}"


def names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def help_of(name: str) -> str:
    return help_text(next(f.metadata for f in dataclasses.fields(TrainConfig) if f.name == name))


def help_text(metadata) -> str:
    """A field's help line; made when asked where it lists the registries' names, so that importing
    config (every command's --help) does not import them."""
    text = metadata["help"]
    return text() if callable(text) else text


def _names_help(field: str) -> str:
    if field == "dataset":
        from ptflow.data import registry as datasets

        return (f"a built-in dataset ({', '.join(datasets.BUILTIN)}), {datasets.formats_help()}, a plugin's name "
                f"or PACKAGE.MODULE:FUNCTION")
    from ptflow.models import registry as models

    return (f"a built-in network ({', '.join(models.BUILTIN)}), timm:NAME (any timm architecture: `ptflow models`), "
            f"a plugin's name, or PACKAGE.MODULE:NAME (a class or factory)")


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
    return value_type(_hints()[name])
