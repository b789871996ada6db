"""`ptflow train`: every TrainConfig option as a flag, plus config files and resuming."""

from __future__ import annotations

import argparse

from ptflow.cli.common import add_train_options, check_train_outputs, train_values
from ptflow.config import TrainConfig

OWN_OPTIONS = ("config", "print_config", "resume", "allow_changed_code", "trust_model_code")


def register(commands) -> None:
    p = commands.add_parser("train", help="train a model; writes a run folder and prints test accuracy",
                            description="Train a classifier. Flags override the defaults shown.")
    add_train_options(p)
    group = p.add_argument_group("config files and resuming")
    group.add_argument("--config", metavar="FILE", help="YAML or TOML file of train options; flags override it")
    group.add_argument("--print_config", nargs="?", const="auto", metavar="yaml|toml",
                       help="print the resolved config (YAML, or --config's format) and exit")
    group.add_argument("--resume", metavar="RUN", help="continue a stopped run (a run folder, or a run id in "
                                                       "--runs_dir) from its last completed epoch")
    group.add_argument("--allow_changed_code", action="store_true",
                       help="resume even though ptflow's code changed since the run started")
    group.add_argument("--trust_model_code", action="store_true",
                       help="with --resume: import the model or dataset code that the run's config names by "
                            "import path (installed plugins need no such flag)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ptflow.cli import configfile

    values = train_values(args, OWN_OPTIONS)
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
    check_train_outputs(config)
    from ptflow.training import train

    # Code named on this command line is the user's own choice; code named by a run folder's
    # config (on --resume) is imported only with --trust_model_code.
    trust = args.trust_model_code or run_dir is None
    train.run(config, resume_from=run_dir, allow_changed_code=args.allow_changed_code, trust_code=trust)
    return 0
