"""Which process is which, and what the processes of one training job share.

One process trains by default. Under torchrun (which `ptflow train --nproc_per_node N` calls for
the user) each process reads RANK, LOCAL_RANK and WORLD_SIZE from its environment and joins one
torch.distributed process group: gloo for CPU tensors, NCCL for CUDA tensors. Only the main
process (global rank 0) prints and writes files: every print and file write in ptflow goes
through `is_main_process()`.

Decisions that read files (which config, which run folder, the checkpoint's bytes) are made by
the main process alone and shared with `share_from_main`, so that a machine that sees other
files (or none) cannot make the processes disagree; an error there reaches every process as the
same error, and is printed once.

Every collective here is a no-op for a single process, and torch is imported inside the
functions: console.py and files.py import this module, and `ptflow --help` must not import torch.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable

from ptflow.config import DIST_TIMEOUT as DEFAULT_TIMEOUT
from ptflow.errors import PtflowError, UsageError, first_line


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_world_size() -> int:
    """Processes of this job on this machine."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size())))


def is_main_process() -> bool:
    return rank() == 0


def is_distributed() -> bool:
    return world_size() > 1


def launched() -> bool:
    """Whether this process was started by torchrun (a launcher must not start another)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "WORLD_SIZE" in os.environ


def restart_count() -> int:
    """How many times torchrun has restarted this job's workers (--max_restarts)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def max_restarts() -> int:
    return int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))


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
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
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
