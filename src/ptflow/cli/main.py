"""The `ptflow` command: parse the command line, build a config, hand plain values below.

options.py defines the commands and flags; each function here runs one command, importing its
module (and torch) only then, so `ptflow --help` answers at once.
"""

from __future__ import annotations

import os
import sys

from ptflow.cli.options import CONFIG_AND_RESUME_OPTIONS, SWEEP_OPTIONS, build_parser, device_of
from ptflow.config import TrainConfig, preset_values
from ptflow.errors import PtflowError, UsageError

__all__ = ["build_parser", "main"]


def train_values(args, own_options: tuple[str, ...]) -> dict:
    """TrainConfig values from a preset, then a --config file, then flags: each overrides the last."""
    given = {k: v for k, v in vars(args).items() if k not in ("command", *own_options)}
    from_file = {}
    if args.config:
        from ptflow.cli import configfile

        from_file = configfile.read(args.config)
    preset = given.pop("preset", None) or from_file.pop("preset", None)
    return {**preset_values(preset), **from_file, **given}


def cmd_train(args) -> int:
    from ptflow.cli import configfile

    values = train_values(args, CONFIG_AND_RESUME_OPTIONS)
    run_dir = None
    if args.resume:
        from ptflow.training import resume

        run_dir, config = resume.resolve(args.resume, values)
    else:
        config = TrainConfig.from_dict(values)
    if args.print_config:
        from ptflow.console import info

        info(configfile.dump(config.to_dict(), configfile.output_format(args.print_config, args.config)).rstrip())
        return 0
    from ptflow.training import train

    train.run(config, resume_from=run_dir, allow_changed_code=args.allow_changed_code)
    return 0


def cmd_runs(args) -> int:
    from ptflow.reports import history

    if args.runs_command == "show":
        history.show(args.run, args.runs_dir)
    elif args.runs_command == "compare":
        history.compare(args.runs, args.runs_dir, args.out)
    else:
        history.table(args.runs_dir)
    return 0


def cmd_report(args) -> int:
    if args.batch_size < 1:
        raise UsageError(f"--batch_size must be >= 1, got {args.batch_size}")
    from ptflow.reports import report

    report.run(args.run, args.runs_dir, args.out, args.data_dir, device_of(args), args.batch_size)
    return 0


def cmd_evaluate(args) -> int:
    if args.batch_size < 1:
        raise UsageError(f"--batch_size must be >= 1, got {args.batch_size}")
    from ptflow.reports import evaluate

    evaluate.run(args.model_fn, args.data_dir, device_of(args), args.out_dir, args.batch_size)
    return 0


def cmd_predict(args) -> int:
    if not args.inputs:
        from ptflow.reports import evaluate

        evaluate.run(args.model_fn, device=device_of(args))
        return 0
    from ptflow.reports import predict

    predict.run(args.model_fn, args.inputs, args.format, device_of(args))
    return 0


def cmd_serve(args) -> int:
    if args.max_body_mb <= 0:
        raise UsageError(f"--max_body_mb must be > 0, got {args.max_body_mb}")
    try:
        from ptflow.serve import app as serve
    except ImportError as exc:
        raise PtflowError(f"ptflow serve needs {exc.name}: pip install 'ptflow[serve]'") from None

    settings = serve.Settings(max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
                              max_queue=args.max_queue, max_inputs=args.max_inputs,
                              max_body_bytes=int(args.max_body_mb * 1024 * 1024),
                              api_key=args.api_key or os.environ.get("PTFLOW_API_KEY") or None)
    serve.run(args.model_fn, args.host, args.port, settings, device_of(args), args.threads, args.insecure,
              args.access_log)
    return 0


def cmd_export(args) -> int:
    from ptflow.models import export

    export.run(args.model_fn, args.format, args.out, args.opset)
    return 0


def cmd_sweep(args) -> int:
    values = train_values(args, SWEEP_OPTIONS)
    # Trials are quiet unless asked: one summary line each reads better than every epoch of every trial.
    base = TrainConfig.from_dict({"verbose": 0, **values})
    if args.trials < 1:
        raise UsageError(f"--trials must be >= 1, got {args.trials}")
    if min(args.prune_after, args.prune_warmup) < 0:
        raise UsageError("--prune_after and --prune_warmup must be >= 0")
    from ptflow.sweep import search as sweep

    sweep.run(base, set(values), args.param, args.trials, study_name=args.study, storage=args.storage,
              pruner=args.pruner, prune_after=args.prune_after, prune_warmup=args.prune_warmup)
    return 0


def cmd_data(args) -> int:
    config = TrainConfig.from_dict({"dataset": args.name, "train_ratio": args.train_ratio,
                                    "test_ratio": args.test_ratio, "seed": args.seed})
    from ptflow.reports import explore

    explore.run(config.dataset, args.data_dir, args.target, config.train_ratio, config.test_ratio,
                config.seed, args.out)
    return 0


HANDLERS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "serve": cmd_serve,
            "export": cmd_export, "data": cmd_data, "sweep": cmd_sweep, "runs": cmd_runs, "report": cmd_report}


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
        return HANDLERS[args.command](args)
    except PtflowError as exc:
        print(f"ptflow {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print(f"ptflow {args.command}: interrupted", file=sys.stderr)
        return getattr(exc, "exit_code", 130)  # 143 after SIGTERM (interrupt.Interrupted)
    except BrokenPipeError:  # output piped into `head` and friends: not an error worth a traceback
        sys.stdout = open(os.devnull, "w")
        return 141
