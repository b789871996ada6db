"""An epoch's order when a `shards:` dataset is trained by several processes: whole shards per process.

With one process the order is a plain seeded permutation, the same as the folder the shards were
packed from would get. With several, a permutation would have every process read from every
shard. Here the shards are put in a seeded order, their examples laid end to end (shuffled within
each shard), and that sequence is cut into one contiguous piece per process, as long as the
process's share of the epoch's batches: each process reads whole shards, and at most two shards
at the ends of its piece are shared with a neighbour. A piece is then shuffled and placed where
its process's slices of the global batches are (steps.shard), so the batches mix every shard the
process holds. Every example is trained once per epoch (bar the few of a last batch too small to
split, as in any order), the draws come from the run's generator (the same on every process, and
saved with a checkpoint like any order), and the order depends only on the data, seed and process
count: in memory and streamed, the same model.
"""

from __future__ import annotations

import torch


def order_by_shard(shards: torch.Tensor, spans: list[list[tuple[int, int]]],
                   generator: torch.Generator) -> torch.Tensor:
    """A permutation of range(len(shards)) whose positions in spans[r] (process r's [lo, hi) slices
    of the batches, in order) hold examples of the shards given to process r.

    shards: |shards| = (n,), each training example's shard number (0..S-1), on the CPU.
    """
    n = len(shards)
    shard_place = torch.randperm(int(shards.max()) + 1, generator=generator)  # the shards' order this epoch
    shuffled = torch.randperm(n, generator=generator)
    # stable: examples of one shard keep their shuffled order, so each shard's come out shuffled
    sequence = shuffled[torch.argsort(shard_place[shards[shuffled]], stable=True)]
    order = torch.empty(n, dtype=torch.long)
    taken = 0
    for rank_spans in spans:
        positions = torch.cat([torch.arange(lo, hi) for lo, hi in rank_spans])
        piece = sequence[taken:taken + len(positions)]
        order[positions] = piece[torch.randperm(len(piece), generator=generator)]
        taken += len(positions)
    end = max((hi for rank_spans in spans for _, hi in rank_spans), default=0)
    order[end:] = sequence[taken:]  # a last batch too small to split: this epoch trains none of them
    return order
