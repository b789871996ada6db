"""The two kinds of error a user can cause, and the exit status each one maps to.

Anything raised as one of these is printed as a single line by the CLI, without a traceback.
"""


class PtflowError(Exception):
    """Something in the world is wrong (a missing or corrupt file, no CUDA): exit status 1."""

    exit_code = 1


class UsageError(PtflowError):
    """The command line or config asked for something impossible: exit status 2."""

    exit_code = 2
