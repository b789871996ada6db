"""`ptflow train --nproc_per_node N`: start the training processes through torch.distributed.run.

This is `torchrun --nproc_per_node N -m ptflow train ...` run for the user, inside this process,
so that a failure ends in one line that says which process failed and how, rather than
torchrun's report. torchrun's own agent does the work: it starts the processes, sets their
RANK, LOCAL_RANK and WORLD_SIZE, meets the other machines (--nnodes) at a rendezvous, restarts
every process after a failure (--max_restarts), and forwards Ctrl-C and SIGTERM.

One machine uses a standalone rendezvous on a free local port. Several machines meet at
--rdzv_endpoint: c10d's dynamic rendezvous (any machine may host rank 0), or, with --node_rank,
a fixed one in which machine 0 hosts it.

The processes' side of the arrangement is here too: each dies with the launcher that started it
(`die_with_launcher`), and a failure that torchrun will recover from (a restart) or report itself
(a process lost) is said by the processes as a note, not an error (`note_for`): a failed job ends
with one "error:" line, and a recovered one with none.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shlex
import signal
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ptflow.errors import PtflowError, UsageError, first_line
from ptflow.training import distributed as dist

RDZV_ID = "ptflow"  # the same on every machine of a job; the endpoint tells jobs apart
PR_SET_PDEATHSIG = 1  # Linux's prctl option, from <sys/prctl.h>


@dataclass
class Plan:
    nproc_per_node: int
    nnodes: int = 1
    node_rank: int | None = None
    rdzv_endpoint: str | None = None
    max_restarts: int = 0

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def check(self) -> None:
        if self.nproc_per_node < 1:
            raise UsageError(f"--nproc_per_node must be >= 1, got {self.nproc_per_node}")
        if self.nnodes < 1:
            raise UsageError(f"--nnodes must be >= 1, got {self.nnodes}")
        if self.max_restarts < 0:
            raise UsageError(f"--max_restarts must be >= 0, got {self.max_restarts}")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise UsageError("--nnodes > 1 needs --rdzv_endpoint HOST:PORT, where the machines meet")
        if self.node_rank is not None and not 0 <= self.node_rank < self.nnodes:
            raise UsageError(f"--node_rank must be in 0..{self.nnodes - 1}, got {self.node_rank}")
        if self.rdzv_endpoint is not None:
            host, _, port = self.rdzv_endpoint.rpartition(":")
            if not host or not port.isdigit():
                raise UsageError(f"--rdzv_endpoint must be HOST:PORT, got {self.rdzv_endpoint!r}")

    def torchrun_args(self, worker_args: list[str]) -> list[str]:
        """torch.distributed.run's command line for `python -m ptflow WORKER_ARGS...`."""
        args = [f"--nproc_per_node={self.nproc_per_node}", f"--nnodes={self.nnodes}",
                f"--max_restarts={self.max_restarts}"]
        if self.rdzv_endpoint is None:
            args.append("--standalone")
        elif self.node_rank is not None:
            args += ["--rdzv_backend=static", f"--rdzv_endpoint={self.rdzv_endpoint}", f"--node_rank={self.node_rank}"]
        else:
            args += ["--rdzv_backend=c10d", f"--rdzv_endpoint={self.rdzv_endpoint}", f"--rdzv_id={RDZV_ID}"]
        return [*args, "--module", "ptflow", *worker_args]


