"""`ptflow evaluate`: a model file judged on its dataset's test split."""

from __future__ import annotations

from ptflow.cli.common import (
    add_device_options,
    add_model_option,
    add_trust_option,
    check_batch_size,
    check_output,
    device_of,
    model_file,
    use_threads,
)
from ptflow.config import EVAL_BATCH_SIZE


def register(commands) -> None:
    p = commands.add_parser("evaluate", help="test-split accuracy, per-class metrics and pictures")
    add_model_option(p, "model file to evaluate")
    p.add_argument("--data_dir", metavar="DIR", help="where the dataset's files are (default: as trained)")
    p.add_argument("--out_dir", metavar="DIR", help="where to write the PNGs and evaluation.json "
                                                    "(default: next to the model, <name>-eval/)")
    p.add_argument("--batch_size", type=int, default=EVAL_BATCH_SIZE,
                   help=f"examples per forward pass (default: {EVAL_BATCH_SIZE})")
    add_device_options(p)
    add_trust_option(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    use_threads(args)
    check_batch_size(args.batch_size)
    check_output(args.out_dir, "--out_dir", folder=True)
    from ptflow.reports import evaluate

    evaluate.evaluate_model(model_file(args), args.data_dir, device_of(args), args.out_dir, args.batch_size,
                            trust_code=args.trust_model_code)
    return 0
