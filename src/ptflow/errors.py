"""The two kinds of error a user can cause, and the exit status each one maps to.

Anything raised as one of these is printed as a single line by the CLI, without a traceback.
"""


class PtflowError(Exception):
    """Something in the world is wrong (a missing or corrupt file, no CUDA): exit status 1."""

    exit_code = 1


class UsageError(PtflowError):
    """The command line or config asked for something impossible: exit status 2."""

    exit_code = 2


class RunStopped(Exception):
    """Raised by a training callback to end a run on purpose (a sweep pruning a trial).

    Not an error: the run folder is marked with `status` rather than failed.
    """

    status = "stopped"


def first_line(exc: BaseException) -> str:
    """Another library's exception as one line, for wrapping it in a PtflowError."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def shown(value) -> str:
    """A value as an error message shows it: its repr, cut to 60 characters (a hostile or mistaken
    value may be megabytes long)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
