"""`ptflow runs`, `ptflow runs show RUN`, `ptflow runs compare RUN RUN...`: the run history."""

from __future__ import annotations

import argparse

from ptflow.cli.common import Parser, check_output

RUNS_DIR_HELP = "folder of run folders (default: runs)"
JSON_HELP = "print one JSON document instead of tables (numbers unrounded, with the 95%% intervals)"


def register(commands) -> None:
    p = commands.add_parser("runs", help="past runs as a table; `runs show RUN`, `runs compare RUN RUN...`",
                            description="List the runs in --runs_dir: id, start, dataset, model, the hyperparameters "
                                        "that differ, best validation loss, test accuracy, duration and status.")
    p.add_argument("--runs_dir", default="runs", metavar="DIR", help=RUNS_DIR_HELP)
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(runs_command=None, handler=run)
    sub = p.add_subparsers(dest="runs_command", metavar="{show,compare}", parser_class=Parser)
    s = sub.add_parser("show", help="one run: status, metrics per epoch, config")
    s.add_argument("run", metavar="RUN", help="a run folder, or a run id in --runs_dir")
    s.add_argument("--runs_dir", default=argparse.SUPPRESS, metavar="DIR", help=RUNS_DIR_HELP)
    s.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)
    s = sub.add_parser("compare", help="runs side by side: config differences, metrics, learning curves in one PNG")
    s.add_argument("runs", nargs="+", metavar="RUN", help="two or more run folders or run ids")
    s.add_argument("-o", "--out", metavar="PNG",
                   help="the overlaid learning curves (default: compare.png; with --json, only if given)")
    s.add_argument("--runs_dir", default=argparse.SUPPRESS, metavar="DIR", help=RUNS_DIR_HELP)
    s.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)


def run(args) -> int:
    from ptflow.reports import history

    if args.runs_command == "show":
        history.show(args.run, args.runs_dir, args.json)
    elif args.runs_command == "compare":
        out = args.out if args.out is not None or args.json else "compare.png"
        if out is not None:
            check_output(out, "--out")
        history.compare(args.runs, args.runs_dir, out, args.json)
    else:
        history.table(args.runs_dir, args.json)
    return 0
