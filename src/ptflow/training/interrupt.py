"""Ctrl-C and SIGTERM during training: finish the current step, then stop cleanly.

The handlers only set a flag. The training loop calls `check()` after every step (a read of a
Python global: no device sync) and at every epoch end, and `check()` raises `Interrupted` once a
signal has come. The run then saves its position inside the epoch with the checkpoint
(checkpoint.py, loop.EpochPosition) and is resumed at the next batch, exactly.

A second signal raises at once, wherever the program is: every file is written atomically, so
the last checkpoint stays intact (as it does under `kill -9`).

Several processes (torch.distributed) stop together: `check()` is then an all-reduce of every
process's flag, so a signal to any one of them stops all at the same step boundary, with the
same exit status. There a second signal does not raise at once: torchrun forwards the signals
it receives, so a Ctrl-C in a terminal reaches each worker twice (from the terminal and from
torchrun); a worker that does not stop is killed by torchrun after its shutdown timeout. Once
they have stopped, further signals are ignored, so that each records its stop before it exits.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from ptflow.training import distributed as dist

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_requested: int | None = None  # the signal number that asked training to stop, if any
_collective = False  # several processes: check() agrees with the others (an all-reduce)


class Interrupted(KeyboardInterrupt):
    """Training stopped on a signal; the process should exit with 128 + the signal's number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


def _handle(signum: int, frame) -> None:
    global _requested
    if _requested is not None and not _collective:  # asked twice: stop now, not after the step
        raise Interrupted(signum)
    _requested = _requested or signum


def check() -> None:
    """Raise `Interrupted` if a signal asked training to stop (any process's, with several)."""
    if _collective:
        signum = dist.agree_max(_requested or 0)  # every process calls check() at the same points
        if signum:
            raise Interrupted(signum)
    elif _requested is not None:
        raise Interrupted(_requested)


@contextmanager
def stop_gracefully():
    """While inside, SIGINT and SIGTERM ask the loop to stop at the next `check()`.

    Handlers can only be installed from the main thread; elsewhere (a sweep running trials in
    threads, say) the signals keep their usual behaviour.
    """
    global _requested, _collective
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested, _collective = None, dist.is_distributed()
    previous = {s: signal.signal(s, _handle) for s in SIGNALS}
    try:
        yield
    except Interrupted:
        if _collective:
            # One of several processes is stopping; its caller records the stop (run.json, the
            # resume hint) after this. A later signal must not kill it first: torchrun forwards
            # the ones it gets, and a killed launcher's death signal comes again for each of its
            # threads that exits (launch.die_with_launcher). Ignored until the process ends.
            previous = dict.fromkeys(SIGNALS, signal.SIG_IGN)
        raise
    finally:
        for s, handler in previous.items():
            if handler is not None:  # None: a handler installed from C, which Python cannot restore
                signal.signal(s, handler)
        _requested, _collective = None, False
