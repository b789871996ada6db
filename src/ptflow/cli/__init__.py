"""The `ptflow` command line: parse flags into plain values, hand them to the layers below.

`commands.py` builds the parser from the command modules beside it (one per sub-command) and runs
the chosen one; `common.py` holds what several commands share; `configfile.py` reads and writes
`--config` files.
"""

from ptflow.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
