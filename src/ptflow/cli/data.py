"""`ptflow data NAME`: look at a dataset before training on it."""

from __future__ import annotations

from ptflow.cli.common import check_output
from ptflow.config import TrainConfig, help_of

DEFAULTS = TrainConfig()


def register(commands) -> None:
    p = commands.add_parser("data", help="look at a dataset: splits, class counts, statistics, samples")
    p.add_argument("name", metavar="NAME", help=help_of("dataset"))
    p.add_argument("--data_dir", metavar="DIR", help=help_of("data_dir"))
    p.add_argument("--target", metavar="COLUMN", help=help_of("target"))
    for name in ("train_ratio", "test_ratio", "seed", "max_bad_fraction"):
        value = getattr(DEFAULTS, name)
        p.add_argument(f"--{name}", type=type(value), default=value, help=f"{help_of(name)} (default: {value})")
    p.add_argument("--bad_images", choices=("fail", "skip"), default=DEFAULTS.bad_images,
                   help=f"{help_of('bad_images')} (default: {DEFAULTS.bad_images})")
    p.add_argument("--out", metavar="PNG", help="sample grid file (default: NAME-samples.png)")
    p.set_defaults(handler=run)


def run(args) -> int:
    config = TrainConfig.from_dict({"dataset": args.name, "train_ratio": args.train_ratio,
                                    "test_ratio": args.test_ratio, "seed": args.seed,
                                    "bad_images": args.bad_images, "max_bad_fraction": args.max_bad_fraction})
    check_output(args.out, "--out")
    from ptflow.reports import explore

    explore.explore_dataset(config.dataset, args.data_dir, args.target, config.train_ratio, config.test_ratio,
                            config.seed, args.out, bad_images=config.bad_images,
                            max_bad_fraction=config.max_bad_fraction)
    return 0
