"""`ptflow sweep`: the train options fix what is not searched; --param names what is."""

from __future__ import annotations

import argparse

from ptflow.cli.common import add_train_options, check_output, check_train_outputs, train_values
from ptflow.config import TrainConfig
from ptflow.errors import UsageError

OWN_OPTIONS = ("trials", "param", "space", "study", "storage", "pruner", "prune_after", "prune_warmup", "objective",
               "config")


def register(commands) -> None:
    p = commands.add_parser("sweep", help="tune hyperparameters with Optuna; every trial is a run folder",
                            description="Search hyperparameters by validation loss (TPE sampling, median "
                                        "pruning); train flags fix everything not searched.")
    add_sweep_options(p)
    add_train_options(p)
    p.set_defaults(handler=run)


def add_sweep_options(parser: argparse.ArgumentParser) -> None:
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--trials", type=int, required=True, metavar="N",
                       help="trials to run in this command (added to a resumed study's)")
    sweep.add_argument("--param", action="append", default=[], metavar="NAME=SPEC",
                       help="a hyperparameter to search: float:LO:HI, loguniform:LO:HI, int:LO:HI[:STEP] or "
                            "choice:A,B,... (list values as 32/64); model_args.KEY searches one model "
                            "argument; repeat for each one")
    from ptflow.sweep.space import SPACES, space_help

    sweep.add_argument("--space", choices=sorted(SPACES),
                       help=f"a named search space, searched beside --param: {space_help()}; a train flag or "
                            f"--param naming one of its fields takes that field out")
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
    sweep.add_argument("--objective", metavar="METRIC",
                       help="what to tune: best_valid_loss (the default), or valid_NAME of a metric declared "
                            "tunable (training/scoring.py); a resumed study keeps its own")
    sweep.add_argument("--config", metavar="FILE", help="YAML or TOML file of train options; flags override it")


def run(args) -> int:
    from pathlib import Path

    from ptflow.files import database_file
    from ptflow.sweep.study import DEFAULT_DB
    from ptflow.training import distributed as dist

    if dist.launched():  # docs/guides/scale-out.md
        raise UsageError("ptflow sweep runs each trial in one process; to use more cores or machines, start "
                         "several sweep commands on one --storage instead of torchrun")
    values = train_values(args, OWN_OPTIONS)
    # Trials are quiet unless asked: one summary line each reads better than every epoch of every trial.
    base = TrainConfig.from_dict({"verbose": 0, **values})
    check_train_outputs(base)
    check_output(database_file(args.storage) if args.storage else str(Path(base.runs_dir) / DEFAULT_DB), "--storage")
    if args.trials < 1:
        raise UsageError(f"--trials must be >= 1, got {args.trials}")
    if min(args.prune_after, args.prune_warmup) < 0:
        raise UsageError("--prune_after and --prune_warmup must be >= 0")
    from ptflow.sweep import search

    search.run_sweep(base, set(values), args.param, args.trials, study_name=args.study, storage=args.storage,
                     pruner=args.pruner, prune_after=args.prune_after, prune_warmup=args.prune_warmup,
                     objective=args.objective, space=args.space)
    return 0
