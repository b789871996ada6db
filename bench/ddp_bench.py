"""Several processes on one machine: throughput and wall time, the cost of communication, and a
projection to more processes.

    python bench/ddp_bench.py                       # real MNIST from ../shared/data/mnist
    python bench/ddp_bench.py --epochs 2 --repeats 1 --nproc 2

Measured here:
1. `ptflow train` with the article's configuration (mlp, n_layers 5, global batch 256, Adam),
   as one process whose intra-op threads use every core, one process with one thread, and
   `--nproc_per_node N` (ptflow gives each process cores / N threads), in alternating order:
   wall time (process start to exit) and training samples/s (the training examples over the
   median epoch's seconds from metrics.jsonl, which include the validation pass);
2. between 2 processes (gloo, one thread each): the all-reduce of float32 tensors from 4 B to
   the size of the model's gradients (latency from the smallest, seconds per byte from the
   model's size), and one DDP
   step (forward, backward with the gradient all-reduce, fused Adam) against the same step
   without DDP, at 128 examples per process;
3. one training step of the MLP alone on one thread, at 256, 128, 32 and 4 examples.
Then it projects the samples/s of 1, 2, 8 and 64 processes at a global batch of 256: each
process computes 256/N examples, then a ring all-reduce sends 2(N-1) messages of S/N bytes
(latency and per-byte cost as fitted in 2). The two are added, not overlapped (DDP overlaps
them in part), and every process is assumed to have a core of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = (1, 1_000, 10_000, 100_000, 1_000_000)  # float32 elements per all-reduce, besides the model's
BATCHES = (256, 128, 32, 4)
GLOBAL_BATCH = 256


def train_run(args, name: str, threads: int | None, nproc: int | None, workdir: Path) -> dict:
    command = [sys.executable, "-m", "ptflow", "train", "--dataset", "mnist", "--data_dir", str(args.data_dir),
               "--n_epochs", str(args.epochs), "--batch_size", str(GLOBAL_BATCH), "--n_layers", "5", "--device",
               "cpu", "--runs_dir", str(workdir), "--run_name", name, "--verbose", "1"]
    if nproc:
        command += ["--nproc_per_node", str(nproc)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OMP_NUM_THREADS", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    run = workdir / name
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    record = json.loads((run / "run.json").read_text())
    n_train = 48_000  # MNIST's 60,000 training images, 80% of them train
    return {"wall": wall, "samples_per_s": n_train / statistics.median(e["seconds"] for e in epochs),
            "test_acc": record["test_acc"], "world_size": record.get("world_size", 1)}


def mlp():
    from ptflow.models import registry

    args = registry.constructor_args("mlp", (28, 28), 10, {}, n_layers=5, hidden_sizes=None, use_dropout=False,
                                     dropout_p=0.3, channels=[16])
    return registry.build("mlp", args, True, None)


def step_timer(model, batch: int, steps: int):
    """Seconds per training step (forward, backward, fused Adam) of `model` on random data."""
    import torch
    import torch.nn.functional as F

    from ptflow.training.steps import build_optimizer

    optimizer = build_optimizer(model, "adam", 1e-3, 0.0)
    x, y = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))

    def one_step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    for _ in range(5):
        one_step()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        one_step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def comm_worker(rank: int, world: int, port: int, iters: int, out: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    params = sum(p.numel() for p in mlp().parameters())
    results = {"params": params, "allreduce": {}}
    for n in (*SIZES, params):
        tensor = torch.ones(n)
        for _ in range(3):
            dist.all_reduce(tensor)
        times = []
        for _ in range(iters):
            dist.barrier()
            started = time.perf_counter()
            dist.all_reduce(tensor)
            times.append(time.perf_counter() - started)
        results["allreduce"][n] = statistics.median(times)
    torch.manual_seed(0)
    model = mlp()
    dist.barrier()
    results["local_step"] = step_timer(model, 128, iters)  # both processes busy, as under DDP
    dist.barrier()
    results["ddp_step"] = step_timer(DistributedDataParallel(model), 128, iters)
    if rank == 0:
        Path(out).write_text(json.dumps(results))
    dist.destroy_process_group()


def measure_comm(iters: int) -> dict:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    mp.spawn(comm_worker, args=(2, port, iters, out), nprocs=2)
    results = json.loads(Path(out).read_text())
    os.unlink(out)
    return results


def fit_line(points: dict, params: int) -> tuple[float, float]:
    """seconds = alpha + beta * bytes: alpha from the smallest all-reduce (4 bytes: all latency),
    beta from the model's own size, the one that matters."""
    alpha = points[str(min(map(int, points)))]  # keys are element counts, as JSON strings
    beta = (points[str(params)] - alpha) / (4 * params)
    return alpha, beta


