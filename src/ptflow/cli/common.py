"""What several commands share: the parser class, flag parsers, device flags and the train options.

Only argparse and the config module are imported here, so `ptflow --help` answers at once.
The train options are made from TrainConfig's fields (config.py), which hold each default and
help line once.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

from ptflow.config import (
    DEVICE,
    MAX_GPU_ID,
    PRESETS,
    TrainConfig,
    check_threads,
    field_type,
    help_text,
    preset_values,
)
from ptflow.errors import UsageError
from ptflow.sizes import MAX_NESTING, check_structure

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
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {_short(text)}") from None


def parse_names(text: str) -> list[str]:
    """'tensorboard,mlflow' -> ['tensorboard', 'mlflow'], for --log."""
    return [part.strip().lower() for part in text.split(",") if part.strip()]


def parse_json_object(text: str) -> dict:
    """'{"width": 64}' -> {'width': 64}, for --model_args."""
    import json

    try:
        value = json.loads(text)
        check_structure(value, "--model_args", argparse.ArgumentTypeError)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {_short(text)} ({exc.msg})") from None
    except RecursionError:
        raise argparse.ArgumentTypeError(f"nested more than {MAX_NESTING} levels deep") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"width\": 64}}', got {_short(text)}")
    return value


def parse_device(text: str) -> str:
    """--device: auto, cpu, cuda, cuda:N or mps (checked here, before torch ever sees the string)."""
    if DEVICE.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {_short(text)}")
    return text


def _short(text: str) -> str:
    return repr(text) if len(text) <= 60 else repr(text[:57] + "...")


def _flag_type(name: str):
    """How a flag's text becomes the field's value, from the field's type."""
    kind, _ = field_type(name)
    if typing.get_origin(kind) is list:
        return parse_int_list if typing.get_args(kind)[0] is int else parse_names
    if name == "device":
        return parse_device
    return {dict: parse_json_object}.get(kind, kind)


def _default_text(value) -> str:
    if isinstance(value, list):
        value = ",".join(map(str, value))
    if value is None or value is False or value in ("", {}, []):  # 0 is a default worth showing (0 == False)
        return ""
    return f" (default: {value})"


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, grouped as the fields are. A flag not given is absent from
    the namespace, so a preset or a config file can fill it."""
    parser.add_argument("--preset", choices=sorted(PRESETS), default=argparse.SUPPRESS,
                        help="start from a tuned recipe (" + "; ".join(
                            f"{k}: {v['about']}".replace("%", "%%") for k, v in sorted(PRESETS.items())) +
                        "); flags and --config override its values")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for field in dataclasses.fields(TrainConfig):
        meta = field.metadata
        group = groups.get(meta["group"]) or groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        help = help_text(meta).replace("%", "%%")
        if field_type(field.name)[0] is bool:
            group.add_argument(f"--{field.name}", action="store_true", default=argparse.SUPPRESS, help=help)
            continue
        choices = meta["choices"] or None
        group.add_argument(f"--{field.name}", type=_flag_type(field.name), default=argparse.SUPPRESS,
                           choices=choices, metavar=meta["metavar"],
                           help=help + _default_text(getattr(DEFAULTS, field.name)).replace("%", "%%"))


def train_values(args, own_options: tuple[str, ...]) -> dict:
    """TrainConfig values from a preset, then a --config file, then flags: each overrides the last."""
    given = {k: v for k, v in vars(args).items() if k not in ("command", "handler", *own_options)}
    from_file = {}
    if getattr(args, "config", None):
        from ptflow.cli import configfile

        from_file = configfile.read(args.config)
    preset = given.pop("preset", None) or from_file.pop("preset", None)
    return {**preset_values(preset), **from_file, **given}


def add_device_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", type=parse_device, default="auto",
                        help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--gpu_id", type=int, default=None, help="-1 for CPU, N for cuda:N (overrides --device)")
    parser.add_argument("--num_threads", type=int, metavar="N",
                        help="CPU threads for matrix products (default: torch's, from OMP_NUM_THREADS or the cores)")


def add_model_option(parser: argparse.ArgumentParser, help: str) -> None:
    """--model_fn, by default the model of the latest run in --runs_dir: what a user just trained."""
    parser.add_argument("--model_fn", metavar="FILE", help=f"{help} (default: the latest run's model in --runs_dir)")
    parser.add_argument("--runs_dir", default="runs", metavar="DIR",
                        help="where to find the latest run when --model_fn is not given (default: runs)")


def model_file(args) -> str:
    """The model file a command uses: --model_fn, else the latest run's (said on stderr, so that
    stdout stays the command's output)."""
    if args.model_fn is not None:
        return args.model_fn
    from ptflow.training import runs

    run = runs.latest(args.runs_dir, holding=runs.MODEL)
    if run is None:
        raise UsageError(f"no --model_fn given, and no run in {args.runs_dir} has a model yet: train one with "
                         f"`ptflow train`, or pass --model_fn FILE (or --runs_dir DIR)")
    path = str(run / runs.MODEL)
    print(f"Using {path}, the latest run's model (--model_fn FILE chooses another)", file=sys.stderr)
    return path


def add_trust_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust_model_code", action="store_true",
                        help="import the model code a file names by import path (runs that code: only for "
                             "files from people you trust); installed plugins need no such flag")


def device_of(args) -> str:
    if args.gpu_id is None:
        return args.device
    if not -1 <= args.gpu_id <= MAX_GPU_ID:
        raise UsageError(f"--gpu_id must be -1 or a GPU index, got {args.gpu_id}")
    return "cpu" if args.gpu_id < 0 else f"cuda:{args.gpu_id}"


def use_threads(args) -> None:
    """--num_threads of a command that runs a model, for the rest of its process."""
    check_threads(args.num_threads)
    if args.num_threads is not None:
        import torch

        torch.set_num_threads(args.num_threads)


def check_batch_size(value: int) -> None:
    if value < 1:
        raise UsageError(f"--batch_size must be >= 1, got {value}")


def check_output(path: str | None, flag: str, folder: bool = False) -> None:
    """Refuse, before any work, an output path that collides with what is there: a folder where
    a file will be written, anything but a regular file where one will be replaced (a device, a
    FIFO, a link: files.target_problem), a file where a folder will be made (or where one of its
    parents is)."""
    from pathlib import Path

    from ptflow.files import target_problem

    if path is None:
        return
    if "\0" in str(path):
        raise UsageError(f"{flag} contains a NUL character")
    target = Path(path)
    if folder and target.exists() and not target.is_dir():
        raise UsageError(f"{flag} {path}: a file is in the way; give a folder")
    if not folder and target.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give a file name")
    problem = None if folder else target_problem(target)
    if problem:
        raise UsageError(f"{flag} {path}: {problem}; ptflow writes regular files only")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{flag} {path}: {parent} is a file, not a folder")
            break


def check_train_outputs(config: TrainConfig) -> None:
    """The outputs of `ptflow train` and `ptflow sweep`, before data is loaded or anything trains."""
    check_output(config.model_fn, "--model_fn")
    check_output(config.runs_dir, "--runs_dir", folder=True)
    if "mlflow" in config.log:
        from ptflow.files import database_file
        from ptflow.training.tracking import mlflow_uri

        check_output(database_file(mlflow_uri(config)), "the MLflow store")
