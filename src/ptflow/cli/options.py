"""Every command and flag of `ptflow`: the argparse side of the command line.

Only argparse and the config module are imported here, so `ptflow --help` answers at once;
cli.py maps each parsed command to the function that runs it.
"""

from __future__ import annotations

import argparse

from ptflow.config import EVAL_BATCH_SIZE, PRESETS, TrainConfig

DEFAULTS = TrainConfig()


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_int_list(text: str) -> list[int]:
    """'500,400,300' -> [500, 400, 300], for --hidden_sizes and --channels."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parse_names(text: str) -> list[str]:
    """'tensorboard,mlflow' -> ['tensorboard', 'mlflow'], for --log."""
    return [part.strip().lower() for part in text.split(",") if part.strip()]


def _default(name: str) -> str:
    value = getattr(DEFAULTS, name)
    if isinstance(value, list):
        value = ",".join(map(str, value))
    return f" (default: {value})" if value not in (None, False, "") else ""


def _opt(group, name: str, help: str, type=str, **kwargs) -> None:
    """A TrainConfig option: absent from the namespace unless given, so config files can fill it."""
    if type is bool:
        group.add_argument(f"--{name}", action="store_true", default=argparse.SUPPRESS, help=help, **kwargs)
    else:
        group.add_argument(f"--{name}", type=type, default=argparse.SUPPRESS, help=help + _default(name),
                           **kwargs)


def add_train_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default=argparse.SUPPRESS,
                        help="start from a tuned recipe (" + "; ".join(
                            f"{k}: {v['about']}".replace("%", "%%") for k, v in sorted(PRESETS.items())) +
                        "); flags and --config override its values")
    data = parser.add_argument_group("data")
    _opt(data, "dataset", "mnist, fashion-mnist, kmnist, digits, csv:PATH, npz:PATH or folder:PATH", metavar="NAME")
    _opt(data, "data_dir", "folder searched first for dataset files (also $PTFLOW_DATA_DIR)", metavar="DIR")
    _opt(data, "target", "label column of a CSV, by name or index (default: the last)", metavar="COLUMN")
    _opt(data, "train_ratio", "share of the training data used for training; the rest validates", float)
    _opt(data, "test_ratio", "share held out for testing where the dataset has no test split", float)
    _opt(data, "normalize", "standard: subtract the train split's mean, divide by its std",
         choices=["none", "standard"])
    _opt(data, "seed", "one seed for the split, initial weights and shuffling", int)
    model = parser.add_argument_group("model")
    _opt(model, "model", "network: mlp (the article's) or cnn", choices=["mlp", "cnn"])
    _opt(model, "n_layers", "mlp depth; hidden sizes shrink in equal steps", int)
    _opt(model, "hidden_sizes", "mlp hidden sizes, e.g. 500,400,300 (overrides --n_layers)", parse_int_list,
         metavar="N,N,...")
    _opt(model, "use_dropout", "regularise with dropout instead of BatchNorm", bool)
    _opt(model, "dropout_p", "dropout probability", float)
    _opt(model, "channels", "cnn channels per conv stage, e.g. 32,64", parse_int_list, metavar="N,N,...")
    _opt(data, "augment_shift", "shift training images by up to N pixels at random", int, metavar="N")
    optim = parser.add_argument_group("optimisation")
    _opt(optim, "batch_size", "examples per step", int)
    _opt(optim, "n_epochs", "passes over the training data", int)
    _opt(optim, "optimizer", "update rule", choices=["adam", "adamw", "sgd"])
    _opt(optim, "lr", "learning rate (peak rate for onecycle)", float)
    _opt(optim, "weight_decay", "L2 penalty (decoupled for adamw)", float)
    _opt(optim, "scheduler", "learning-rate schedule", choices=["none", "cosine", "onecycle"])
    _opt(optim, "early_stop", "stop after this many epochs without a better validation loss (0: never)",
         int, metavar="PATIENCE")
    hw = parser.add_argument_group("hardware")
    _opt(hw, "device", "auto, cpu, cuda, cuda:N or mps")
    _opt(hw, "gpu_id", "the article's flag: -1 for CPU, N for cuda:N (overrides --device)", int)
    _opt(hw, "precision", "bf16 runs matmuls under autocast", choices=["fp32", "bf16"])
    _opt(hw, "compile", "torch.compile the model", bool)
    out = parser.add_argument_group("output")
    _opt(out, "model_fn", "also write the model file here (.pth: the article's layout)", metavar="FILE")
    _opt(out, "runs_dir", "folder of run folders", metavar="DIR")
    _opt(out, "run_name", "name of this run's folder (default: timestamp-dataset-model)")
    _opt(out, "verbose", "0 quiet, 1 a line per epoch, 2 a line per iteration", int, choices=[0, 1, 2])
    tracking = parser.add_argument_group("tracking (optional extras)")
    _opt(tracking, "log", "also log to tensorboard and/or mlflow, e.g. tensorboard,mlflow", parse_names,
         metavar="NAME,...")
    _opt(tracking, "mlflow_uri", "MLflow tracking server (default: sqlite:///RUNS_DIR/mlflow.db)", metavar="URI")


def add_device_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--gpu_id", type=int, default=None, help="-1 for CPU, N for cuda:N (overrides --device)")


def device_of(args) -> str:
    if args.gpu_id is None:
        return args.device
    return "cpu" if args.gpu_id < 0 else f"cuda:{args.gpu_id}"


def build_parser() -> argparse.ArgumentParser:
    from ptflow import __version__

    parser = Parser(prog="ptflow", description="Train, evaluate and use classifiers from the command line.")
    parser.add_argument("--version", action="version", version=f"ptflow {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)

    p = commands.add_parser("train", help="train a model; writes a run folder and prints test accuracy",
                            description="Train a classifier. Flags override the defaults shown.")
    add_train_options(p)
    add_config_and_resume_options(p)

    p = commands.add_parser("evaluate", help="test-split accuracy, per-class metrics and pictures")
    p.add_argument("--model_fn", required=True, metavar="FILE", help="model file to evaluate")
    p.add_argument("--data_dir", metavar="DIR", help="where the dataset's files are (default: as trained)")
    p.add_argument("--out_dir", metavar="DIR", help="where to write the PNGs and evaluation.json "
                                                    "(default: next to the model, <name>-eval/)")
    p.add_argument("--batch_size", type=int, default=EVAL_BATCH_SIZE,
                   help=f"examples per forward pass (default: {EVAL_BATCH_SIZE})")
    add_device_options(p)

    p = commands.add_parser("predict", help="labels and probabilities for images, .npz or .csv files",
                            description="Predict. With no INPUT, evaluates on the test split "
                                        "(as the article's predict).")
    p.add_argument("--model_fn", required=True, metavar="FILE", help="model file to use")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files or folders, .npz (array x), .csv rows")
    p.add_argument("--format", default="table", choices=["table", "json", "csv"], help="output format")
    add_device_options(p)

    p = commands.add_parser("serve", help="serve a model over HTTP: REST API, web page, metrics",
                            description="Serve a model: POST /v1/predict (JSON) and /v1/predict/image (uploads), "
                                        "GET / (draw a digit), /v1/model, /healthz, /readyz, /metrics, /docs.")
    p.add_argument("--model_fn", required=True, metavar="FILE", help="model file to serve")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    p.add_argument("--max_batch_size", type=int, default=64, help="inputs per forward pass; 1 turns "
                                                                  "micro-batching off (default: 64)")
    p.add_argument("--max_wait_ms", type=float, default=0.0, help="extra wait for a fuller batch (default: 0: "
                                                                  "batch what queues up during a forward pass)")
    p.add_argument("--max_queue", type=int, default=1024, help="inputs waiting before 503 (default: 1024)")
    p.add_argument("--max_inputs", type=int, default=256, help="inputs or images per request (default: 256)")
    p.add_argument("--max_body_mb", type=float, default=8.0, help="request body limit in MiB (default: 8)")
    p.add_argument("--api_key", default=None, help="require 'Authorization: Bearer KEY' on predictions "
                                                   "(default: $PTFLOW_API_KEY; the variable keeps it out of ps)")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without an API key")
    p.add_argument("--threads", type=int, default=1, help="torch threads for inference (default: 1)")
    p.add_argument("--access_log", action="store_true", help="log every request (default: off; see /metrics)")
    add_device_options(p)

    p = commands.add_parser("export", help="export a model to ONNX or TorchScript, preprocessing included",
                            description="Export a model that takes raw inputs (uint8 pixels or raw features) and "
                                        "returns class probabilities; class names and preprocessing go with it.")
    p.add_argument("--model_fn", required=True, metavar="FILE", help="model file to export")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"], help="onnx or torchscript")
    p.add_argument("-o", "--out", required=True, metavar="FILE", help="where to write the exported model")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version (default: 17)")

    p = commands.add_parser("data", help="look at a dataset: splits, class counts, statistics, samples")
    p.add_argument("name", metavar="NAME", help="mnist, fashion-mnist, kmnist, digits, csv:PATH, npz:PATH, folder:PATH")
    p.add_argument("--data_dir", metavar="DIR", help="folder searched first for dataset files")
    p.add_argument("--target", metavar="COLUMN", help="label column of a CSV (default: the last)")
    p.add_argument("--train_ratio", type=float, default=0.8, help="(default: 0.8)")
    p.add_argument("--test_ratio", type=float, default=0.2, help="(default: 0.2)")
    p.add_argument("--seed", type=int, default=0, help="(default: 0)")
    p.add_argument("--out", metavar="PNG", help="sample grid file (default: NAME-samples.png)")

    p = commands.add_parser("sweep", help="tune hyperparameters with Optuna; every trial is a run folder",
                            description="Search hyperparameters by validation loss (TPE sampling, median "
                                        "pruning); train flags fix everything not searched.")
    add_sweep_options(p)
    add_train_options(p)

    add_history_commands(commands)
    return parser


CONFIG_AND_RESUME_OPTIONS = ("config", "print_config", "resume", "allow_changed_code")


def add_config_and_resume_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("config files and resuming")
    group.add_argument("--config", metavar="FILE", help="YAML or TOML file of train options; flags override it")
    group.add_argument("--print_config", nargs="?", const="auto", metavar="yaml|toml",
                       help="print the resolved config (YAML, or --config's format) and exit")
    group.add_argument("--resume", metavar="RUN", help="continue a stopped run (a run folder, or a run id in "
                                                       "--runs_dir) from its last completed epoch")
    group.add_argument("--allow_changed_code", action="store_true",
                       help="resume even though ptflow's code changed since the run started")


def add_history_commands(commands) -> None:
    """`ptflow runs`, `ptflow runs show RUN`, `ptflow runs compare RUN RUN...` and `ptflow report RUN`."""
    runs_dir_help = "folder of run folders (default: runs)"
    p = commands.add_parser("runs", help="past runs as a table; `runs show RUN`, `runs compare RUN RUN...`",
                            description="List the runs in --runs_dir: id, start, dataset, model, the hyperparameters "
                                        "that differ, best validation loss, test accuracy, duration and status.")
    p.add_argument("--runs_dir", default="runs", metavar="DIR", help=runs_dir_help)
    p.set_defaults(runs_command=None)
    sub = p.add_subparsers(dest="runs_command", metavar="{show,compare}", parser_class=Parser)
    s = sub.add_parser("show", help="one run: status, metrics per epoch, config")
    s.add_argument("run", metavar="RUN", help="a run folder, or a run id in --runs_dir")
    s.add_argument("--runs_dir", default=argparse.SUPPRESS, metavar="DIR", help=runs_dir_help)
    s = sub.add_parser("compare", help="runs side by side: config differences, metrics, learning curves in one PNG")
    s.add_argument("runs", nargs="+", metavar="RUN", help="two or more run folders or run ids")
    s.add_argument("-o", "--out", default="compare.png", metavar="PNG",
                   help="the overlaid learning curves (default: compare.png)")
    s.add_argument("--runs_dir", default=argparse.SUPPRESS, metavar="DIR", help=runs_dir_help)

    p = commands.add_parser("report", help="one self-contained HTML page about a run",
                            description="Write one HTML file (images embedded, no external resources) with the "
                                        "run's config, learning curves, test metrics per class, confusion matrix, "
                                        "sample predictions and most confident mistakes.")
    p.add_argument("run", metavar="RUN", help="a run folder, or a run id in --runs_dir")
    p.add_argument("-o", "--out", metavar="HTML", help="where to write it (default: RUN/report.html)")
    p.add_argument("--runs_dir", default="runs", metavar="DIR", help=runs_dir_help)
    p.add_argument("--data_dir", metavar="DIR", help="where the dataset's files are (default: as trained)")
    p.add_argument("--batch_size", type=int, default=EVAL_BATCH_SIZE,
                   help=f"examples per forward pass (default: {EVAL_BATCH_SIZE})")
    add_device_options(p)


SWEEP_OPTIONS = ("trials", "param", "study", "storage", "pruner", "prune_after", "prune_warmup", "config")


def add_sweep_options(parser: argparse.ArgumentParser) -> None:
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--trials", type=int, required=True, metavar="N",
                       help="trials to run in this command (added to a resumed study's)")
    sweep.add_argument("--param", action="append", default=[], metavar="NAME=SPEC",
                       help="a hyperparameter to search: float:LO:HI, loguniform:LO:HI, int:LO:HI[:STEP] or "
                            "choice:A,B,... (list values as 32/64); repeat for each one")
    sweep.add_argument("--study", metavar="NAME", help="study name; an existing study is resumed "
                                                       "(default: sweep-TIMESTAMP)")
    sweep.add_argument("--storage", metavar="URL", help="Optuna RDB URL shared by several machines, e.g. "
                                                        "postgresql://user@host/db (default: sqlite:///RUNS_DIR/sweeps.db)")
    sweep.add_argument("--pruner", default="median", choices=["median", "none"],
                       help="stop trials whose validation loss is worse than the median (default: median)")
    sweep.add_argument("--prune_after", type=int, default=5, metavar="TRIALS",
                       help="trials that finish before any is pruned (default: 5)")
    sweep.add_argument("--prune_warmup", type=int, default=1, metavar="EPOCHS",
                       help="epochs every trial runs before it can be pruned (default: 1)")
    sweep.add_argument("--config", metavar="FILE", help="YAML or TOML file of train options; flags override it")
