"""`ptflow report RUN`: one self-contained HTML page about a run."""

from __future__ import annotations

from ptflow.cli.common import (
    add_device_options,
    add_trust_option,
    check_batch_size,
    check_output,
    device_of,
    use_threads,
)
from ptflow.cli.runs import RUNS_DIR_HELP
from ptflow.config import EVAL_BATCH_SIZE
from ptflow.errors import UsageError


def register(commands) -> None:
    p = commands.add_parser("report", help="one self-contained HTML page about a run",
                            description="Write one HTML file (images embedded, no external resources) with the "
                                        "run's config, learning curves, test metrics per class, confusion matrix, "
                                        "sample predictions and most confident mistakes.")
    p.add_argument("run", nargs="?", metavar="RUN", help="a run folder, or a run id in --runs_dir (default: the latest "
                                                         "run there)")
    p.add_argument("-o", "--out", metavar="HTML", help="where to write it (default: RUN/report.html)")
    p.add_argument("--runs_dir", default="runs", metavar="DIR", help=RUNS_DIR_HELP)
    p.add_argument("--data_dir", metavar="DIR", help="where the dataset's files are (default: as trained)")
    p.add_argument("--batch_size", type=int, default=EVAL_BATCH_SIZE,
                   help=f"examples per forward pass (default: {EVAL_BATCH_SIZE})")
    add_device_options(p)
    add_trust_option(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    use_threads(args)
    check_batch_size(args.batch_size)
    check_output(args.out, "--out")
    from ptflow.reports import report

    run = args.run if args.run is not None else latest(args.runs_dir)
    report.write_report(run, args.runs_dir, args.out, args.data_dir, device_of(args), args.batch_size,
                        trust_code=args.trust_model_code)
    return 0


def latest(runs_dir: str) -> str:
    """The run that started last, for `ptflow report` without RUN."""
    from ptflow.training import runs

    run = runs.latest(runs_dir)
    if run is None:
        raise UsageError(f"no RUN given, and {runs_dir} holds no run yet: train one with `ptflow train`, "
                         f"or give RUN (or --runs_dir DIR)")
    return str(run)
