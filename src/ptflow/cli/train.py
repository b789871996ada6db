"""`ptflow train`: every TrainConfig option as a flag, plus config files, resuming and several processes.

The launcher flags (--nproc_per_node, --nnodes, --node_rank, --rdzv_endpoint, --max_restarts) say
how many processes to start and where, so they live here rather than in TrainConfig: they are
torchrun's, and a process that torchrun started is given none of them. What each process does
(--batch_size stays the global batch, --sync_bn) is in TrainConfig like every other option.
"""

from __future__ import annotations

import argparse
import sys

from ptflow.cli.common import add_train_options, check_train_outputs, train_values
from ptflow.config import DIST_TIMEOUT, TrainConfig
from ptflow.errors import PtflowError, UsageError

LAUNCH_OPTIONS = ("nproc_per_node", "nnodes", "node_rank", "rdzv_endpoint", "max_restarts")
OWN_OPTIONS = ("config", "print_config", "resume", "allow_changed_code", "trust_model_code", "dist_timeout",
               *LAUNCH_OPTIONS)


def register(commands) -> None:
    p = commands.add_parser("train", help="train a model; writes a run folder and prints test accuracy",
                            description="Train a classifier. Flags override the defaults shown.")
    add_train_options(p)
    group = p.add_argument_group("config files and resuming")
    group.add_argument("--config", metavar="FILE", help="YAML or TOML file of train options; flags override it")
    group.add_argument("--print_config", nargs="?", const="auto", metavar="yaml|toml",
                       help="print the resolved config (YAML, or --config's format) and exit")
    group.add_argument("--resume", metavar="RUN", help="continue a stopped run (a run folder, or a run id in "
                                                       "--runs_dir) from where it stopped")
    group.add_argument("--allow_changed_code", action="store_true",
                       help="resume even though ptflow's code changed since the run started")
    group.add_argument("--trust_model_code", action="store_true",
                       help="with --resume: import the model or dataset code that the run's config names by "
                            "import path (installed plugins need no such flag)")
    add_launch_options(p)
    p.set_defaults(handler=run)


def add_launch_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("several processes (torch.distributed, through torchrun)")
    group.add_argument("--nproc_per_node", type=int, metavar="N",
                       help="train with N processes on this machine (one per GPU on CUDA); ptflow starts them "
                            "through torch.distributed.run, as `torchrun -m ptflow train` would")
    group.add_argument("--nnodes", type=int, metavar="N", help="machines in the job, each running this command "
                                                               "(default: 1)")
    group.add_argument("--node_rank", type=int, metavar="R",
                       help="this machine's number, 0 to nnodes-1, for a fixed rendezvous hosted by machine 0 at "
                            "--rdzv_endpoint (without it: c10d's dynamic rendezvous)")
    group.add_argument("--rdzv_endpoint", metavar="HOST:PORT", help="where the machines meet: a free port on one "
                                                                    "of them")
    group.add_argument("--max_restarts", type=int, metavar="K",
                       help="restart every process up to K times after one fails; the run continues from its "
                            "last checkpoint (default: 0)")
    group.add_argument("--dist_timeout", type=float, default=DIST_TIMEOUT, metavar="SECONDS",
                       help="how long a process waits for the others before the job fails "
                            f"(default: {DIST_TIMEOUT})")


def run(args: argparse.Namespace) -> int:
    if not args.dist_timeout > 0:
        raise UsageError(f"--dist_timeout must be > 0 seconds, got {args.dist_timeout}")
    launcher = {k: getattr(args, k) for k in LAUNCH_OPTIONS if getattr(args, k) is not None}
    if launcher and not args.print_config:
        return start_processes(args, launcher)
    from ptflow.training import distributed as dist
    from ptflow.training import launch

    job = dist.job_from_environment()
    if launch.under_agent():
        launch.die_with_launcher()
    else:
        warn_ignored_ranks()
    try:
        return train_here(args, job)
    except PtflowError as exc:
        note = launch.note_for(exc, job)  # torchrun restarts the job, or reports the failure itself
        if note is None:
            raise
        if not getattr(exc, "silent", False):  # as main() prints errors: once for the job
            print(f"ptflow train: {note}", file=sys.stderr, flush=True)
        return exc.exit_code
    finally:  # set once its options are read: they become the config, which knows no such key
        args.skip_teardown = launch.under_agent()  # a torchrun worker: see cli/commands.main


def train_here(args: argparse.Namespace, job) -> int:
    """Train in this process: alone, or as process `job.rank` of the ones torchrun started."""
    from pathlib import Path

    from ptflow.training import distributed as dist

    # Under torchrun the processes join first, so that the main one decides for all of them.
    with dist.joined(job, args.dist_timeout):
        decided = dist.share_json_from_main(lambda: decide(args))
        from ptflow.console import info

        if "finished" in decided:
            info(f"{decided['finished']} has finished already (a process failed after its end)")
            return 0
        config = TrainConfig.from_dict(decided["config"])
        if args.print_config:
            from ptflow.cli import configfile

            info(configfile.dump(config.to_dict(), configfile.output_format(args.print_config, args.config)).rstrip())
            return 0
        check_train_outputs(config)
        from ptflow.training import train

        run_dir = Path(decided["run_dir"]) if decided["run_dir"] else None
        # Code named on this command line is the user's own choice; code named by a run folder's
        # config (on --resume) is imported only with --trust_model_code.
        trust = args.trust_model_code or args.resume is None
        if config.folds and config.fold is None and run_dir is None:  # a resumed run continues itself alone
            if dist.launched():
                raise UsageError("--folds trains its folds one after another in one process: run it without "
                                 "torchrun or --nproc_per_node")
            from ptflow.training import folds

            say_next(config, folds.cross_validate(config, trust_code=trust)["run_dir"])
            return 0
        metrics = train.train_model(config, resume_from=run_dir, allow_changed_code=args.allow_changed_code,
                                    trust_code=trust)
        say_next(config, metrics["run_dir"])
    return 0