def threads_per_process(nproc_per_node: int) -> int:
    """Intra-op threads per process: this machine's cores shared out (torchrun would give each 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // nproc_per_node)


def die_with_launcher() -> None:
    """Have the kernel send this process SIGTERM when the launcher that started it dies (Linux).

    torchrun stops its processes when it is stopped by a signal it can catch, but nothing is left
    to do so after `kill -9` (or the OOM killer) ends it: the processes would go on training as
    orphans, holding the run's lock, the CPUs and the GPUs. prctl(PR_SET_PDEATHSIG) is the kernel's
    own guard and needs no process alive to act. SIGTERM, not SIGKILL: the processes then stop
    together at the next step, as on Ctrl-C, and leave the run "interrupted" and resumable.
    The signal comes when the thread that started this process ends (torchrun's main thread), and
    again each time another thread of the dying launcher that took the process over ends: the
    kernel hands a dead thread's children to a live thread of the same process first. The launcher
    runs torchrun's agent in 4 threads (torch 2.13), so a process gets 1 to 4 SIGTERMs, spread out
    when the CPUs are busy; interrupt.stop_gracefully ignores those that come after the stop. Other systems have no such
    call; there a launcher killed with -9 still leaves its processes running.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        return  # not allowed here (a sandbox): the processes then outlive a killed launcher, as before
    if os.getppid() != parent:  # the launcher died before the call took effect
        os.kill(os.getpid(), signal.SIGTERM)


def note_for(error: Exception, job: dist.Job) -> str | None:
    """What a process of `job` that torchrun started says about an error that does not end the job,
    or None for one that does (it is then printed as the job's error).

    With restarts left, torchrun restarts every process and the run goes on from its last
    checkpoint, so no error is final. A lost peer (another process died or hung) is the
    consequence of a failure that torchrun's agent reports itself, naming the process that failed
    first (ptflow's launcher in its one "error:" line).
    """
    if not under_agent():
        return None
    lost_peer = isinstance(error, dist.LostPeer)
    text = str(error) if lost_peer else f"process {job.rank} of {job.world_size}: {error}"
    if job.max_restarts > job.restart_count:
        return f"{text}; torchrun restarts every process (restart {job.restart_count + 1} of {job.max_restarts})"
    return text if lost_peer else None


def under_agent() -> bool:
    """Whether torchrun's agent (ptflow's launcher, or torchrun itself) started this process."""
    return dist.launched()


def launch_workers(plan: Plan, worker_args: list[str], run_dir: Path) -> int:
    """Start the processes and wait for them; the exit status of the job. run_dir: the run's
    folder, named in the message that says how to continue a failed job."""
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous import RendezvousError
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as torchrun

    _quiet_torchrun()
    try:
        with _environment(plan):
            torchrun(get_args_parser().parse_args(plan.torchrun_args(worker_args)))
    except ChildFailedError as exc:
        return _report(exc, plan, run_dir)
    except RendezvousError as exc:
        raise PtflowError(f"the {plan.nnodes} machines did not meet at {plan.rdzv_endpoint}: "
                          f"{first_line(exc)}") from None
    except SignalException as exc:  # Ctrl-C or SIGTERM here: torchrun stopped the processes with it,
        return 128 + int(exc.sigval)  # and the main one said how to continue
    return 0


@contextmanager
def _environment(plan: Plan):
    """What torchrun passes on to the processes, set while it runs (unless the user set it)."""
    values = {
        "OMP_NUM_THREADS": str(threads_per_process(plan.nproc_per_node)),
        # torchrun's agent shares its rendezvous store with the processes by default, and processes
        # restarted after a failure then read their predecessors' addresses from it and cannot
        # connect (pytorch/pytorch#135712, still so in torch 2.13): give each attempt its own store.
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
    }
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _quiet_torchrun() -> None:
    """torchrun logs each step of its agent and each failure, as warnings and errors on loggers of
    their own levels; the failure is summed up in one line instead."""
    import torch.distributed.elastic.agent.server.local_elastic_agent  # noqa: F401  (creates its loggers)

    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed.elastic", "torch.distributed.run", "torch.distributed.launcher")):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _report(exc, plan: Plan, run_dir: Path) -> int:
    """One line for a failed job: which process failed first, and how.

    A process killed by a signal comes first: it could say nothing itself, and the others failed
    because they lost it (torchrun's first failure is by timestamps in whole seconds, so a process
    that exited on losing a peer in the same second may come before the one that was killed).
    Killed by SIGTERM comes last among those: torchrun stops the survivors with it.
    """
    codes = {f.exitcode for f in exc.failures.values()}
    stopped = codes & {128 + signal.SIGINT, 128 + signal.SIGTERM}
    # A signal to one process stopped them all, and the main one said how to continue. torchrun
    # SIGTERMs those still exiting when the first one has ended: killed by it, they stopped too.
    if stopped and codes <= stopped | {-signal.SIGINT, -signal.SIGTERM}:
        return max(stopped)
    killed = {r: f for r, f in exc.failures.items() if f.exitcode < 0}
    if killed:
        rank, failure = min(killed.items(), key=lambda item: (item[1].exitcode == -signal.SIGTERM,
                                                              item[1].timestamp, item[0]))
    else:
        rank, failure = exc.get_first_failure()
    if failure.exitcode < 0:
        how = f"was killed by {signal.Signals(-failure.exitcode).name}"
    else:
        how = f"exited with status {failure.exitcode}"
    restarts = f" after {plan.max_restarts} restart(s)" if plan.max_restarts else " (no --max_restarts)"
    from ptflow.training.checkpoint import CHECKPOINT

    hint = ""
    if (run_dir / CHECKPOINT).is_file():
        hint = (f"; its last checkpoint is kept: ptflow train --resume {shlex.quote(str(run_dir))} "
                f"--nproc_per_node {plan.nproc_per_node}")
    print(f"ptflow train: error: process {rank} of {plan.world_size} (pid {failure.pid}) {how}{restarts}{hint}",
          file=sys.stderr)
    return failure.exitcode if failure.exitcode > 0 else 1
