"""The `ptflow` command: parse the command line, build a config, hand plain values below.

Only argparse and the config module are imported at start-up; each command imports its own
module (and torch) when it runs, so `ptflow --help` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys

from ptflow.config import TrainConfig
from ptflow.errors import PtflowError, UsageError

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


def _default(name: str) -> str:
    value = getattr(DEFAULTS, name)
    if isinstance(value, list):
        value = ",".join(map(str, value))
    return f" (default: {value})" if value not in (None, False) else ""


def _opt(group, name: str, help: str, type=str, **kwargs) -> None:
    """A TrainConfig option: absent from the namespace unless given, so config files can fill it."""
    if type is bool:
        group.add_argument(f"--{name}", action="store_true", default=argparse.SUPPRESS, help=help, **kwargs)
    else:
        group.add_argument(f"--{name}", type=type, default=argparse.SUPPRESS, help=help + _default(name),
                           **kwargs)


def add_train_options(parser: argparse.ArgumentParser) -> None:
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
    p.set_defaults(handler=cmd_train)

    p = commands.add_parser("evaluate", help="test-split accuracy, per-class metrics and pictures")
    p.add_argument("--model_fn", required=True, metavar="FILE", help="model file to evaluate")
    p.add_argument("--data_dir", metavar="DIR", help="where the dataset's files are (default: as trained)")
    p.add_argument("--out_dir", metavar="DIR", help="where to write the PNGs and evaluation.json "
                                                    "(default: next to the model, <name>-eval/)")
    p.add_argument("--batch_size", type=int, default=8192, help="examples per forward pass (default: 8192)")
    add_device_options(p)
    p.set_defaults(handler=cmd_evaluate)

    p = commands.add_parser("predict", help="labels and probabilities for images, .npz or .csv files",
                            description="Predict. With no INPUT, evaluates on the test split (as the article's predict).")
    p.add_argument("--model_fn", required=True, metavar="FILE", help="model file to use")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files or folders, .npz (array x), .csv rows")
    p.add_argument("--format", default="table", choices=["table", "json", "csv"], help="output format")
    add_device_options(p)
    p.set_defaults(handler=cmd_predict)

    p = commands.add_parser("data", help="look at a dataset: splits, class counts, statistics, samples")
    p.add_argument("name", metavar="NAME", help="mnist, fashion-mnist, kmnist, digits, csv:PATH, npz:PATH, folder:PATH")
    p.add_argument("--data_dir", metavar="DIR", help="folder searched first for dataset files")
    p.add_argument("--target", metavar="COLUMN", help="label column of a CSV (default: the last)")
    p.add_argument("--train_ratio", type=float, default=0.8, help="(default: 0.8)")
    p.add_argument("--test_ratio", type=float, default=0.2, help="(default: 0.2)")
    p.add_argument("--seed", type=int, default=0, help="(default: 0)")
    p.add_argument("--out", metavar="PNG", help="sample grid file (default: NAME-samples.png)")
    p.set_defaults(handler=cmd_data)
    return parser


def cmd_train(args) -> int:
    values = {k: v for k, v in vars(args).items() if k not in ("command", "handler")}
    config = TrainConfig.from_dict(values)
    from ptflow import train

    train.run(config)
    return 0


def cmd_evaluate(args) -> int:
    if args.batch_size < 1:
        raise UsageError(f"--batch_size must be >= 1, got {args.batch_size}")
    from ptflow import evaluate

    evaluate.run(args.model_fn, args.data_dir, device_of(args), args.out_dir, args.batch_size)
    return 0


def cmd_predict(args) -> int:
    if not args.inputs:
        from ptflow import evaluate

        evaluate.run(args.model_fn, device=device_of(args))
        return 0
    from ptflow import predict

    predict.run(args.model_fn, args.inputs, args.format, device_of(args))
    return 0


def cmd_data(args) -> int:
    config = TrainConfig.from_dict({"dataset": args.name, "train_ratio": args.train_ratio,
                                    "test_ratio": args.test_ratio, "seed": args.seed})
    from ptflow import explore

    explore.run(config.dataset, args.data_dir, args.target, config.train_ratio, config.test_ratio,
                config.seed, args.out)
    return 0


def normalize_flags(argv: list[str]) -> list[str]:
    """Accept --hyphen-spellings of every --underscore_flag (stops at a bare `--`)."""
    out = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + argv[i:]
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            arg = name.replace("-", "_").replace("__", "--", 1) + eq + value
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = normalize_flags(sys.argv[1:] if argv is None else list(argv))
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: return the status, don't raise it
        return int(exc.code or 0)
    try:
        return args.handler(args)
    except PtflowError as exc:
        print(f"ptflow {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"ptflow {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and friends: not an error worth a traceback
        sys.stdout = open(os.devnull, "w")
        return 141
