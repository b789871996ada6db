"""`ptflow data NAME`: look at a dataset before training on it.
`ptflow data pack folder:SRC --out DIR`: write it as tar shards for `--dataset shards:DIR` (data/pack.py)."""

from __future__ import annotations

from ptflow.cli.common import check_output
from ptflow.config import TrainConfig, help_of
from ptflow.errors import UsageError

DEFAULTS = TrainConfig()


def register(commands) -> None:
    p = commands.add_parser("data", help="look at a dataset: splits, class counts, statistics, samples")
    p.add_argument("name", metavar="NAME", help=f"{help_of('dataset')}; or `pack` to write shards of SRC")
    p.add_argument("source", metavar="SRC", nargs="?", help="with `pack`: the folder:PATH dataset to write as shards")
    p.add_argument("--data_dir", metavar="DIR", help=help_of("data_dir"))
    p.add_argument("--target", metavar="COLUMN", help=help_of("target"))
    for name in ("train_ratio", "test_ratio", "seed", "max_bad_fraction"):
        value = getattr(DEFAULTS, name)
        p.add_argument(f"--{name}", type=type(value), default=value, help=f"{help_of(name)} (default: {value})")
    p.add_argument("--bad_images", choices=("fail", "skip"), default=DEFAULTS.bad_images,
                   help=f"{help_of('bad_images')} (default: {DEFAULTS.bad_images})")
    p.add_argument("--out", metavar="PATH", help="sample grid file (default: NAME-samples.png); "
                   "with `pack`: the new folder of shards")
    p.add_argument("--shard_size", type=int, default=None, metavar="N",
                   help="with `pack`: examples per shard (default: 10000)")
    p.set_defaults(handler=run)


def run(args) -> int:
    if args.name == "pack":
        return pack(args)
    if args.source is not None or args.shard_size is not None:
        raise UsageError(f"ptflow data {args.name}: SRC and --shard_size go with `ptflow data pack` only")
    config = TrainConfig.from_dict({"dataset": args.name, "train_ratio": args.train_ratio,
                                    "test_ratio": args.test_ratio, "seed": args.seed,
                                    "bad_images": args.bad_images, "max_bad_fraction": args.max_bad_fraction})
    check_output(args.out, "--out")
    from ptflow.reports import explore

    explore.explore_dataset(config.dataset, args.data_dir, args.target, config.train_ratio, config.test_ratio,
                            config.seed, args.out, bad_images=config.bad_images,
                            max_bad_fraction=config.max_bad_fraction)
    return 0


def pack(args) -> int:
    if args.source is None or args.out is None:
        raise UsageError("ptflow data pack: give the dataset and the folder to write: pack folder:SRC --out DIR")
    check_output(args.out, "--out", folder=True)
    from ptflow.data.pack import DEFAULT_SHARD_SIZE, pack

    pack(args.source, args.out, args.shard_size if args.shard_size is not None else DEFAULT_SHARD_SIZE)
    return 0
