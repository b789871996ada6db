"""Whether a dataset of image files is decoded into memory or streamed from disk: --data_in_memory.

In memory (the fast path): every image decoded once, the whole split held as uint8 and batches
gathered on the training device. Streamed: each example decoded when a batch needs it, in
DataLoader worker processes (streaming.py), so the training process's memory does not grow with
the dataset. `auto` keeps a dataset in memory when its decoded size is at most half the memory
this process may still use (the rest is for the model, its optimizer and the workers' buffers)
and streams it otherwise; `yes` refuses, before decoding anything, a dataset that cannot fit.

Memory this process may use is the least of: the machine's available memory (MemAvailable), the
room left under its cgroup's limit (containers), and the room left under its address-space and
data-segment limits (`prlimit`, `ulimit -v`). Pure standard library.
"""

from __future__ import annotations

import os
import resource

from ptflow.errors import UsageError
from ptflow.sizes import MAX_DATASET_BYTES

MODES = ("auto", "yes", "no")
SHARE = 0.5  # of the memory left that `auto` lets a decoded dataset take


def available_memory() -> int | None:
    """Bytes this process may still allocate, as far as the system says; None when it says nothing."""
    room = [_meminfo_available(), _cgroup_room(), *_rlimit_rooms()]
    room = [r for r in room if r is not None]
    return max(0, min(room)) if room else None


def in_memory(mode: str, decoded: int, what: str) -> tuple[bool, str]:
    """(keep the dataset in memory, why), for a dataset of `decoded` bytes once decoded."""
    room = available_memory()
    size = _gib(decoded)
    if mode == "no":
        return False, f"streamed from disk (--data_in_memory no; {size} decoded)"
    limit = MAX_DATASET_BYTES if room is None else min(MAX_DATASET_BYTES, room)
    if mode == "yes":
        if decoded > limit:
            left = "" if room is None else f", and {_gib(room)} of memory is left"
            raise UsageError(f"{what}: {size} decoded does not fit in memory (at most {_gib(MAX_DATASET_BYTES)} is "
                             f"decoded into memory{left}); use --data_in_memory auto or no to stream it from disk")
        return True, f"in memory (--data_in_memory yes; {size} decoded)"
    if decoded <= min(MAX_DATASET_BYTES, SHARE * room if room is not None else MAX_DATASET_BYTES):
        return True, f"in memory ({size} decoded; {_gib(room) if room is not None else 'unknown'} available)"
    return False, f"streamed from disk ({size} decoded is more than half of the {_gib(room)} available)"


def _gib(n: int | float) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 28 else f"{n / (1 << 20):.1f} MiB"


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """memory.max - memory.current of this process's cgroup (v2), where it has a limit."""
    try:
        with open("/proc/self/cgroup") as f:
            path = next((line.strip().split(":", 2)[2] for line in f if line.startswith("0::")), None)
        if path is None:
            return None
        folder = os.path.join("/sys/fs/cgroup", path.lstrip("/"))
        with open(os.path.join(folder, "memory.max")) as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open(os.path.join(folder, "memory.current")) as f:
            return int(limit) - int(f.read().strip())
    except (OSError, ValueError):
        return None


def _rlimit_rooms() -> list[int]:
    """Room under RLIMIT_AS (against the virtual size) and RLIMIT_DATA (against the data size)."""
    usage = _status_kib()
    rooms = []
    for limit, key in ((resource.RLIMIT_AS, "VmSize"), (resource.RLIMIT_DATA, "VmData")):
        soft, _ = resource.getrlimit(limit)
        if soft != resource.RLIM_INFINITY and key in usage:
            rooms.append(soft - usage[key] * 1024)
    return rooms


def _status_kib() -> dict[str, int]:
    try:
        with open("/proc/self/status") as f:
            return {k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in f)
                    if k in ("VmSize", "VmData") and v.split()}
    except (OSError, ValueError):
        return {}