def say_next(config: TrainConfig, run_dir: str) -> None:
    """The commands that use the model just trained, with its real paths: what a user types next."""
    if config.verbose < 1:
        return
    import shlex
    from pathlib import Path

    from ptflow.console import info

    model = config.model_fn or str(Path(run_dir) / "model.safetensors")
    commands = [(["ptflow", "evaluate", "--model_fn", model], "test-split metrics, per class, and pictures"),
                (["ptflow", "report", run_dir], "the run as one HTML page"),
                (["ptflow", "serve", "--model_fn", model], "a web page and REST API that predict with it")]
    lines = [shlex.join(command) for command, _ in commands]
    width = max(map(len, lines))
    info("Next:\n" + "\n".join(f"  {line.ljust(width)}  # {why}" for line, (_, why) in zip(lines, commands)))


def warn_ignored_ranks() -> None:
    """A Kubernetes PyTorchJob pod or a SLURM wrapper may set RANK and WORLD_SIZE for a command that
    torchrun did not start: such a process trains alone, and says so, once."""
    import os

    from ptflow.console import warn

    given = [name for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK") if name in os.environ]
    if given:
        warn(f"{', '.join(given)} in the environment ignored: torchrun did not start this process, so it trains "
             f"alone (`ptflow train --nproc_per_node N` or torchrun train on several processes)")


def decide(args: argparse.Namespace) -> dict:
    """The config, and the run folder to continue (--resume, or this job's own after torchrun
    restarted it), as JSON: made by the main process and shared with the others."""
    from pathlib import Path

    from ptflow.training import distributed as dist
    from ptflow.training import resume, runs

    values = train_values(args, OWN_OPTIONS)
    restarting = dist.restart_count() > 0
    spec = args.resume
    if spec is None and dist.max_restarts() > 0:
        if not values.get("run_name"):
            raise UsageError("with torchrun --max_restarts, pass --run_name, so that a restarted job finds its run "
                             "folder (`ptflow train --nproc_per_node N` names it for you)")
        previous = Path(values.get("runs_dir", TrainConfig.runs_dir)) / values["run_name"]
        spec = str(previous) if restarting and runs.is_run(previous) else None
    if spec is None:
        return {"config": TrainConfig.from_dict(values).to_dict(), "run_dir": None}
    if restarting:
        run_dir = runs.find(spec, values.get("runs_dir", TrainConfig.runs_dir))
        if runs.status(runs.read_json(run_dir / "run.json") or {}) == "finished":
            return {"finished": str(run_dir)}
    run_dir, config = resume.resolve(spec, values, restarting=restarting)
    return {"config": config.to_dict(), "run_dir": str(run_dir)}


def start_processes(args: argparse.Namespace, launcher: dict) -> int:
    """Start the processes through torchrun, after checking everything they would check."""
    from pathlib import Path

    from ptflow.console import held_warnings
    from ptflow.devices import resolve_device
    from ptflow.training import ddp, launch, precision, runs
    from ptflow.training import distributed as dist

    if dist.launched():
        raise UsageError(f"--{next(iter(launcher))} starts processes, but torchrun started this one: "
                         f"give the launcher flags to torchrun")
    if "nproc_per_node" not in launcher:
        raise UsageError(f"--{next(iter(launcher))} needs --nproc_per_node")
    plan = launch.Plan(**launcher)
    plan.check()
    with held_warnings():  # the main process says them when it resolves the same config
        decided = decide(args)  # a usage error is said once, here, rather than by every process
    if decided.get("run_dir"):
        runs.release(Path(decided["run_dir"]))  # the run's lock is for the process that will train it
    config = TrainConfig.from_dict(decided["config"])
    check_train_outputs(config)
    device = resolve_device(config.device_name())
    ddp.check(config, device.type, plan.world_size)
    precision.check(config.precision, device)
    if device.type == "cuda":
        import torch

        if plan.nproc_per_node > torch.cuda.device_count():
            raise UsageError(f"--nproc_per_node {plan.nproc_per_node}, but this machine has "
                             f"{torch.cuda.device_count()} GPU(s): one process per GPU")
    run_name = None
    if decided["run_dir"] is None and config.run_name is None:
        if plan.nnodes > 1 and plan.max_restarts:
            raise UsageError("with --nnodes > 1 and --max_restarts, pass the same --run_name on every machine, so "
                             "that a restarted job finds its run folder")
        run_name = runs.default_name(config.runs_dir, config.dataset, config.model)  # restarts find it by name
    run_dir = Path(decided["run_dir"] or Path(config.runs_dir) / (config.run_name or run_name))
    if decided["run_dir"] is None and run_dir.exists():
        raise runs.taken(run_dir)
    return launch.launch_workers(plan, ["train", *worker_flags(args, run_name)], run_dir)


def worker_flags(args: argparse.Namespace, run_name: str | None) -> list[str]:
    """This command's flags for the processes torchrun starts: all but the launcher's."""
    import json

    flags = []
    for key, value in vars(args).items():
        if key in ("command", "handler", "print_config", *LAUNCH_OPTIONS) or value is None or value is False:
            continue
        if value is True:
            flags.append(f"--{key}")
        elif isinstance(value, list):
            flags.append(f"--{key}={','.join(map(str, value))}")
        else:
            flags.append(f"--{key}={json.dumps(value) if isinstance(value, dict) else value}")
    return flags + ([f"--run_name={run_name}"] if run_name else [])
