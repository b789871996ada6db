"""`ptflow models [--filter PATTERN]`: the models --model takes, with their parameter counts."""

from __future__ import annotations

from ptflow.errors import UsageError

LIMIT = 50  # rows shown by default: timm alone has over a thousand architectures


def register(commands) -> None:
    p = commands.add_parser("models", help="the models --model takes: built-ins, plugins, timm:NAME",
                            description="List the built-in networks, installed plugins (entry points "
                                        "ptflow.models) and timm architectures (timm:NAME, with the vision extra), "
                                        "with parameter counts: built-ins and plugins for 1x28x28 inputs and 10 "
                                        "classes, timm models at their own defaults (1,000 classes).")
    p.add_argument("--filter", metavar="PATTERN", help="shell-style pattern of names, e.g. 'resnet*' (quote it)")
    p.add_argument("--limit", type=int, default=LIMIT, metavar="N", help=f"show at most N models (default: {LIMIT})")
    p.set_defaults(handler=run)


def run(args) -> int:
    if args.limit < 1:
        raise UsageError(f"--limit must be >= 1, got {args.limit}")
    from ptflow.config import TrainConfig
    from ptflow.models.catalog import listing

    entries, more, note = listing(args.filter, args.limit, TrainConfig().to_dict())
    width = max([len(e.name) for e in entries] + [5])
    print(f"{'model':<{width}}  {'kind':<7}  {'parameters':>12}")
    for e in entries:
        count = f"{e.parameters:,}" if e.parameters is not None else "?"
        print(f"{e.name:<{width}}  {e.kind:<7}  {count:>12}")
    if not entries:
        print(f"(no model matches {args.filter!r})")
    if more:
        print(f"... and {more} more (--limit, --filter)")
    if note:
        print(note)
    return 0
