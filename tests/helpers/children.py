"""The real `ptflow` CLI in child processes, started in milliseconds instead of seconds.

A fresh `python -m ptflow` spends ~1.5 s of CPU importing torch. The suites that run the CLI
hundreds of times (hostile inputs, kill -9 loops) use multiprocessing's "forkserver": one server
process imports torch and ptflow once, without running any torch operation (so forking it is
safe), and forks a child per command. Each child is a real process running `ptflow.cli.commands`
with its own working folder, environment, argv and stdout/stderr files; an exception that
escapes main() is printed as a traceback and exits 1, as the interpreter would do. A child can
be sent SIGKILL at any moment, and `fault` makes it kill itself at a chosen file operation
(see _install_fault): both are real `kill -9`s, from outside or inside.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PRELOAD = ["helpers.children", "ptflow.cli", "torch", "numpy", "safetensors.torch", "PIL.Image",
           "ptflow.training.train", "ptflow.reports.evaluate", "ptflow.reports.predict", "ptflow.models.export",
           "matplotlib.pyplot"]  # headless here, so Agg, as ptflow.plots sets
_context = None


def context():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


@dataclass
class Result:
    code: int | None  # the exit status; -9 when killed
    out: str
    err: str


class Child:
    """One `ptflow ARGS` in a child process; wait() for its Result, or kill() it."""

    def __init__(self, args, cwd: Path, env: dict | None = None, fault: dict | None = None):
        cwd = Path(cwd)
        cwd.mkdir(parents=True, exist_ok=True)
        self.out, self.err = (Path(tempfile.mkstemp(prefix=f"ptflow-{name}-")[1]) for name in ("out", "err"))
        argv = [str(a) for a in args]
        self.process = context().Process(target=_main, args=(argv, str(cwd), env or {}, str(self.out),
                                                             str(self.err), fault))
        self.process.start()

    def kill(self) -> None:
        if self.process.pid is not None:
            try:
                os.kill(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float = 120) -> Result:
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.kill()
            self.process.join()
            raise TimeoutError(f"ptflow did not finish within {timeout} s")
        result = Result(self.process.exitcode, _read(self.out), _read(self.err))
        self.process.close()
        return result


def run(args, cwd: Path, env: dict | None = None, fault: dict | None = None, timeout: float = 120) -> Result:
    return Child(args, cwd, env, fault).wait(timeout)


def _read(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    path.unlink()
    return text


def _main(argv: list[str], cwd: str, env: dict, out: str, err: str, fault: dict | None) -> None:
    """In the child: the working folder, environment and output files of a fresh process, then main()."""
    os.chdir(cwd)
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = ["ptflow", *argv]
    import torch

    # One thread by default: these runs are tiny, and on a loaded machine two threads that
    # spin-wait for each other made a 1-second run take 10 to 25 seconds. A run compared bit for
    # bit with one trained elsewhere (in the test's own process) passes --num_threads on both
    # sides: matrix products round differently on another number of threads.
    torch.set_num_threads(1)
    if fault:
        _install_fault(**fault)
    from ptflow.cli import main

    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


def _install_fault(call: str, index: int, stage: str = "before", until: str | None = None) -> None:
    """SIGKILL this process at its index-th (1-based) call of os.replace or os.fsync.

    call="replace": stage "before" dies with the new file complete in its temporary name, "after"
    right after it took the target's name. call="fsync": the temporary file is cut to half its
    size first, then the process dies: a write torn by a crash. stage="pause" does not kill:
    it waits there until the file `until` exists (to hold a run at a known point).
    """
    original = {"replace": os.replace, "fsync": os.fsync}[call]
    count = [0]

    def faulty(*args, **kwargs):
        count[0] += 1
        if count[0] == index and stage == "pause":
            deadline = time.monotonic() + 60
            while not os.path.exists(until) and time.monotonic() < deadline:
                time.sleep(0.02)
            return original(*args, **kwargs)
        if count[0] == index:
            if call == "fsync" and os.readlink(f"/proc/self/fd/{args[0]}").endswith(".tmp"):
                os.ftruncate(args[0], os.fstat(args[0]).st_size // 2)  # only a file still being written
            if stage == "before" or call == "fsync":
                os.kill(os.getpid(), signal.SIGKILL)
            result = original(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
            return result
        return original(*args, **kwargs)

    setattr(os, call, faulty)
