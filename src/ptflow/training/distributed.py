"""Which process is which in a training job, and what the processes of one job share.

One process trains by default. Under torchrun (which `ptflow train --nproc_per_node N` calls for
the user) each `ptflow train` process reads its RANK, LOCAL_RANK and WORLD_SIZE once, checks them
(`job_from_environment`), and is that rank of the job while inside `joined(job)`: it joins one
torch.distributed process group (gloo for CPU tensors, NCCL for CUDA tensors), and only the main
process (global rank 0) prints and writes files (main_process.py). Only that command reads these
variables, and only when torchrun started it (TORCHELASTIC_RUN_ID is set): a RANK left in the
environment by a Kubernetes pod or a SLURM wrapper means nothing to any other command.

Decisions that read files (which config, which run folder, the checkpoint's bytes) are made by
the main process alone and shared with `share_from_main`, so that a machine that sees other
files (or none) cannot make the processes disagree; an error there reaches every process as the
same error, and is printed once.

Every collective here is a no-op for a single process, and torch is imported inside the
functions: `ptflow --help` must not import torch.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

from ptflow import main_process
from ptflow.config import DIST_TIMEOUT as DEFAULT_TIMEOUT
from ptflow.errors import PtflowError, UsageError, first_line, shown

TORCHRUN_MARK = "TORCHELASTIC_RUN_ID"  # set by torchrun in every process it starts, and by nothing else


@dataclass(frozen=True)
class Job:
    """This process's place in its training job: one process unless torchrun started several."""
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1  # processes of this job on this machine
    restart_count: int = 0  # how many times torchrun has restarted the workers (--max_restarts)
    max_restarts: int = 0


_job = Job()  # the job this process is in now: set by joined(), for `ptflow train` under torchrun only


def launched() -> bool:
    """Whether torchrun started this process (a launcher must not start another)."""
    return TORCHRUN_MARK in os.environ


def job_from_environment() -> Job:
    """The job torchrun put this process in, from the variables it sets; one process when torchrun
    did not start it. A malformed value is a one-line usage error, never a traceback."""
    if not launched():
        return Job()
    world_size = _variable("WORLD_SIZE", 1, low=1)
    local_world_size = _variable("LOCAL_WORLD_SIZE", world_size, low=1)
    job = Job(rank=_variable("RANK", 0, low=0), local_rank=_variable("LOCAL_RANK", 0, low=0), world_size=world_size,
              local_world_size=local_world_size, restart_count=_variable("TORCHELASTIC_RESTART_COUNT", 0, low=0),
              max_restarts=_variable("TORCHELASTIC_MAX_RESTARTS", 0, low=0))
    if job.rank >= job.world_size:
        raise UsageError(f"RANK={job.rank} in the environment must be below WORLD_SIZE={job.world_size}")
    if job.local_world_size > job.world_size or job.local_rank >= job.local_world_size:
        raise UsageError(f"LOCAL_RANK={job.local_rank} and LOCAL_WORLD_SIZE={job.local_world_size} in the environment "
                         f"do not fit WORLD_SIZE={job.world_size}")
    return job


def _variable(name: str, default: int, low: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or int(text) < low:
        raise UsageError(f"{name}={shown(text)} in the environment (torchrun started this process) must be a "
                         f"whole number >= {low}")
    return int(text)


@contextmanager
def joined(job: Job, timeout: float = DEFAULT_TIMEOUT):
    """Be process `job.rank` of the job while inside: in its process group, and printing and writing
    only on rank 0. An error leaving it says which process it came from, and one that every process
    shares (or an interrupt, which each gets) is marked `silent` on all but rank 0, to be printed once."""
    global _job
    previous, _job = _job, job
    try:
        with main_process.following(job.rank != 0), process_group(timeout):
            yield
    except BaseException as exc:
        if job.rank != 0:
            exc.where = f"process {job.rank}: "
            exc.silent = isinstance(exc, KeyboardInterrupt) or getattr(exc, "shared", False)
        raise
    finally:
        _job = previous


def rank() -> int:
    return _job.rank


def local_rank() -> int:
    return _job.local_rank


def world_size() -> int:
    return _job.world_size


def local_world_size() -> int:
    return _job.local_world_size


def restart_count() -> int:
    return _job.restart_count


def max_restarts() -> int:
    return _job.max_restarts


def is_main_process() -> bool:
    return _job.rank == 0


def is_distributed() -> bool:
    return _job.world_size > 1


def backend_of(device_type: str) -> str:
    """The collective backend that carries a device's tensors."""
    return "nccl" if device_type == "cuda" else "gloo"


@contextmanager
def process_group(timeout: float = DEFAULT_TIMEOUT):
    """Join the job's process group while inside; a no-op for one process or when already joined."""
    if not is_distributed():
        yield
        return
    import datetime

    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        yield
        return
    if "MASTER_ADDR" not in os.environ:
        raise UsageError(f"WORLD_SIZE is {world_size()} but MASTER_ADDR is not set: start several processes "
                         f"with torchrun or `ptflow train --nproc_per_node N`")
    # CPU tensors (control messages, CPU training) go through gloo, CUDA tensors through NCCL.
    backend = "gloo"
    if torch.cuda.is_available():
        backend = "cpu:gloo,cuda:nccl"
        torch.cuda.set_device(local_rank() % torch.cuda.device_count())
    try:
        dist.init_process_group(backend, rank=rank(), world_size=world_size(),
                                timeout=datetime.timedelta(seconds=timeout))
    except (RuntimeError, ValueError) as exc:
        hint = ""
        if restart_count() and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            hint = " (restarted by torchrun: set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 for it, pytorch/pytorch#135712)"
        raise PtflowError(f"could not join the other processes (rank {rank()} of {world_size()}): "
                          f"{first_line(exc)}{hint}") from None
    try:
        yield
    finally:
        dist.destroy_process_group()


# --- collectives -----------------------------------------------------------------------------------

def all_sum(tensor):
    """Sum a tensor over every process, in place (the same bits on every process)."""
    if is_distributed():
        import torch.distributed as dist

        dist.all_reduce(tensor)
    return tensor


def agree_max(value: int) -> int:
    """The largest of every process's value: how all processes agree on a flag."""
    if not is_distributed():
        return value
    import torch
    import torch.distributed as dist

    flag = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag)