def project(compute: dict, alpha: float, beta: float, size_bytes: int) -> list[dict]:
    """Samples/s at a global batch of 256 with N processes: compute of 256/N + a ring all-reduce.
    A 2-process all-reduce is 2 messages of S/2 bytes: alpha + beta*S, so one message costs alpha/2."""
    rows = []
    for n in (1, 2, 8, 64):
        comm = 0.0 if n == 1 else 2 * (n - 1) * (alpha / 2 + beta * size_bytes / n)
        step = compute[GLOBAL_BATCH // n] + comm
        rows.append({"processes": n, "per_process_batch": GLOBAL_BATCH // n,
                     "compute_ms": compute[GLOBAL_BATCH // n] * 1e3, "allreduce_ms": comm * 1e3,
                     "samples_per_s": GLOBAL_BATCH / step})
    for row in rows:
        row["speedup"] = row["samples_per_s"] / rows[0]["samples_per_s"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, default=REPO.parent / "shared" / "data" / "mnist")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--iters", type=int, default=50, help="timed repetitions of each all-reduce and step")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "ddp_bench.json")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    load_before = os.getloadavg()
    contenders = {f"1 process x {cores} threads": (None, None), "1 process x 1 thread": (1, None),
                  f"{args.nproc} processes (--nproc_per_node)": (None, args.nproc)}
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for i, (name, (threads, nproc)) in enumerate(contenders.items()):
                runs[name].append(train_run(args, f"r{repeat}-{i}", threads, nproc, Path(tmp)))
                print(f"{name}: {runs[name][-1]}", flush=True)
    comm = measure_comm(args.iters)
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    compute = {b: step_timer(mlp(), b, args.iters) for b in BATCHES}
    alpha, beta = fit_line(comm["allreduce"], comm["params"])
    size = 4 * comm["params"]
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_model(),
              "load_average_1min": [load_before[0], os.getloadavg()[0]], "cores": cores,
              "torch": torch.__version__, "command": " ".join(sys.argv), "runs": runs,
              "comm": comm, "fit": {"alpha_s": alpha, "beta_s_per_byte": beta}, "compute_step_s": compute,
              "projection": project(compute, alpha, beta, size)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    report(result)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def report(r: dict) -> None:
    before, after = r["load_average_1min"]
    print(f"\n{r['date']}, {r['cpu']}, {r['cores']} cores, torch {r['torch']}, load average {before:.1f} "
          f"at the start and {after:.1f} at the end\n")
    print("| contender | wall s (median) | training samples/s (median) | test acc |\n| --- | --- | --- | --- |")
    for name, runs in r["runs"].items():
        print(f"| {name} | {statistics.median(x['wall'] for x in runs):.1f} | "
              f"{statistics.median(x['samples_per_s'] for x in runs):,.0f} | {runs[-1]['test_acc']:.4f} |")
    comm = r["comm"]
    print(f"\nall-reduce between 2 processes (gloo, loopback), {comm['params']:,} float32 parameters:")
    for n, seconds in comm["allreduce"].items():
        print(f"  {4 * int(n):>10,} B: {seconds * 1e6:9.1f} us")
    print(f"  fit: {r['fit']['alpha_s'] * 1e6:.1f} us + {r['fit']['beta_s_per_byte'] * 1e9:.3f} ns/B")
    print(f"one step at 128 per process: {comm['local_step'] * 1e3:.2f} ms alone, {comm['ddp_step'] * 1e3:.2f} ms "
          f"with DDP (+{(comm['ddp_step'] - comm['local_step']) * 1e3:.2f} ms)")
    print("\n| processes | per-process batch | compute ms | all-reduce ms | samples/s | speed-up |\n"
          "| --- | --- | --- | --- | --- | --- |")
    for row in r["projection"]:
        print(f"| {row['processes']} | {row['per_process_batch']} | {row['compute_ms']:.2f} | "
              f"{row['allreduce_ms']:.2f} | {row['samples_per_s']:,.0f} | {row['speedup']:.2f}x |")


if __name__ == "__main__":
    main()
