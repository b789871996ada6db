"""Where one epoch of the article's configuration goes, and the fastest it could possibly be here.

    python bench/epoch_budget.py                 # CPU, the article's MLP, batch 256, 48,000 examples
    python bench/epoch_budget.py --article 23385 # also: what share of "2x the article" is reachable

Times, on this machine, one ptflow training epoch plus its validation pass, then the parts no
trainer can avoid, each alone and warm:
- the epoch's matrix products: every GEMM of every forward and backward step, replayed on
  preallocated tensors (the article's MLP is ~70% GEMMs);
- the optimizer: Adam's update of every parameter, once per step (bound by memory bandwidth);
- the validation pass (one forward over the validation split; the article's loop has one too).
Their sum is a floor for the epoch: batch norm, activations, the loss, gathering batches and all
Python overhead are counted as free. 48,000 / floor is then the most training samples/s any
implementation of this configuration reaches here, in the same units as bench/train_bench.py.
Pixel values do not change the timing of dense kernels, so the data is random uint8.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from ptflow.models.mlp import MLP, get_hidden_sizes
from ptflow.models.networks import Preprocess
from ptflow.training.loop import LoopSettings, TrainState, evaluate, train_epoch
from ptflow.training.optimizers import EagerAdam
from ptflow.training.steps import eval_batch_size

N_TRAIN, N_VALID, INPUT, CLASSES = 48_000, 12_000, 784, 10


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up: first-touch allocations, oneDNN/MKL kernel selection
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def gemm_replay(sizes: list[int], batch: int, steps: int):
    """The GEMMs of `steps` training steps: forward addmm, and the backward products autograd
    runs (weight gradients for every layer, input gradients for all but the first)."""
    acts = [torch.randn(batch, n) for n in sizes]
    weights = [torch.randn(o, i) for i, o in zip(sizes, sizes[1:])]
    biases = [torch.randn(o) for o in sizes[1:]]
    outs = [torch.empty(batch, o) for o in sizes[1:]]
    wgrads = [torch.empty(o, i) for i, o in zip(sizes, sizes[1:])]
    igrads = [torch.empty(batch, i) for i in sizes[:-1]]

    def run():
        for _ in range(steps):
            for k, (w, b) in enumerate(zip(weights, biases)):
                torch.addmm(b, acts[k], w.t(), out=outs[k])
            for k in reversed(range(len(weights))):
                torch.mm(acts[k + 1].t(), acts[k], out=wgrads[k])
                if k:
                    torch.mm(acts[k + 1], weights[k], out=igrads[k])
    flop = 2 * batch * steps * sum(i * o for i, o in zip(sizes, sizes[1:])) * 3
    flop -= 2 * batch * steps * sizes[0] * sizes[1]  # no gradient for the input pixels
    return run, flop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n_layers", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--article", type=float, help="the article's training samples/s from train_bench.py")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON too")
    args = parser.parse_args()

    torch.manual_seed(0)
    hidden = get_hidden_sizes(INPUT, CLASSES, args.n_layers)
    model = MLP(INPUT, CLASSES, hidden)
    preprocess = Preprocess((1, 28, 28), 1 / 255)
    optimizer = EagerAdam(model.parameters(), lr=1e-3, fused=True)
    state = TrainState(model, optimizer, None, torch.Generator().manual_seed(0))
    x = torch.randint(0, 256, (N_TRAIN, 1, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, CLASSES, (N_TRAIN,))
    x_val, y_val = x[:N_VALID].clone(), y[:N_VALID].clone()
    settings = LoopSettings(n_epochs=1, batch_size=args.batch_size, precision="fp32", verbose=0)
    steps = -(-N_TRAIN // args.batch_size)

    def forward(batch):
        return model(preprocess(batch))

    def validation():
        evaluate(forward, model, x_val, y_val, batch_size=eval_batch_size(args.batch_size))

    def epoch():
        train_epoch(state, forward, x, y, settings)
        validation()

    def optimizer_steps():
        for _ in range(steps):
            optimizer.step()

    replay, flop = gemm_replay([INPUT, *hidden, CLASSES], args.batch_size, steps)
    parts = {"epoch (train + validation)": median_time(epoch, args.repeats)}
    # The epoch ends with the gradients freed: give the optimizer one batch's worth to apply.
    F.nll_loss(forward(x[:args.batch_size]), y[:args.batch_size]).backward()
    parts["optimizer alone"] = median_time(optimizer_steps, args.repeats)
    parts["GEMMs alone"] = median_time(replay, args.repeats)
    parts["validation alone"] = median_time(validation, args.repeats)
    floor = parts["GEMMs alone"] + parts["optimizer alone"] + parts["validation alone"]
    report(parts, floor, flop, args.article, args.batch_size)
    if args.json:
        print(json.dumps({"seconds": parts, "floor_seconds": floor, "gemm_gflops": flop / parts["GEMMs alone"] / 1e9,
                          "threads": torch.get_num_threads(), "torch": torch.__version__}))


def report(parts: dict, floor: float, flop: float, article: float | None, batch_size: int) -> None:
    print(f"the article's MLP, batch {batch_size}, {N_TRAIN:,} training + {N_VALID:,} validation examples, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("| part | seconds | training samples/s if it were all |")
    print("| --- | ---: | ---: |")
    for name, seconds in parts.items():
        print(f"| {name} | {seconds:.3f} | {N_TRAIN / seconds:,.0f} |")
    print(f"| floor: GEMMs + optimizer + validation | {floor:.3f} | {N_TRAIN / floor:,.0f} |")
    print(f"\nGEMMs alone run at {flop / parts['GEMMs alone'] / 1e9:.0f} GFLOP/s; ptflow's epoch is "
          f"{parts['epoch (train + validation)'] / floor:.2f}x the floor.")
    if article:
        print(f"2x the article's {article:,.0f} samples/s needs {2 * article:,.0f}; the floor allows "
              f"{N_TRAIN / floor:,.0f} ({N_TRAIN / floor / article:.2f}x the article).")


if __name__ == "__main__":
    main()