def barrier() -> None:
    if is_distributed():
        import torch.distributed as dist

        dist.barrier()


def broadcast_buffers(module) -> None:
    """Give every process the main process's buffers (BatchNorm's running statistics), as DDP
    does before each training forward pass, so that all evaluate the model that is saved."""
    if is_distributed():
        import torch.distributed as dist

        for buffer in module.buffers():
            dist.broadcast(buffer, 0)


def gather_to_main(tensor) -> list | None:
    """Every process's copy of a CPU tensor of the same shape, in rank order, on the main
    process (None elsewhere)."""
    if not is_distributed():
        return [tensor]
    import torch
    import torch.distributed as dist

    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())  # gloo has no gather of CPU tensors to one rank
    return parts if is_main_process() else None


def check_same(what: str, text: str) -> None:
    """Refuse, on every process, when processes disagree on something (the data they read)."""
    import hashlib

    if not is_distributed():
        return
    import torch
    import torch.distributed as dist

    digest = torch.frombuffer(bytearray(hashlib.sha256(text.encode()).digest()), dtype=torch.uint8)
    parts = [torch.empty_like(digest) for _ in range(world_size())]
    dist.all_gather(parts, digest)
    differ = [r for r, part in enumerate(parts) if not torch.equal(part, parts[0])]
    if differ:
        raise shared(PtflowError(f"process(es) of rank {', '.join(map(str, differ))} read different {what} "
                                  f"than rank 0: every machine must see the same files"))


def share_from_main(compute: Callable[[], bytes]) -> bytes:
    """compute() on the main process; its bytes, or the PtflowError it raised, on every process."""
    import json

    if not is_distributed():
        return compute()
    if is_main_process():
        try:
            payload = b"\0" + compute()
        except PtflowError as exc:
            payload = b"\1" + json.dumps({"message": str(exc), "exit_code": exc.exit_code}).encode()
            _broadcast_bytes(payload)
            raise
        return _broadcast_bytes(payload)[1:]
    payload = _broadcast_bytes(None)
    if payload[:1] == b"\0":
        return payload[1:]
    error = json.loads(payload[1:])
    cls = UsageError if error["exit_code"] == UsageError.exit_code else PtflowError
    raise shared(cls(error["message"]))


def share_json_from_main(compute: Callable[[], object]):
    """share_from_main for a JSON-able value."""
    import json

    return json.loads(share_from_main(lambda: json.dumps(compute()).encode()))


def _broadcast_bytes(data: bytes | None) -> bytes:
    import torch
    import torch.distributed as dist

    size = torch.tensor([len(data) if data is not None else 0], dtype=torch.int64)
    dist.broadcast(size, 0)
    buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(int(size), dtype=torch.uint8)
    dist.broadcast(buffer, 0)
    return data if data is not None else buffer.numpy().tobytes()


def shared(exc: PtflowError) -> PtflowError:
    exc.shared = True  # the same error on every process: the CLI prints it once (rank 0's)
    return exc


def lost_peer(exc: BaseException) -> bool:
    """Whether an exception says that a collective failed: a process of the job died, hung past
    the timeout, or could not be reached."""
    if not is_distributed():
        return False
    import torch.distributed as dist

    if isinstance(exc, dist.DistError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        word in text for word in ("Gloo", "gloo", "NCCL", "Connection closed", "Connection reset", "timed out"))


class LostPeer(PtflowError):
    """A collective failed: the consequence of another process's failure, which torchrun reports."""


def lost_peer_error(exc: BaseException) -> LostPeer:
    return LostPeer(f"process {rank()} of {world_size()} lost the others of this job (one died, hung past "
                    f"--dist_timeout or cannot be reached): {first_line(exc)[:200]}")
