"""The `ptflow` command: one sub-command per module of this folder, each registering itself.

A command module defines `register(commands)`, which adds its parser (flags beside the code that
reads them) and sets `handler`; the handler imports the layer it drives (and torch) only when it
runs, so `ptflow --help` answers at once. Adding a command is one module, named as the command,
and one entry below.

Only the command being run gets its flags: the others are named with their help line and no
more (see `_NameOnly`), which keeps `ptflow --help` and every command's start-up from building
some 170 flags, and importing what they are made from, for nothing.
"""

from __future__ import annotations

import os
import sys

from ptflow.cli import data, evaluate, export, models, predict, report, runs, serve, sweep, train
from ptflow.cli.common import Parser
from ptflow.errors import PtflowError

__all__ = ["build_parser", "main"]

COMMANDS = (train, evaluate, predict, serve, export, data, sweep, runs, report, models)


def build_parser(argv: list[str] | None = None) -> Parser:
    """The whole parser; given the command line, one whose other commands carry only their names."""
    from ptflow import __version__

    parser = Parser(prog="ptflow", description="Train, evaluate and use classifiers from the command line.")
    parser.add_argument("--version", action="version", version=f"ptflow {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    # The top level has no option that takes a value, so the first word not starting with "-" is the command.
    chosen = next((arg for arg in argv if not arg.startswith("-")), None) if argv is not None else ...
    for command in COMMANDS:
        if chosen is ... or chosen == name_of(command):
            command.register(commands)
            continue
        try:
            command.register(_NameOnly(commands))
        except _Named:
            pass
    return parser


def name_of(command) -> str:
    """A command is named after its module (cli/train.py is `ptflow train`)."""
    return command.__name__.rpartition(".")[2]


class _Named(Exception):
    pass


class _NameOnly:
    """What a command's register() gets when another command runs: its add_parser() adds the
    command's name and help line (for `ptflow --help` and "invalid choice" errors), then stops
    register() there."""

    def __init__(self, commands):
        self.commands = commands

    def add_parser(self, name: str, **kwargs):
        self.commands.add_parser(name, **kwargs)
        raise _Named


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
    """The `ptflow` program (argv None: this process's own command line), or one command in-process."""
    whole_process = argv is None
    argv = normalize_flags(sys.argv[1:] if argv is None else list(argv))
    try:
        args = build_parser(argv).parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: return the status, don't raise it
        return int(exc.code or 0)
    from ptflow.console import terminal_safe  # here, not at the top: `ptflow --help` never needs it

    # An error or interrupt leaving a process of a training job says which process it is (`where`),
    # and one that every process of the job has is `silent` on all but rank 0 (training/distributed.py).
    code = _handle(args, terminal_safe)
    if whole_process and getattr(args, "skip_teardown", False):
        # A process torchrun started has stopped and written everything; the interpreter's teardown
        # can still abort it (std::terminate in a C++ thread of the process group), which torchrun
        # would report as a failure of a job that ended cleanly.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _handle(args, terminal_safe) -> int:
    """Run the command; its exit status, with errors and interrupts as one line."""
    try:
        return args.handler(args)
    except PtflowError as exc:
        if not getattr(exc, "silent", False):
            # One line whatever the message holds: a file name with a newline would forge a second.
            print(f"ptflow {args.command}: error: {getattr(exc, 'where', '')}{terminal_safe(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        if not getattr(exc, "silent", False):
            print(f"ptflow {args.command}: interrupted", file=sys.stderr)
        return getattr(exc, "exit_code", 130)  # 143 after SIGTERM (interrupt.Interrupted)
    except BrokenPipeError:  # output piped into `head` and friends: not an error worth a traceback
        sys.stdout = open(os.devnull, "w")
        return 141
