"""Whether this process is the one that prints and writes files.

Every process is, except the processes of a distributed training job other than its rank 0:
training/distributed.py marks those while they are in their job, and nothing else does. Nothing
here reads the environment: a RANK or WORLD_SIZE left by a job scheduler means nothing to
`ptflow export` or `ptflow runs`, which always print and write.
"""

from __future__ import annotations

from contextlib import contextmanager

_follower = False  # True in the processes of a training job other than rank 0


def is_main() -> bool:
    return not _follower


@contextmanager
def following(follower: bool):
    """While inside, this process prints and writes only if it is not a follower."""
    global _follower
    previous, _follower = _follower, follower
    try:
        yield
    finally:
        _follower = previous
